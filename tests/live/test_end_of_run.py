"""When the publisher announces the end of the run, the live process finishes with the frames it has."""

from __future__ import annotations

import threading

import pytest

from tiltstream.live.run_state import VOLUMES_FILE
from tiltstream.recon.checkpoint import CHECKPOINT_FILE
from tiltstream.recon.trainer import Trainer
from tiltstream.simulator.replay_stream import replay_session
from tests.live.conftest import FRAMES


@pytest.mark.timeout(120)
def test_live_finishes_at_end_of_run(small_session, tmp_path, processes):
    """``--expected-frames 25`` but the replayed run ends after 10 frames: the end message makes the live
    process finish (final steps, volumes, exit 0) with exactly the 10 frames, instead of waiting forever."""
    endpoints = {}
    bound = threading.Event()
    thread = threading.Thread(target=replay_session, args=(small_session, "tcp://127.0.0.1:*"), kwargs=dict(
        resend="tcp://127.0.0.1:*", speed=40.0, wait=True, wait_timeout_s=90,
        on_start=lambda pub, resend: (endpoints.update(pub=pub, resend=resend), bound.set())))
    thread.start()
    run = tmp_path / "run"
    try:
        assert bound.wait(30)
        proc = processes.start("live", "--connect", endpoints["pub"], "--resend", endpoints["resend"],
                               "--expected-frames", "25", "--time-scale-s", "20", "--final-steps", "20",
                               "--out", str(run), "--status", "tcp://127.0.0.1:*", "--volume-endpoint",
                               "tcp://127.0.0.1:*", "--headless", "--device", "cpu", "--threads", "1",
                               log=tmp_path / "live.log")
        assert proc.wait(100) == 0, (tmp_path / "live.log").read_text()[-2000:]
    finally:
        thread.join(60)
    assert "the publisher ended the run after 10 frames" in (tmp_path / "live.log").read_text()
    assert Trainer.load(run / CHECKPOINT_FILE).indices == list(range(FRAMES))
    assert (run / VOLUMES_FILE).is_file()
