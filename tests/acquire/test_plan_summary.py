"""Plan summary: coverage gaps, stage travel, time and dose, against hand computations and the paper."""

import numpy as np
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiltstream.acquire.backlash import Move, plan_moves
from tiltstream.acquire.plan_summary import AcquisitionEstimate, coverage_gaps_deg, summarize_plan
from tiltstream.acquire.scheme import TiltScheme, iter_targets


def brute_force_gap(angles, min_deg, max_deg):
    points = np.sort(np.clip(np.concatenate([[min_deg, max_deg], angles]), min_deg, max_deg))
    return float(np.diff(points).max())


def test_coverage_hand_example():
    """[-20, 20]: after 0 the gaps are 20/20; after 10: 20 (-20..0); after -10: 10; after 10 again: 10."""
    assert coverage_gaps_deg([0, 10, -10, 10], -20, 20) == [20, 20, 10, 10]


def test_coverage_counts_prior_frames_and_clips_to_the_range():
    assert coverage_gaps_deg([10], -20, 20, prior_angles_deg=[0, -10]) == [10]
    assert coverage_gaps_deg([-30, 30], -20, 20) == [40, 40]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-80, 80), min_size=1, max_size=60))
def test_coverage_equals_brute_force(angles):
    gaps = coverage_gaps_deg(angles, -70, 70)
    assert gaps == pytest.approx([brute_force_gap(angles[:k + 1], -70, 70) for k in range(len(angles))], abs=1e-9)


def test_grs_coverage_shrinks():
    """GRS fills the range: the largest gap never grows and after 100 frames is below 3 deg (140 / 100 * 2)."""
    angles = [a for _, a in iter_targets(TiltScheme(count=100))]
    gaps = coverage_gaps_deg(angles, -70, 70)
    assert all(b <= a for a, b in zip(gaps, gaps[1:]))
    assert gaps[-1] < 2.8


def test_travel_time_and_dose_hand_example():
    """From 0 deg at 10 deg/s, settle 1 s, tracking 5 s, exposure 2 s, dose 30 + 20 e/A^2.

    frame 0: 0 -> -72 (7.2 s + 1) -> -70 (0.2 s + 1) -> tracking 5 -> mid-exposure at 15.4 s, ends 16.4 s
    frame 1: -70 -> 10 (8 s + 1) -> tracking 5 -> mid-exposure at 31.4 s, ends 32.4 s
    travel 72 + 2 + 80 = 154 deg; dose 50 per frame, 100 in total.
    """
    moves = [Move(0, "backlash", -72.0), Move(0, "target", -70.0), Move(1, "target", 10.0)]
    estimate = AcquisitionEstimate(tilt_speed_deg_per_s=10, settle_s=1, tracking_s=5, exposure_s=2,
                                   frame_dose_e_per_A2=30, tracking_dose_e_per_A2=20)
    summary = summarize_plan(moves, 0.0, -70, 70, estimate)
    assert summary.total_travel_deg == pytest.approx(154)
    assert summary.total_time_s == pytest.approx(32.4)
    assert summary.total_dose_e_per_A2 == pytest.approx(100)
    assert summary.n_moves == 3
    first, second = summary.frames
    assert (first.index, first.target_deg, first.travel_deg, first.time_s) == (0, -70.0, pytest.approx(74),
                                                                                pytest.approx(15.4))
    assert (second.travel_deg, second.time_s, second.cumulative_dose_e_per_A2) == (
        pytest.approx(154), pytest.approx(31.4), pytest.approx(100))
    assert first.dose_e_per_A2 == second.dose_e_per_A2 == 50
    assert [f.coverage_gap_deg for f in summary.frames] == pytest.approx([140, 80])
    assert summary.to_dict()["frames"][1]["coverage_gap_deg"] == pytest.approx(80)


def test_paper_nanostar_dose():
    """Paper Methods: 30 e/A^2 per frame + ~20 of tracking; ~35 min at ~2 frames/min -> ~70 frames = 3.5e3 e/A^2."""
    moves = list(plan_moves(iter_targets(TiltScheme(count=70)), 0.0))
    estimate = AcquisitionEstimate(frame_dose_e_per_A2=30, tracking_dose_e_per_A2=20)
    summary = summarize_plan(moves, 0.0, -70, 70, estimate)
    assert summary.total_dose_e_per_A2 == pytest.approx(3.5e3)
    assert [f.cumulative_dose_e_per_A2 for f in summary.frames] == pytest.approx(50 * np.arange(1, 71))


@pytest.mark.parametrize("field, value", [("tilt_speed_deg_per_s", 0), ("settle_s", -1), ("exposure_s", float("nan")),
                                          ("frame_dose_e_per_A2", -5)])
def test_estimate_refuses_bad_values(field, value):
    with pytest.raises(pydantic.ValidationError, match=field):
        AcquisitionEstimate(**{field: value})
