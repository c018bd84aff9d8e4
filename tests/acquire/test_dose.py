"""Dose formulas against the paper's Methods (60 pA screen current, 1.6 us dwell, 1024^2 frames)."""

from __future__ import annotations

import pytest

from tiltstream.acquire.dose import camera_dose_e_per_A2, cumulative_dose_e_per_A2, stem_dose_e_per_A2
from tiltstream.errors import UserError


def test_paper_nanostar_and_nanocube_doses() -> None:
    """Paper Methods: 0.44 nm -> "30 e/A^2/frame", 0.31 nm -> "62 e/A^2/frame".

    Reference by hand: 60e-12 A * 1.6e-6 s / 1.602176634e-19 C = 599.18 e per pixel;
    / 19.36 A^2 = 30.949; / 9.61 A^2 = 62.350.
    """
    assert stem_dose_e_per_A2(60.0, 1.6e-6, 0.44) == pytest.approx(30.949, abs=1e-3)
    assert stem_dose_e_per_A2(60.0, 1.6e-6, 0.31) == pytest.approx(62.350, abs=1e-3)


def test_camera_dose_spreads_current_over_field() -> None:
    """1 nA for 1 s over 100 x 100 pixels of 1 nm: 6.2415e9 e / 1e6 A^2 = 6241.5 e/A^2."""
    assert camera_dose_e_per_A2(1000.0, 1.0, 1.0, (100, 100)) == pytest.approx(6241.509, abs=1e-3)


def test_cumulative() -> None:
    assert cumulative_dose_e_per_A2([1.5, 2.25, 0.25]) == 4.0


def test_bad_values() -> None:
    with pytest.raises(UserError, match="pixel size"):
        stem_dose_e_per_A2(60.0, 1e-6, 0.0)
    with pytest.raises(UserError, match="beam current"):
        stem_dose_e_per_A2(-1.0, 1e-6, 0.4)
