"""``tiltstream view --run RUN``: a finished run directory drawn offline, held-out curve and orthoslices included."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tiltstream.recon.run_dir import RunDir, open_reconstructor
from tests.live.conftest import live_args

ENV = dict(os.environ, QT_QPA_PLATFORM="offscreen")


@pytest.fixture(scope="module")
def heldout_run(small_session, tmp_path_factory):
    """A live SIRT run of the 10-frame session, 2 frames held out, one window per frame and a log row each."""
    run = tmp_path_factory.mktemp("view_run") / "run"
    live = subprocess.run([sys.executable, "-m", "tiltstream", *live_args(
        small_session, run, "tcp://127.0.0.1:1", "--method", "sirt", "--sirt-iterations", "5", "--holdout", "0.2",
        "--steps-per-frame", "1", "--log-interval-s", "0.01", "--threads", "1")], env=ENV, capture_output=True, text=True, timeout=120)
    assert live.returncode == 0, live.stderr[-2000:]
    return run


@pytest.mark.timeout(120)
def test_view_run_headless_draws_the_heldout_curve_and_orthoslices(heldout_run, tmp_path):
    """The command draws the loss panel with the held-out curve, the orthoslices and the frame curves into
    run.png and panels.json, and exits 0."""
    proc = subprocess.run([sys.executable, "-m", "tiltstream", "view", "--run", str(heldout_run), "--headless",
                           "--snapshots", str(tmp_path)], env=ENV, capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stderr[-2000:]
    drawn = set(json.loads((tmp_path / "panels.json").read_text()))
    assert {"loss", "heldout", "xy", "xz", "yz", "angle", "dose"} <= drawn
    assert (tmp_path / "run.png").stat().st_size > 10_000


@pytest.mark.timeout(120)
def test_view_run_curves_and_slices_are_the_run_numbers(heldout_run):
    """The held-out curve is train_log.csv's (step, heldout_rmse_percent) (one row per frame: 8+ points), the
    loss curve its (step, loss);
    the orthoslices at 10 s and, after the slider moves to the start, at the first frame's time (0 s) are
    the central xy slices of the saved reconstruction's volume at those times."""
    probe = subprocess.run([sys.executable, "-m", "tests.live.viewer_run_probe", str(heldout_run), "10.0"],
                           env=ENV, capture_output=True, text=True, timeout=100)
    assert probe.returncode == 0, probe.stderr[-2000:]
    shown = json.loads(probe.stdout.strip().splitlines()[-1])
    rows = RunDir(heldout_run).read_log()
    held = [(int(r["step"]), float(r["heldout_rmse_percent"])) for r in rows if r["heldout_rmse_percent"]]
    assert len(held) >= 2 and all(0 < error < 1000 for _, error in held)
    assert shown["heldout"] == [[float(s) for s, _ in held], pytest.approx([e for _, e in held])]
    losses = [(int(r["step"]), float(r["loss"])) for r in rows if r["loss"]]
    assert shown["loss"][0] == [float(s) for s, _ in losses]
    # the loss panel is logarithmic: pyqtgraph hands back log10 of the data
    assert 10 ** np.asarray(shown["loss"][1]) == pytest.approx([max(value, 1e-12) for _, value in losses])
    reconstructor = open_reconstructor(heldout_run, checkpoint="auto")  # what the viewer draws by default
    nz = reconstructor.volume(0.0).shape[0]
    assert shown["first"]["time_s"] == 10.0
    np.testing.assert_allclose(shown["first"]["xy"], reconstructor.volume(10.0)[nz // 2], rtol=1e-6, atol=1e-7)
    assert shown["slider"]["time_s"] == 0.0 == shown["slider"]["shown_s"]
    np.testing.assert_allclose(shown["slider"]["xy"], reconstructor.volume(0.0)[nz // 2], rtol=1e-6, atol=1e-7)
    assert {"loss", "heldout", "xy"} <= set(shown["drawn"])


@pytest.mark.timeout(180)
def test_view_run_draws_the_state_recon_volumes_reads(small_session, tmp_path):
    """By default the window draws the state ``recon volumes`` reads and volumes.tif holds (here the best
    of a live DIP-STER run: its last state trained 20 steps past it without an evaluation) and names it in
    its title and status line; ``--checkpoint last`` draws the last state; ``--checkpoint refit`` of a live run (which keeps
    none) is one line and exit 2."""
    run = tmp_path / "run"
    live = subprocess.run([sys.executable, "-m", "tiltstream", *live_args(
        small_session, run, "tcp://127.0.0.1:1", "--holdout", "0.2", "--steps-per-frame", "5", "--threads", "1",
        "--log-interval-s", "0.01")], env=ENV, capture_output=True, text=True, timeout=120)
    assert live.returncode == 0, live.stderr[-2000:]
    best = RunDir(run).best_record()
    last = open_reconstructor(run, checkpoint="last")
    last.train(steps=20)
    last.save(run)
    best_volume = open_reconstructor(run, checkpoint="best").volume(10.0)
    nz = best_volume.shape[0]
    assert np.abs(last.volume(10.0) - best_volume).max() > 1e-4  # the two states differ

    shown = {}
    for checkpoint in ("auto", "last"):
        probe = subprocess.run([sys.executable, "-m", "tests.live.viewer_run_probe", str(run), "10.0", checkpoint],
                               env=ENV, capture_output=True, text=True, timeout=100)
        assert probe.returncode == 0, probe.stderr[-2000:]
        shown[checkpoint] = json.loads(probe.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(shown["auto"]["first"]["xy"], best_volume[nz // 2], rtol=1e-6, atol=1e-7)
    assert shown["auto"]["step"] == best.step and f"best state (step {best.step}," in shown["auto"]["title"]
    assert f"; drawn: best state (step {best.step}," in shown["auto"]["status_line"]
    np.testing.assert_allclose(shown["last"]["first"]["xy"], last.volume(10.0)[nz // 2], rtol=1e-6, atol=1e-7)
    assert shown["last"]["step"] == last.steps_done > best.step and "last state" in shown["last"]["title"]
    assert shown["last"]["status_line"].endswith("; drawn: last state")

    proc = subprocess.run([sys.executable, "-m", "tiltstream", "view", "--run", str(run), "--checkpoint", "refit",
                           "--headless", "--snapshots", str(tmp_path / "snaps")], env=ENV, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "keeps no refit state" in proc.stderr


def test_view_run_of_a_folder_that_is_no_run_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tiltstream", "view", "--run", str(tmp_path), "--headless",
                           "--snapshots", str(tmp_path / "snaps")], env=ENV, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "is not a run directory" in proc.stderr


@pytest.mark.parametrize("option", [("--checkpoint", "best"), ("--time-s", "3")])
def test_view_run_options_without_run_are_one_line(option, tmp_path):
    """``--checkpoint`` and ``--time-s`` choose what a run directory shows; without ``--run`` they are one line
    and exit 2 (not silently ignored by the live viewer)."""
    proc = subprocess.run([sys.executable, "-m", "tiltstream", "view", *option, "--headless", "--snapshots",
                           str(tmp_path)], env=ENV, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and f"{option[0]} needs --run RUN_DIR" in proc.stderr

