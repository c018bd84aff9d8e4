"""``tiltstream acquire --track model`` against a live DIP-STER process: the model engages once it is good enough.

``tiltstream sim serve`` (realistic stage moves, so the live process trains between frames as at the
microscope), ``tiltstream live`` with its default DIP-STER settings and ``tiltstream acquire --track model``
run as real processes on loopback. The live process answers every request at once from the weights of
its last training chunk; acquire measures against the reprojection only once the model's reported
prediction error is below the threshold and its correlation peak holds up against the previous frame's.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tiltstream.acquire.session import read_session
from tiltstream.live.run_state import ENDPOINTS_FILE
from tests.acquire.conftest import _stop, free_port, start_centred_sim
from tests.live.conftest import wait_for

Z_NM, PIXEL_NM, FRAMES = 8.0, 1.0, 24
FALLBACK_NOTE = "is measured against the previous frames, not the model"


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_track_model_engages_once_the_live_model_is_good(tmp_path: Path, processes) -> None:
    """The first frames fall back to ``previous`` (the model is not ready, then not good enough), said once;
    from the first frame measured against the model on, at least 80 % of the frames are (tracking mode
    "model"), the model engages by frame 16 of 24, no frame is lost, and the summary line counts both."""
    session, run = tmp_path / "session", tmp_path / "run"
    publish, request = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    sim, bridge_port = start_centred_sim(tmp_path / "sim.log", Z_NM, PIXEL_NM, "--steps", str(FRAMES), "--mode", "realistic", "--tilt-speed", "40")
    try:
        live = processes.start("live", "--connect", publish, "--session", str(session), "--out", str(run),
                               "--status", "tcp://127.0.0.1:*", "--volume-endpoint", request, "--headless",
                               "--device", "cpu", "--threads", "1", log=tmp_path / "live.log")
        wait_for(lambda: (run / ENDPOINTS_FILE).is_file(), 60, "the live process's endpoints", live)
        acquire = subprocess.run(
            [sys.executable, "-m", "tiltstream", "acquire", "--bridge", f"http://127.0.0.1:{bridge_port}",
             "--session", str(session), "--count", str(FRAMES), "--dwell-time-s", "1e-6", "--pixel-size-nm",
             str(PIXEL_NM), "--track", "model", "--model-endpoint", request, "--publish", publish],
            capture_output=True, text=True, timeout=360)
        assert acquire.returncode == 0, acquire.stderr[-2000:]
        assert live.wait(120) == 0, (tmp_path / "live.log").read_text()[-2000:]
    finally:
        _stop(sim)

    modes = [r.tracking.mode for r in read_session(session).records]
    assert "model" in modes, (modes, acquire.stderr[-2000:])
    first = modes.index("model")
    assert first <= 16, modes
    assert modes[first:].count("model") >= 0.8 * (FRAMES - first), modes
    assert not any(r.tracking.lost for r in read_session(session).records)
    assert acquire.stderr.count(FALLBACK_NOTE) == 1, acquire.stderr[-2000:]
    fell = FRAMES - modes.count("model")
    assert f"tracking against the model on {modes.count('model')} of {FRAMES} frames; previous on {fell} (" \
        in acquire.stderr, acquire.stderr[-2000:]
