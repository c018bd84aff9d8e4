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


def test_kplanes_without_holdout_is_warned_about(caplog, tmp_path):
    """The K-planes field can overfit a small low-dose session (docs/benchmarks/kplanes.md): a live
    run of it with nothing held out gets one warning naming --holdout; with held-out frames, or with the
    fast preset, none."""
    from live.run_state import new_reconstructor
    from live.settings import LiveSettings

    def warnings_for(**fields) -> list[str]:
        caplog.clear()
        with caplog.at_level("WARNING", logger="live.run_state"):
            trainer = new_reconstructor(LiveSettings(out=tmp_path / "run", **fields), (8, 8), 10.0, "cpu")
        assert isinstance(trainer, Trainer)
        return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]

    (message,) = warnings_for(preset="kplanes", holdout=0.0)
    assert "--holdout 0" in message and str(tmp_path / "run" / "best") in message
    assert warnings_for(preset="kplanes", holdout=0.1) == []
    assert warnings_for(preset="fast", holdout=0.0) == []
