"""Tilt schemes: GRS equals the paper's Eq. 1 for any index, range and start; incremental and dose-symmetric grids."""

import itertools
import math

import mpmath
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiltstream.errors import UserError
from tiltstream.acquire.scheme import TiltScheme, grs_angle_deg, iter_targets, scheme_angle_deg

PHI = (1 + math.sqrt(5)) / 2


def eq1_naive(index, min_deg, max_deg):
    """The paper's Eq. 1 written literally in double precision (accurate for small indices)."""
    span = max_deg - min_deg
    return ((index * PHI * span) % span) + min_deg


def eq1_mpmath(index, min_deg, max_deg):
    """Eq. 1 at 50 significant digits (mpmath), an independent high-precision reference."""
    with mpmath.workdps(50):
        phi = (1 + mpmath.sqrt(5)) / 2
        lo, hi = mpmath.mpf(min_deg), mpmath.mpf(max_deg)
        span = hi - lo
        return float(mpmath.fmod(index * phi * span, span) + lo)


ranges = st.tuples(st.floats(-89, 89), st.floats(0.5, 178)).map(lambda t: (t[0], t[0] + t[1]))


def test_grs_reference_values():
    """Hand-computed with phi = 1.6180339887498948482...: theta_i = -70 + 140 * frac(i * phi).

    frac(1 phi) = 0.6180339887498948482 -> 16.524758424985278749
    frac(2 phi) = 0.2360679774997896964 -> -36.950483150029442503
    frac(3 phi) = 0.8541019662496845446 -> 49.574275274955836246
    frac(10 phi) = 0.1803398874989484821 -> -44.752415750147212514
    and for [-60, 60]: frac(1000 phi) = 0.0339887498948482046 -> -55.92135001261821545
    (digits cross-checked with mpmath at 50 digits).
    """
    assert grs_angle_deg(0, -70, 70) == -70.0
    assert grs_angle_deg(1, -70, 70) == pytest.approx(16.524758424985278749, abs=1e-12)
    assert grs_angle_deg(2, -70, 70) == pytest.approx(-36.950483150029442503, abs=1e-12)
    assert grs_angle_deg(3, -70, 70) == pytest.approx(49.574275274955836246, abs=1e-12)
    assert grs_angle_deg(10, -70, 70) == pytest.approx(-44.752415750147212514, abs=1e-12)
    assert grs_angle_deg(1000, -60, 60) == pytest.approx(-55.92135001261821545, abs=1e-12)


@settings(max_examples=300, deadline=None)
@given(index=st.integers(0, 10**12), rng=ranges)
def test_grs_equals_eq1_high_precision(index, rng):
    min_deg, max_deg = rng
    angle = grs_angle_deg(index, min_deg, max_deg)
    assert angle == pytest.approx(eq1_mpmath(index, min_deg, max_deg), abs=1e-9)
    assert min_deg <= angle < max_deg


@settings(max_examples=300, deadline=None)
@given(index=st.integers(0, 10**4), rng=ranges)
def test_grs_equals_eq1_as_written(index, rng):
    """Against the literal double-precision formula, where that formula itself is accurate (i <= 1e4)."""
    min_deg, max_deg = rng
    assert grs_angle_deg(index, min_deg, max_deg) == pytest.approx(eq1_naive(index, min_deg, max_deg), abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(rng=ranges, count=st.integers(1, 300), data=st.data())
def test_grs_targets_for_any_count_and_start_index(rng, count, data):
    start = data.draw(st.integers(0, count))
    scheme = TiltScheme(min_deg=rng[0], max_deg=rng[1], count=count, start_index=start)
    targets = list(iter_targets(scheme))
    assert [i for i, _ in targets] == list(range(start, count))
    for index, angle in targets:
        assert angle == pytest.approx(eq1_naive(index, *rng), abs=1e-9)
        assert angle == scheme_angle_deg(scheme, index)


def test_grs_without_count_is_endless():
    targets = list(itertools.islice(iter_targets(TiltScheme(start_index=5)), 1000))
    assert [i for i, _ in targets] == list(range(5, 1005))
    assert targets[-1][1] == grs_angle_deg(1004, -70, 70)


def test_incremental_with_count_spans_min_to_max_in_equal_steps():
    """count 8 over [-70, 70]: step 140 / 7 = 20 deg."""
    angles = [a for _, a in iter_targets(TiltScheme(kind="incremental", count=8))]
    assert angles[0] == -70.0 and angles[-1] == 70.0
    assert angles == pytest.approx([-70, -50, -30, -10, 10, 30, 50, 70], abs=1e-12)


def test_incremental_single_frame_is_at_min():
    assert list(iter_targets(TiltScheme(kind="incremental", count=1, min_deg=-20))) == [(0, -20.0)]


def test_incremental_without_count_repeats_with_step():
    """[-6, 7] at 3 deg: -6, -3, 0, 3, 6 (9 > 7), then again from -6."""
    scheme = TiltScheme(kind="incremental", min_deg=-6, max_deg=7, step_deg=3)
    angles = [a for _, a in itertools.islice(iter_targets(scheme), 12)]
    assert angles == pytest.approx([-6, -3, 0, 3, 6] * 2 + [-6, -3], abs=1e-12)


def test_dose_symmetric_hagen_order():
    """Hagen et al. 2017: 0, +s, -s, +2s, -2s, ...; [-9, 9] at 3 deg has 7 angles."""
    scheme = TiltScheme(kind="dose-symmetric", min_deg=-9, max_deg=9, step_deg=3)
    assert [a for _, a in iter_targets(scheme)] == pytest.approx([0, 3, -3, 6, -6, 9, -9], abs=1e-12)


def test_dose_symmetric_asymmetric_range_skips_outside_angles():
    scheme = TiltScheme(kind="dose-symmetric", min_deg=-4, max_deg=9.5, step_deg=3, start_index=2)
    assert list(iter_targets(scheme)) == [(2, -3.0), (3, 6.0), (4, 9.0)]


@pytest.mark.parametrize("kwargs, fragment", [
    ({"count": 0}, "greater than or equal to 1"),
    ({"min_deg": 10, "max_deg": 10}, "must be below"),
    ({"min_deg": 20, "max_deg": -20}, "must be below"),
    ({"start_index": -1}, "greater than or equal to 0"),
    ({"count": 5, "start_index": 6}, "start_index 6"),
    ({"kind": "incremental", "step_deg": 0}, "greater than 0"),
    ({"kind": "dose-symmetric", "min_deg": 5, "max_deg": 60}, "outside"),
    ({"kind": "dose-symmetric", "min_deg": -9, "max_deg": 9, "count": 8}, "exceeds the 7"),
    ({"kind": "spiral"}, "grs"),
])
def test_invalid_schemes_are_refused(kwargs, fragment):
    with pytest.raises(pydantic.ValidationError, match=fragment):
        TiltScheme(**kwargs)


def test_index_outside_scheme_is_refused():
    with pytest.raises(UserError, match="outside"):
        scheme_angle_deg(TiltScheme(count=3), 3)
    with pytest.raises(UserError, match="negative"):
        grs_angle_deg(-1, -70, 70)
