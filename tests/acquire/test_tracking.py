"""Tracking math: cosine stretch, eucentric fit and the tracker's corrections."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from tiltstream.acquire.tracking import (Tracker, cosine_stretch, fit_eucentric, solve_positions,
                                         specimen_centre_x_px)


def _blobs(shape: tuple[int, int] = (64, 64), centre_xy: tuple[float, float] = (0.0, 0.0),
           x_scale: float = 1.0) -> np.ndarray:
    """Three Gaussian blobs of different sizes around the frame centre shifted by ``centre_xy`` px; a flat
    specimen seen at tilt alpha has its x extent scaled by ``x_scale`` = cos(alpha)."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    cy, cx = (shape[0] - 1) / 2 + centre_xy[1], (shape[1] - 1) / 2 + centre_xy[0]
    image = np.zeros(shape)
    for dx, dy, sigma, height in ((0, 0, 4.0, 1.0), (9, -6, 2.5, 0.7), (-7, 8, 3.0, 0.5)):
        image += height * np.exp(-((xx - cx - x_scale * dx) ** 2 / (x_scale * sigma) ** 2
                                   + (yy - cy - dy) ** 2 / sigma ** 2) / 2)
    return image


def test_cosine_stretch_scales_x_about_the_centre() -> None:
    reference = _blobs(centre_xy=(10.0, 4.0))
    stretched = cosine_stretch(reference, 0.0, 60.0)  # cos 60 / cos 0 = 0.5
    _, cx = ndimage.center_of_mass(np.clip(stretched - np.median(reference), 0, None))
    _, cx0 = ndimage.center_of_mass(reference)
    centre = (64 - 1) / 2
    assert cx - centre == pytest.approx(0.5 * (cx0 - centre), abs=0.05)
    np.testing.assert_allclose(cosine_stretch(reference, 30.0, 30.0), reference, atol=1e-12)
    pivot = specimen_centre_x_px(reference)
    about_specimen = cosine_stretch(reference, 0.0, 60.0, pivot_x_px=pivot)
    assert specimen_centre_x_px(about_specimen) == pytest.approx(pivot, abs=0.05)


def test_fit_recovers_offset_and_height_exactly_and_degrades_gracefully() -> None:
    alpha = np.array([-70.0, 16.5, -33.6, 49.2, -8.7])
    x = 3.0 + 200.0 * np.sin(np.radians(alpha))
    fit = fit_eucentric(alpha, x, np.full(5, -1.5))
    assert (fit.x0_nm, fit.z_nm, fit.y0_nm) == pytest.approx((3.0, 200.0, -1.5), abs=1e-9)
    single = fit_eucentric(np.array([10.0]), np.array([4.0]), np.array([2.0]))
    assert (single.x0_nm, single.z_nm) == (4.0, 0.0)


def test_solve_positions_weighs_edges_and_anchors() -> None:
    # node 1 = node 0 + (2, 0) measured twice with weights 1 and 3 as 2 and 6: weighted mean 5; node 2 absolute
    positions = solve_positions(3, [(1, 0, 2.0, 0.0, 1.0), (1, 0, 6.0, 0.0, 3.0), (2, -1, -1.0, 4.0, 1.0)])
    np.testing.assert_allclose(positions, [[0, 0], [5.0, 0.0], [-1.0, 4.0]], atol=1e-9)


def test_tracker_predicts_corrections_that_keep_the_specimen_put() -> None:
    """Synthetic frames: the specimen appears at (x0 + z sin a + correction) px; after 4 frames the
    X"""
    pixel_nm, z_nm, x0_nm, y0_nm = 2.0, 40.0, 6.0, -4.0
    tracker = Tracker(pixel_size_nm=pixel_nm)
    angles = [-70.0 + 140.0 * ((i * (1 + 5 ** 0.5) / 2) % 1.0) for i in range(12)]
    first = None
    errors = []
    for index, alpha in enumerate(angles):
        correction = tracker.correction_for(alpha) or (0.0, 0.0)
        true_nm = (x0_nm + z_nm * math.sin(math.radians(alpha)) + correction[0], y0_nm + correction[1])
        frame = _blobs(centre_xy=(true_nm[0] / pixel_nm, true_nm[1] / pixel_nm),
                       x_scale=math.cos(math.radians(alpha)))
        measured = tracker.measure(index, alpha, frame, correction)
        first = first or true_nm
        expected_px = ((true_nm[0] - first[0]) / pixel_nm, (true_nm[1] - first[1]) / pixel_nm)
        assert measured.position_px == pytest.approx(expected_px, abs=0.35)
        assert not measured.lost
        errors.append(math.hypot(*expected_px))
    assert max(errors[4:]) < 0.3
    assert tracker.fit().z_nm == pytest.approx(z_nm, abs=2.0)


def test_a_frame_with_the_specimen_near_the_edge_is_recorded_but_not_used() -> None:
    tracker = Tracker(pixel_size_nm=1.0)
    tracker.measure(0, 0.0, _blobs(), (0.0, 0.0))
    far = tracker.measure(1, 0.5, _blobs(centre_xy=(18.0, 0.0)), (0.0, 0.0))  # beyond 64 / 4 = 16 px
    assert far.position_px == pytest.approx((18.0, 0.0), abs=0.5) and not far.lost
    assert not tracker.observations[1].trusted and tracker.correction_for(0.0) == pytest.approx((0.0, 0.0))
    lost = tracker.measure(2, 1.0, np.random.default_rng(0).normal(size=(64, 64)), (0.0, 0.0))
    assert lost.lost and math.isnan(lost.position_px[0])
