"""``tiltstream live --holdout``: frames held out of training, their reprojection error logged and drawn."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tiltstream.live.run_state import VOLUMES_FILE, RunState
from tiltstream.live.settings import LiveSettings
from tiltstream.recon.run_dir import BEST_DIR, REFIT_DIR, RUN_FILE, RunDir, open_reconstructor
from tiltstream.recon.trainer import Trainer
from tiltstream.recon.volume_io import read_volumes
from tests.live.conftest import FRAMES, live_args


@pytest.mark.timeout(120)
def test_heldout_error_is_logged_and_drawn(small_session, tmp_path, processes):
    """Holdout 0.2 of 10 frames holds out positions 4 and 9 (tiltstream.recon.run_dir.heldout_positions, as offline);
    train_log.csv gets held-out reprojection errors (finite, percent), run.json lists the held-out frames,
    the in-process snapshot of the viewer draws the held-out curve in the loss panel, and the state of
    least held-out error with all frames in is kept in best/ and written to RUN/volumes.tif (logged as such)."""
    run, snapshots = tmp_path / "run", tmp_path / "snapshots"
    proc = processes.start(*live_args(small_session, run, "tcp://127.0.0.1:1", "--holdout", "0.2",
                                      "--steps-per-frame", "5", "--final-steps", "10", "--log-interval-s", "0.01",
                                      "--threads", "1", "--snapshots", str(snapshots)), log=tmp_path / "live.log")
    assert proc.wait(90) == 0, (tmp_path / "live.log").read_text()
    trainer = Trainer.load(run)
    assert [r["index"] for r in trainer.frame_records if r["held_out"]] == [4, 9]
    assert trainer.n_frames == FRAMES and trainer.n_train_frames == FRAMES - 2
    assert json.loads((run / RUN_FILE).read_text())["heldout_indices"] == [4, 9]
    errors = [float(r["heldout_rmse_percent"]) for r in RunDir(run).read_log() if r["heldout_rmse_percent"]]
    assert len(errors) >= 2 and all(math.isfinite(e) and 0 < e < 1000 for e in errors)
    assert "heldout" in json.loads((snapshots / "panels.json").read_text())
    best = RunDir(run).best_record()  # least error since the last frame arrived: least from its step on
    after = [float(r["heldout_rmse_percent"]) for r in RunDir(run).read_log()
             if r["heldout_rmse_percent"] and int(r["step"]) >= best.step]
    assert best.n_frames == FRAMES and best.heldout_rmse_percent == after[0] == min(after)
    assert f"(best state (step {best.step}, held-out error" in (tmp_path / "live.log").read_text()
    _assert_volumes_of(run, open_reconstructor(run, checkpoint="best"))


def _assert_volumes_of(run, reconstructor) -> None:
    """RUN/volumes.tif holds ``reconstructor``'s volumes at the frame times, to 1e-6."""
    volumes, times = read_volumes(run / VOLUMES_FILE)
    assert sorted(r["time_s"] for r in reconstructor.frame_records) == pytest.approx(times, abs=1e-9)
    expected = np.stack([reconstructor.volume(float(t)) for t in times])
    np.testing.assert_allclose(volumes, expected, atol=1e-6)


@pytest.mark.timeout(120)
def test_the_final_volumes_are_the_state_recon_volumes_reads(small_session, tmp_path, processes):
    """With held-out frames, RUN/volumes.tif is written from the state of least held-out error (best/, as
    ``recon volumes`` reads by default), not from the last one: here the last state trained 20 steps past
    the best, and the volumes are the best's, not the last's. Without held-out frames, from the last state."""
    run = tmp_path / "run"
    proc = processes.start(*live_args(small_session, run, "tcp://127.0.0.1:1", "--holdout", "0.2",
                                      "--steps-per-frame", "5", "--threads", "1", "--log-interval-s", "0.01"),
                           log=tmp_path / "live.log")
    assert proc.wait(90) == 0, (tmp_path / "live.log").read_text()
    settings = LiveSettings(session=small_session, out=run, holdout=0.2, device="cpu")
    state = RunState(settings, "cpu")
    last = state.resume()
    best_step = RunDir(run).best_record().step
    last.train(steps=20)  # past the best, without an evaluation: best/ stays
    state.checkpoint(last)
    path, described = state.write_volumes(last, 0)
    assert path == run / VOLUMES_FILE and described.startswith(f"best state (step {best_step},")
    _assert_volumes_of(run, open_reconstructor(run, checkpoint="best"))
    volumes, times = read_volumes(path)
    assert np.abs(volumes[-1] - last.volume(float(times[-1]))).max() > 1e-4  # the last state differs

    plain = RunState(LiveSettings(session=small_session, out=tmp_path / "plain", device="cpu"), "cpu")
    plain.start(last, "session", last.time_scale_s)
    plain.checkpoint(last)
    path, described = plain.write_volumes(last, 3)
    assert described == "last state" and read_volumes(path)[0].shape[0] == 3


def test_kplanes_without_holdout_is_warned_about(caplog, tmp_path):
    """The K-planes field can overfit a small low-dose session (docs/benchmarks/kplanes.md): a live
    run of it with nothing held out gets one warning naming --holdout; with held-out frames, or with the
    fast preset, none."""
    from tiltstream.live.run_state import new_reconstructor
    from tiltstream.live.settings import LiveSettings

    def warnings_for(**fields) -> list[str]:
        caplog.clear()
        with caplog.at_level("WARNING", logger="tiltstream.live.run_state"):
            trainer = new_reconstructor(LiveSettings(out=tmp_path / "run", **fields), (8, 8), 10.0, "cpu")
        assert isinstance(trainer, Trainer)
        return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]

    (message,) = warnings_for(preset="kplanes", holdout=0.0)
    assert "--holdout 0" in message and str(tmp_path / "run" / BEST_DIR) in message
    assert warnings_for(preset="kplanes", holdout=0.1) == []
    assert warnings_for(preset="fast", holdout=0.0) == []


@pytest.mark.timeout(180)
def test_a_live_process_resuming_a_refit_run_drops_its_refit(small_session, tmp_path, processes):
    """``recon train --refit`` leaves refit/ (what ``recon volumes`` reads by default); a live process
    that resumes the run directory trains on, so it drops refit/ and its run.json record, and the run's
    default state is again its best or last, not a refit of an older best."""
    import subprocess
    import sys

    run = tmp_path / "run"
    trained = subprocess.run([sys.executable, "-m", "tiltstream", "recon", "train", "--session", str(small_session),
                              "--out", str(run), "--steps", "30", "--eval-every", "10", "--holdout", "0.2",
                              "--refit", "0.5", "--device", "cpu", "--threads", "1"],
                             capture_output=True, text=True, timeout=120)
    assert trained.returncode == 0, trained.stderr
    assert RunDir(run).refit_record() is not None and (run / REFIT_DIR).is_dir()
    proc = processes.start(*live_args(small_session, run, "tcp://127.0.0.1:1", "--holdout", "0.2",
                                      "--final-steps", "5", "--threads", "1"), log=tmp_path / "live.log")
    assert proc.wait(90) == 0, (tmp_path / "live.log").read_text()
    assert RunDir(run).refit_record() is None and not (run / REFIT_DIR).exists()
    assert "refit" not in json.loads((run / RUN_FILE).read_text())
    assert Trainer.load(run).steps_done > 30
