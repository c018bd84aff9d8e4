"""The refit state: the best state by held-out error with its held-out frames folded in and trained on
(``recon train --refit``), kept as ``refit/``, read by ``recon volumes`` by default, dropped when the
run trains on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tiltstream.recon.run_dir import BEST_DIR, REFIT_DIR, RUN_FILE, RunDir, open_reconstructor
from tiltstream.recon.trainer import Trainer
from tiltstream.recon.volume_io import read_volumes
from tests.recon.test_train_cli import _cli, _one_line_error, _session
from tests.recon.test_trainer import SMALL


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One torch thread, as the CLI runs are given, so the by-hand refit reduces floats in their order."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_folding_in_makes_every_held_out_frame_a_training_frame(tmp_path: Path) -> None:
    """Two of eight frames held out: folded in, none is held out, there is no held-out error any more,
    and the next steps draw both (the sampler takes new frames first, as for a frame added live)."""
    from tests.recon.test_best_checkpoint import _trainer_on

    trainer = _trainer_on(_session(tmp_path / "s", count=8), holdout=0.25)
    held = [slot for slot, h in enumerate(trainer.held_out) if h]
    assert len(held) == 2 and trainer.n_train_frames == 6
    trainer.train(steps=3)
    assert trainer.fold_in_held_out() == 2
    assert not any(trainer.held_out) and trainer.n_train_frames == 8
    assert trainer.heldout_metrics() is None
    drawn = set()
    for _ in range(trainer.sampler.wait_bound_steps()):
        slots, _rows = trainer.sampler.draw(SMALL.batch_frames, SMALL.rows_per_frame, 16)
        drawn |= {int(s) for s in slots}
    assert set(held) <= drawn
    assert trainer.fold_in_held_out() == 0


@pytest.mark.timeout(300)
def test_recon_train_keeps_the_refit_state_and_recon_volumes_reads_it(tmp_path: Path) -> None:
    """``--holdout 0.2 --refit 0.5``: refit/ holds the best state trained on for half its steps with every
    frame (equal, to 1e-5, to doing that by hand from best/); run.json records it; ``recon volumes``
    writes its volumes by default and says so, ``--checkpoint best`` the best's. Trained on, the run
    drops refit/ and makes it anew from the new best; with ``--refit 0`` it keeps none."""
    session = _session(tmp_path / "s", count=10)
    run = tmp_path / "run"
    result = _cli("recon", "train", "--session", str(session), "--out", str(run), "--steps", "60",
                  "--eval-every", "10", "--holdout", "0.2", "--patience", "0", "--refit", "0.5",
                  "--device", "cpu", "--threads", "1")
    assert result.returncode == 0, result.stderr
    description = json.loads((run / RUN_FILE).read_text())
    best, refit = description["best"], description["refit"]
    assert refit["from_step"] == best["step"] and refit["steps"] == round(0.5 * best["step"]) > 0
    assert refit["n_frames"] == best["n_frames"] == 10
    assert f"refit state (best step {best['step']} + {refit['steps']} steps on every frame)" in result.stderr

    kept = Trainer.load(run / REFIT_DIR)
    assert kept.steps_done == best["step"] + refit["steps"] and not any(kept.held_out)
    by_hand = Trainer.load(run / BEST_DIR)
    by_hand.fold_in_held_out()
    by_hand.train(steps=refit["steps"])
    t_s = kept.times_s[-1]
    np.testing.assert_allclose(kept.volume(t_s), by_hand.volume(t_s), atol=1e-5)

    out = tmp_path / "v.tif"
    result = _cli("recon", "volumes", "--run", str(run), "--out", str(out), "--device", "cpu")
    assert result.returncode == 0 and "refit state" in result.stderr, result.stderr
    volumes, times_s = read_volumes(out)
    np.testing.assert_allclose(volumes[-1], kept.volume(times_s[-1]), atol=1e-5)
    result = _cli("recon", "volumes", "--run", str(run), "--out", str(tmp_path / "b.tif"), "--device", "cpu",
                  "--checkpoint", "best")
    assert result.returncode == 0 and "best state" in result.stderr, result.stderr
    best_volumes, _ = read_volumes(tmp_path / "b.tif")
    np.testing.assert_allclose(best_volumes[-1], Trainer.load(run / BEST_DIR).volume(times_s[-1]), atol=1e-5)
    assert np.abs(best_volumes[-1] - volumes[-1]).max() > 1e-4  # the refit trained on

    result = _cli("recon", "train", "--session", str(session), "--out", str(run), "--steps", "20",
                  "--eval-every", "10", "--refit", "0.5", "--device", "cpu", "--threads", "1")
    assert result.returncode == 0, result.stderr
    description = json.loads((run / RUN_FILE).read_text())
    assert description["refit"]["from_step"] == description["best"]["step"]
    assert Trainer.load(run / REFIT_DIR).steps_done == description["best"]["step"] + description["refit"]["steps"]

    result = _cli("recon", "train", "--session", str(session), "--out", str(run), "--steps", "10",
                  "--eval-every", "10", "--refit", "0", "--device", "cpu", "--threads", "1")
    assert result.returncode == 0, result.stderr
    assert "refit" not in json.loads((run / RUN_FILE).read_text()) and not (run / REFIT_DIR).exists()
    assert RunDir(run).refit_record() is None
    assert open_reconstructor(run, checkpoint="auto").steps_done == RunDir(run).best_record().step


@pytest.mark.timeout(120)
def test_refit_without_held_out_frames_and_refit_of_a_run_without_one_get_one_line(tmp_path: Path) -> None:
    session = _session(tmp_path / "s", count=10)
    _one_line_error(_cli("recon", "train", "--session", str(session), "--out", str(tmp_path / "r"), "--holdout",
                         "0", "--refit", "0.2"), "--refit needs held-out frames")
    _one_line_error(_cli("recon", "train", "--session", str(session), "--out", str(tmp_path / "r"), "--refit",
                         "1.5"), "refit")
    run = tmp_path / "plain"
    assert _cli("recon", "train", "--session", str(session), "--out", str(run), "--steps", "5", "--holdout", "0",
                "--device", "cpu").returncode == 0
    _one_line_error(_cli("recon", "volumes", "--run", str(run), "--out", str(tmp_path / "v.tif"), "--checkpoint",
                         "refit"), "keeps no refit state")
