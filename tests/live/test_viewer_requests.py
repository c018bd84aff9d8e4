"""The viewer's time slider asks a real live process for the volume at that time (DEALER -> ROUTER)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.live.conftest import live_args, wait_for
from tiltstream.live.run_state import ENDPOINTS_FILE


@pytest.mark.timeout(120)
def test_slider_requests_volume_from_live_process(small_session, tmp_path, processes):
    """A live process trains on the recorded session (catch-up, long final phase); an offscreen viewer in
    a subprocess turns "follow latest" off and moves the slider to the start: the orthoslices that come
    back answer its newest request (the second: unticking asks for the latest time first) at the slider's time, and the xy/xz/yz panels are drawn."""
    run = tmp_path / "run"
    live = processes.start(*live_args(small_session, run, "tcp://127.0.0.1:1", "--final-steps", "100000",
                                      "--threads", "1"), log=tmp_path / "live.log")
    wait_for(lambda: (run / ENDPOINTS_FILE).is_file(), 60, "endpoints.json", live)
    status = json.loads((run / ENDPOINTS_FILE).read_text())["status"]
    probe = subprocess.run([sys.executable, "-m", "tests.live.viewer_request_probe", status],
                           env=dict(os.environ, QT_QPA_PLATFORM="offscreen"), capture_output=True, text=True,
                           timeout=90)
    assert probe.returncode == 0, probe.stderr[-2000:]
    answer = json.loads(probe.stdout.strip().splitlines()[-1])
    assert answer["request_id"] == 2
    assert answer["answered_s"] == pytest.approx(answer["asked_s"], abs=1e-9)
    assert answer["answered_s"] == pytest.approx(0.0, abs=1e-9)  # the first frame's time
    assert answer["xy_shape"] == [16, 16]
    assert {"xy", "xz", "yz"} <= set(answer["drawn"])
