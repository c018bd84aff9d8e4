"""Held-out scoring (:mod:`tiltstream.recon.heldout_scoring`) and a small version of ``bench/real_data.py`` on
the real etspy HAADF-STEM needle (64^2, one thread): SIRT and the neighbour floor scored on frames left out
of training (DIP-STER is compared in the bench: docs/benchmarks/real_data.md).

The real-data test skips, with the fixture's reason, when etspy's test data cannot be fetched.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.real_data import prepare, static_sirt, window_sirt
from tiltstream.cli import main
from tiltstream.errors import UserError
from tiltstream.recon.heldout_scoring import fit_gain, heldout_nrmse, neighbour_floor, split_positions

from tests.recon.test_import_real import etspy_data  # noqa: F401  (the fixture)


def test_split_holds_out_every_8th_frame_and_trains_on_the_rest_or_every_4th():
    train, heldout = split_positions(77)
    assert heldout.tolist() == [3, 11, 19, 27, 35, 43, 51, 59, 67, 75]
    assert len(train) == 67 and not set(train) & set(heldout)
    sparse, same = split_positions(77, train_every=4)
    assert same.tolist() == heldout.tolist() and sparse.tolist() == list(range(0, 77, 4))
    with pytest.raises(UserError, match="heldout_every"):
        split_positions(77, heldout_every=1)


def test_gain_is_fitted_on_training_frames_only():
    rng = np.random.default_rng(0)
    truth = rng.random((6, 4, 5))
    measured = 2.0 * truth + 0.5
    assert fit_gain(truth, measured) == pytest.approx((2.0, 0.5))
    # a held-out frame with another gain is not fitted away
    assert heldout_nrmse(truth[:4], measured[:4], truth[4:], measured[4:]) == pytest.approx(0.0, abs=1e-12)
    off = heldout_nrmse(truth[:4], measured[:4], truth[4:], 1.1 * measured[4:])
    assert off == pytest.approx(np.sqrt(np.mean((0.1 * measured[4:]) ** 2) / np.mean((1.1 * measured[4:]) ** 2)))


def test_neighbour_floor_means_or_interpolates_the_training_frames_around_a_held_out_angle():
    frames = np.arange(5, dtype=np.float64)[:, None, None] * np.ones((5, 2, 2))
    angles = np.array([-4.0, -2.0, 0.0, 2.0, 6.0])
    training = np.array([0, 1, 3, 4])
    np.testing.assert_allclose(neighbour_floor(frames, angles, training, np.array([2])), 2.0)
    np.testing.assert_allclose(neighbour_floor(frames, angles, np.array([0, 1, 4]), np.array([3]), linear=True),
                               1 + 3 * 4 / 8)
    with pytest.raises(UserError, match="no training frame on one side"):
        neighbour_floor(frames, angles, training[1:], np.array([0]))


def test_real_needle_every_method_scored_on_held_out_frames(etspy_data, tmp_path):  # noqa: F811
    assert main(["recon", "import", str(etspy_data / "HAADF.mrc"), "--out", str(tmp_path / "s")]) == 0
    frames, angles, times, prepared = prepare(tmp_path / "s", bin_factor=4)
    assert frames.shape == (77, 64, 64)
    # the tilt axis runs along the raw frames' x: the needle does not foreshorten (cos 76 deg = 0.24)
    assert all(0.9 < v < 1.1 for v in prepared["axis"]["x_profile_length_vs_0deg"].values())
    assert 2.5 < prepared["axis"]["in_plane_angle_deg"] < 3.8  # the bench: 3.18; etspy's aligned copy: 2.79
    train, heldout = split_positions(len(frames), train_every=4)  # sparse: 20 frames 8 deg apart

    def error(reprojections: np.ndarray) -> float:
        return heldout_nrmse(reprojections[train], frames[train], reprojections[heldout], frames[heldout])

    floor = np.zeros(frames.shape)
    floor[heldout] = neighbour_floor(frames, angles, train, heldout)
    floor[train] = frames[train]
    sirt = {count: error(out[0]) for count, out in static_sirt(frames, angles, train, [30, 300]).items()}
    window = error(window_sirt(frames, angles, train, heldout)[0])
    # measured (bench, sparse, 64^2): floor 0.0775, SIRT 30 it. 0.115, 300 it. 0.0811, recon sirt default 0.118
    assert error(floor) < 0.085 and sirt[300] < 0.09
    assert sirt[300] < sirt[30] - 0.02 and sirt[300] < window - 0.02 and error(floor) < window - 0.02
    # DIP-STER is not asserted here: on this sparse split it does not beat SIRT-300 or the floor, at 150
    # steps nor in the bench at 1500-3000 (docs/benchmarks/real_data.md); a test would have to skip its
    # assertion, which proves nothing. The bench compares it.
