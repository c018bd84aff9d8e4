"""The quality bench's per-evaluation property (``bench/recon_quality.py``): the cheap rows it reads at every
evaluation give the same headline error as the full metrics table, and the late median reads only the
last quarter of a run."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from bench.recon_quality import late_median, property_rows, property_summary
from tiltstream.recon import metrics
from tiltstream.simulator.phantoms import make_phantom


@pytest.mark.parametrize("phantom", ["nanorod", "nanocube", "nanoshell", "nanostar"])
def test_the_cheap_property_rows_give_the_metrics_tables_headline(phantom: str) -> None:
    truth = make_phantom(phantom, 24, 8, seed=0)
    rng = np.random.default_rng(0)
    blurred = np.stack([ndimage.gaussian_filter(v, 0.7) for v in truth])
    volumes = (blurred + rng.normal(0.0, 0.02, truth.shape)).astype(np.float32)
    full = property_summary(phantom, metrics.metrics_table(volumes, truth))
    cheap = property_summary(phantom, property_rows(phantom, volumes, truth))
    assert cheap == full
    assert np.isfinite(full[1]) and abs(full[1]) > 0.1  # a blurred, noisy series has a property error


def test_the_late_median_reads_the_last_quarter_of_the_training_time() -> None:
    curve = [{"train_s": t, "property": e} for t, e in [(100, 50.0), (300, 40.0), (500, 9.0), (700, 3.0),
                                                        (760, 12.0), (800, 6.0)]]
    assert late_median(curve) == (6.0, 3)  # 600 s and later: 3.0, 12.0, 6.0
    assert late_median([{"train_s": 10.0}]) is None  # evaluations without the property (--eval-times)


def test_the_alloying_summary_gives_the_error_both_ways() -> None:
    """The headline measures each step against the truth's first spread; the old reading (the
    reconstruction's own first volume as sigma_0) is the same degrees shifted by their first value."""
    rows = [{"alloying_degree": a, "alloying_degree_ref": b}
            for a, b in [(0.30, 0.0), (0.32, 0.05), (0.35, 0.10), (0.40, 0.20), (0.50, 0.40), (0.60, 0.55)]]
    words, headline = property_summary("nanorod", rows)
    assert headline == pytest.approx(100.0 * (0.10 + 0.05) / 2)  # steps 4, 5: |0.50 - 0.40|, |0.60 - 0.55|
    own_start = 100.0 * (abs(0.20 - 0.40) + abs(0.30 - 0.55)) / 2  # 22.5 points
    assert words.endswith(f"against its own first volume {own_start:.1f}")


@pytest.mark.slow
def test_the_held_out_rows_keep_recon_trains_best_states(tmp_path) -> None:
    """With held-out frames the bench holds out recon train's frames and, per patience, keeps the checked
    state of least held-out error until PlateauStopper stops on the same errors, in a real checkpoint
    (reloaded, it gives that error again); patience 0 keeps the least error of the whole run."""
    from tiltstream.acquire.session import read_ground_truth, read_session
    from bench.recon_quality import HeldOutStopping, run_dipster
    from tiltstream.recon.presets import preset
    from tiltstream.recon.run_dir import PlateauStopper, heldout_positions, session_time_scale_s
    from tiltstream.recon.trainer import Trainer
    from tiltstream.simulator.tiltseries import write_synthetic_session

    path = write_synthetic_session(tmp_path / "s", "nanocube", 16, 20, seed=0)
    session = read_session(path)
    truth, _ = read_ground_truth(path)
    stopping = HeldOutStopping([1, 2, 0], every=10, directory=tmp_path)
    speed = {"device": "cpu", "precision": "fp32", "compile_model": False}
    _, curve, steps = run_dipster("fast", session.load_frames(), session, truth, minutes=0.25, eval_every=40,
                                  seed=0, speed=speed, config=preset("fast"), holdout=0.1, stopping=stopping)
    checks = stopping.checks
    assert len(checks) >= 3 and checks[-1]["steps"] == steps
    assert all(c["steps"] % 10 == 0 for c in checks[:-1])
    errors = [c["heldout_rmse_percent"] for c in checks]
    assert stopping.kept[0]["heldout_rmse_percent"] == min(errors) and 0 not in stopping.stop
    for patience in (1, 2):
        stopper = PlateauStopper(patience)
        stop = next((i for i, e in enumerate(errors) if stopper.update(e)), len(errors) - 1)
        assert stopping.stop.get(patience, {}).get("steps") == (checks[stop]["steps"] if stopper.since_best
                                                                 >= patience else None)
        assert stopping.kept[patience]["heldout_rmse_percent"] == min(errors[:stop + 1])
    assert {p.name for p in tmp_path.glob("kept_step*.pt")} == {k["path"].name for k in stopping.kept.values()}
    for record in stopping.kept.values():
        best = Trainer.load(record["path"])
        assert best.steps_done == record["steps"]
        assert best.heldout_metrics()["heldout_rmse_percent"] == pytest.approx(record["heldout_rmse_percent"],
                                                                               rel=1e-6)
    order = np.argsort([r.time_s for r in session.records], kind="stable")
    held = [position for position, i in enumerate(order) if best.held_out[i]]
    assert held == heldout_positions(20, 0.1) == [9, 19]
    times_s = sorted(r.time_s for r in session.records)  # recon train's time scale: 20 x the first interval
    assert best.time_scale_s == pytest.approx(session_time_scale_s(session.settings.scheme, times_s), rel=1e-12)
    assert best.time_scale_s == pytest.approx(20 * (times_s[1] - times_s[0]), rel=1e-12)
