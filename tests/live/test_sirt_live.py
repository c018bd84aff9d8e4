"""``tiltstream live --method sirt``: started before its session exists, it waits quietly, then reconstructs
the session with moving-window SIRT and answers the tracker's reprojection requests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import numpy as np
import pytest

from tiltstream.acquire.model_link import ModelLink
from tiltstream.acquire.session import read_session
from tiltstream.live.run_state import ENDPOINTS_FILE, VOLUMES_FILE
from tiltstream.recon.projector import ParallelProjector
from tiltstream.recon.run_dir import RUN_FILE
from tiltstream.recon.sirt import moving_window_sirt
from tiltstream.recon.sirt_reconstructor import SirtReconstructor
from tiltstream.recon.volume_io import read_volumes
from tests.live.conftest import FRAMES, SIZE, live_args, wait_for

SIRT_ARGS = ("--method", "sirt", "--sirt-window", "4", "--sirt-iterations", "10", "--threads", "1")


def _offline(session_dir) -> tuple[np.ndarray, np.ndarray]:
    session = read_session(session_dir)
    volumes = moving_window_sirt(session.load_frames(), session.angles_deg, (SIZE, SIZE, SIZE), window=4,
                                 iterations=10, nonnegative=True)
    return volumes, session.times_s


@pytest.mark.timeout(120)
def test_sirt_live_waits_for_its_session_then_equals_offline(small_session, tmp_path, processes):
    """The session directory appears 2 s after the process is up (renamed into place): it warns once that
    it waits (not on every catch-up pass), then finishes with volumes equal to moving_window_sirt
    (window 4, 10 iterations, non-negative) at every frame time (1e-5), in a run directory that says
    method sirt and keeps each frame's dose."""
    session = tmp_path / "session"
    run = tmp_path / "run"
    proc = processes.start(*live_args(session, run, "tcp://127.0.0.1:1", *SIRT_ARGS), log=tmp_path / "live.log")
    wait_for(lambda: (run / ENDPOINTS_FILE).is_file(), 60, "endpoints.json", proc)
    time.sleep(2.0)
    shutil.copytree(small_session, tmp_path / "staging")
    os.rename(tmp_path / "staging", session)
    assert proc.wait(90) == 0, (tmp_path / "live.log").read_text()
    log = (tmp_path / "live.log").read_text()
    assert log.count("does not exist yet") == 1, log
    assert "catch-up from" not in log
    assert f"finished: sirt, {FRAMES} frames, {FRAMES} steps" in log  # one window per frame
    expected, times_s = _offline(small_session)
    volumes, written_times = read_volumes(run / VOLUMES_FILE)
    np.testing.assert_allclose(written_times, times_s)
    np.testing.assert_allclose(volumes, expected, rtol=1e-5, atol=1e-5)
    assert json.loads((run / RUN_FILE).read_text())["method"] == "sirt"
    state = SirtReconstructor.load(run)
    assert [r["index"] for r in state.frame_records] == list(range(FRAMES))
    assert state.frame_records[0]["dose_e_per_A2"] == read_session(small_session).records[0].dose_e_per_A2
    assert not (run / "live_state.json").exists()


@pytest.mark.timeout(120)
def test_reprojection_request_is_answered_from_the_model(small_session, tmp_path, processes):
    """With more frames expected than the session has, the SIRT process keeps running; once every window
    is computed, a ``reproject?`` request at 33 deg (no time: the latest) is answered with the projection
    of the last frame's window volume (1e-4 relative); a request at another time picks that frame's window."""
    run = tmp_path / "run"
    proc = processes.start(*live_args(small_session, run, "tcp://127.0.0.1:1", *SIRT_ARGS, "--expected-frames",
                                      "25"), log=tmp_path / "live.log")
    wait_for(lambda: (run / ENDPOINTS_FILE).is_file(), 60, "endpoints.json", proc)
    link = ModelLink(json.loads((run / ENDPOINTS_FILE).read_text())["volume"], timeout_s=2.0)
    expected, times_s = _offline(small_session)
    project = ParallelProjector([33.0], (SIZE, SIZE, SIZE))
    try:
        def answered_with_all_frames() -> bool:
            image = link.reprojection(33.0)
            return image is not None and np.allclose(image, project(expected[-1])[0], rtol=1e-4, atol=1e-4)

        wait_for(answered_with_all_frames, 60, "a reprojection of the last window", proc)
        image = link.reprojection(-20.0, time_s=float(times_s[3]) + 0.4)
        np.testing.assert_allclose(image, ParallelProjector([-20.0], (SIZE, SIZE, SIZE))(expected[3])[0],
                                   rtol=1e-4, atol=1e-4)
    finally:
        link.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert "stopped" in (tmp_path / "live.log").read_text()


@pytest.mark.timeout(60)
def test_resuming_with_another_method_is_one_line(tmp_path, processes):
    """A run directory holding a SIRT reconstruction refuses --method dipster with one line naming both."""
    run = tmp_path / "run"
    rec = SirtReconstructor((SIZE, SIZE))
    rec.add_frame(0, np.ones((SIZE, SIZE), np.float32), 0.0, 0.0)
    rec.save(run)
    proc = processes.start(*live_args(tmp_path / "session", run, "tcp://127.0.0.1:1", "--method", "dipster"))
    assert proc.wait(60) != 0
    err = proc.stderr.read()
    assert "holds a sirt reconstruction; give --method sirt" in err and "Traceback" not in err
