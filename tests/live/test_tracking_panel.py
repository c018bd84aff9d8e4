"""Tracking in the live process and the viewer: a tracked session's shifts and defocus reach the history
message and the viewer's tracking panel, and the status says when tracking lost the specimen."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tiltstream.acquire.session import RECORDS_FILE, read_session
from tiltstream.cli import main
from tiltstream.live.run_state import ENDPOINTS_FILE
from tiltstream.simulator.bridge_server import running_server
from tiltstream.simulator.clock import ManualClock
from tiltstream.simulator.microscope import SimulatedMicroscope
from tiltstream.simulator.settings import SimSettings
from tests.live.conftest import live_args, wait_for

FRAMES = 10
Z_NM = 8.0  # eucentric offset: 7.5 px lateral at 70 deg (pixel 1 nm)


def _record_tracked_session(path: Path) -> None:
    """Acquire FRAMES frames of a 32^3 nanorod with ``--track previous --focus tilt-model`` through the real
    bridge client and simulator server, then mark the last frame as the tracker records a lost specimen
    (no shift, peak below the threshold; tests/acquire/test_tracking_sim.py shows the tracker writing it)."""
    sim = SimulatedMicroscope(SimSettings(size=32, steps=4, mode="instant", noise="none", device="cpu",
                                          pixel_size_nm=1.0, eucentric_offset_nm=Z_NM), clock=ManualClock())
    sim.set_image_shift([Z_NM * 1e-9 * math.sin(math.radians(70.0)), 0.0])
    with running_server(sim) as url:
        assert main(["acquire", "--bridge", url, "--session", str(path), "--dwell-time-s", "1e-6",
                     "--pixel-size-nm", "1.0", "--count", str(FRAMES), "--track", "previous",
                     "--focus", "tilt-model", "--no-centre"]) == 0
    lines = (path / RECORDS_FILE).read_text().splitlines()
    last = json.loads(lines[-1])
    last["tracking"].update(shift_px=None, shift_nm=None, peak_quality=0.12, lost=True)
    lines[-1] = json.dumps(last)
    (path / RECORDS_FILE).write_text("\n".join(lines) + "\n")


@pytest.mark.timeout(180)
def test_tracking_reaches_history_status_and_viewer_panel(tmp_path, processes):
    """A live SIRT process waits for its session; an offscreen viewer subscribes; the tracked session then
    appears. The history message carries each frame's measured shift (x, y px), applied defocus (m) and
    lost flag equal to frames.jsonl; the status says tracking lost the specimen at frame 9; the viewer's
    shift curves hold the same numbers against the frame times, the lost frame is marked, the defocus
    curve is in nm, and its status line says the specimen was lost."""
    recorded, session, run = tmp_path / "recorded", tmp_path / "session", tmp_path / "run"
    _record_tracked_session(recorded)
    live = processes.start(*live_args(session, run, "tcp://127.0.0.1:1", "--method", "sirt", "--sirt-iterations",
                                      "5", "--threads", "1"), log=tmp_path / "live.log")
    wait_for(lambda: (run / ENDPOINTS_FILE).is_file(), 60, "endpoints.json", live)
    status_endpoint = json.loads((run / ENDPOINTS_FILE).read_text())["status"]
    probe = subprocess.Popen([sys.executable, "-m", "tests.live.viewer_tracking_probe", status_endpoint, str(FRAMES)],
                             env=dict(os.environ, QT_QPA_PLATFORM="offscreen"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    processes.procs.append(probe)
    assert probe.stdout.readline().strip() == "ready", probe.stderr.read()[-2000:]
    recorded.rename(session)  # the session appears whole
    out, err = probe.communicate(timeout=120)
    assert probe.returncode == 0, err[-2000:]
    assert live.wait(60) == 0, (tmp_path / "live.log").read_text()[-2000:]
    report = json.loads(out.strip().splitlines()[-1])

    records = sorted(read_session(session).records, key=lambda r: r.index)
    tracks = [r.tracking for r in records]
    history = report["history"]
    assert history["frame_index"] == list(range(FRAMES))
    assert history["tracking_lost"] == [False] * (FRAMES - 1) + [True]
    assert history["shift_x_px"][-1] is None and history["shift_y_px"][-1] is None
    assert history["shift_x_px"][:-1] == pytest.approx([t.shift_px[0] for t in tracks[:-1]], abs=1e-9)
    assert history["shift_y_px"][:-1] == pytest.approx([t.shift_px[1] for t in tracks[:-1]], abs=1e-9)
    assert history["defocus_m"] == pytest.approx([t.defocus_m for t in tracks], abs=1e-15)
    assert max(abs(x) for x in history["shift_x_px"][:-1]) > 0.1  # real, non-trivial shifts were measured
    assert report["status"]["tracking_lost"] is True
    assert "lost the specimen at frame 9" in report["status"]["tracking"]
    assert "lost the specimen at frame 9" in report["status_line"]

    times = [r.time_s for r in records]
    curves = report["curves"]
    assert curves["shift_x"][0] == pytest.approx(times)
    assert curves["shift_x"][1] == history["shift_x_px"] and curves["shift_y"][1] == history["shift_y_px"]
    assert curves["lost"] == [[pytest.approx(times[-1])], [0.0]]
    assert curves["defocus"][1] == pytest.approx([t.defocus_m * 1e9 for t in tracks], abs=1e-6)
    assert {"shift", "defocus"} <= set(report["drawn"])
