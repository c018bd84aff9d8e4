"""``tiltstream live --holdout``: frames held out of training, their reprojection error logged and drawn."""

from __future__ import annotations

import json
import math

import pytest

from recon.run_dir import RunDir
from recon.trainer import Trainer
from tests.live.conftest import FRAMES, live_args


@pytest.mark.timeout(120)
def test_heldout_error_is_logged_and_drawn(small_session, tmp_path, processes):
    """Holdout 0.2 of 10 frames holds out positions 4 and 9 (recon.run_dir.heldout_positions, as offline);
    train_log.csv gets held-out reprojection errors (finite, percent), run.json lists the held-out frames,
    and the in-process snapshot of the viewer draws the held-out curve in the loss panel."""
    run, snapshots = tmp_path / "run", tmp_path / "snapshots"
    proc = processes.start(*live_args(small_session, run, "tcp://127.0.0.1:1", "--holdout", "0.2",
                                      "--steps-per-frame", "5", "--final-steps", "10", "--log-interval-s", "0.01",
                                      "--threads", "1", "--snapshots", str(snapshots)), log=tmp_path / "live.log")
    assert proc.wait(90) == 0, (tmp_path / "live.log").read_text()
    trainer = Trainer.load(run)
    assert [r["index"] for r in trainer.frame_records if r["held_out"]] == [4, 9]
    assert trainer.n_frames == FRAMES and trainer.n_train_frames == FRAMES - 2
    assert json.loads((run / "run.json").read_text())["heldout_indices"] == [4, 9]
    errors = [float(r["heldout_rmse_percent"]) for r in RunDir(run).read_log() if r["heldout_rmse_percent"]]
    assert len(errors) >= 2 and all(math.isfinite(e) and 0 < e < 1000 for e in errors)
    assert "heldout" in json.loads((snapshots / "panels.json").read_text())
