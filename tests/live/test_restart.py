"""Kill -9 the live process mid-session and restart it: every frame once, the loss continues."""

from __future__ import annotations

import shutil
import signal

import numpy as np
import pytest
import torch

from tiltstream.recon.checkpoint import CHECKPOINT_FILE
from tiltstream.recon.trainer import Trainer
from tests.live.conftest import FRAMES, live_args, wait_for


def _checkpoint_frames(run) -> int:
    """Frames in the run directory's checkpoint (0 while there is none; it is replaced atomically)."""
    try:
        return len(torch.load(run / CHECKPOINT_FILE, map_location="cpu", weights_only=True)["indices"])
    except FileNotFoundError:
        return 0


@pytest.mark.timeout(220)
def test_kill_9_and_resume(small_session, tmp_path, processes):
    """The session is recorded; nothing publishes, so frames come from the session directory (catch-up).
    A first live process (deterministic schedule, checkpoint every 0.2 s) is SIGKILLed once its
    checkpoint holds >= 3 frames; a second resumes from that checkpoint. Afterwards: frame indices are
    0..9 once each, the loss history extends the killed run's checkpoint unchanged, and the result equals
    an uninterrupted live run of the same schedule on the same session (assert_allclose), so nothing was
    lost or doubled."""
    run = tmp_path / "run"
    args = live_args(small_session, run, "tcp://127.0.0.1:1", "--steps-per-frame", "6", "--final-steps", "4",
                     "--chunk-steps", "2", "--checkpoint-interval-s", "0.2", "--threads", "1")
    first = processes.start(*args, log=tmp_path / "first.log")
    wait_for(lambda: _checkpoint_frames(run) >= 3, 90, "a checkpoint with 3 frames", first)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    shutil.copy(run / CHECKPOINT_FILE, tmp_path / "killed.pt")
    killed = Trainer.load(tmp_path / "killed.pt")
    assert 3 <= killed.n_frames < FRAMES
    second = processes.start(*args, log=tmp_path / "second.log")
    assert second.wait(100) == 0, (tmp_path / "second.log").read_text()
    assert "resumed from" in (tmp_path / "second.log").read_text()
    final = Trainer.load(run / CHECKPOINT_FILE)
    assert final.indices == list(range(FRAMES))
    assert final.steps_done == FRAMES * 6 + 4 == len(final.loss_history)
    assert final.loss_history[:killed.steps_done] == killed.loss_history
    whole = tmp_path / "uninterrupted"
    third = processes.start(*live_args(small_session, whole, "tcp://127.0.0.1:1", "--steps-per-frame", "6",
                                       "--final-steps", "4", "--chunk-steps", "2", "--threads", "1"),
                            log=tmp_path / "uninterrupted.log")
    assert third.wait(100) == 0, (tmp_path / "uninterrupted.log").read_text()
    offline = Trainer.load(whole / CHECKPOINT_FILE)
    np.testing.assert_allclose(final.volume(9.0), offline.volume(9.0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(final.loss_history, offline.loss_history, rtol=1e-6)
