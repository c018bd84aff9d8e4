"""Image registration: sub-pixel shifts in (y, x) order, peak quality, the search radius."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tiltstream.registration import register
from tests.acquire.test_tracking import _blobs


@pytest.mark.parametrize("shift_xy", [(3.3, -2.7), (-10.6, 0.4), (0.4, 0.0), (0.0, 0.0)])
def test_register_finds_subpixel_shifts_in_numpy_order(shift_xy: tuple[float, float]) -> None:
    found = register(_blobs(), _blobs(centre_xy=shift_xy))
    assert found.shift_px == pytest.approx(shift_xy[::-1], abs=0.02)
    assert found.peak_quality > 0.9


def test_peak_quality_is_low_for_unrelated_images_and_max_shift_limits_the_search() -> None:
    rng = np.random.default_rng(0)
    assert register(_blobs(), rng.normal(size=(64, 64))).peak_quality < 0.3
    found = register(_blobs(), _blobs(centre_xy=(12.0, 0.0)), max_shift_px=5.0)
    assert math.hypot(*found.shift_px) <= 5.0 + math.sqrt(2)


def test_a_non_square_image_keeps_its_axes() -> None:
    """On a (48, 80) frame a shift along x is reported second, along y first."""
    found = register(_blobs((48, 80)), _blobs((48, 80), centre_xy=(6.2, -1.5)))
    assert found.shift_px == pytest.approx((-1.5, 6.2), abs=0.05)
