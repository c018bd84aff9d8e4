"""Backlash planning: every target approached from below, moves inside the holder limits, resumable plans."""

import itertools

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tiltstream.acquire.backlash import HolderLimits, Move, check_backlash_config, plan_moves
from tiltstream.errors import UserError
from tiltstream.acquire.scheme import TiltScheme, iter_targets


def test_hand_plan():
    """From 0 deg: -70 is below (via -72), 16.5 above (straight), -36.9 below (via -38.9), -36.9 again (straight)."""
    targets = [(0, -70.0), (1, 16.5), (2, -36.9), (3, -36.9)]
    assert list(plan_moves(targets, start_deg=0.0, backlash_deg=2.0)) == [
        Move(0, "backlash", -72.0), Move(0, "target", -70.0),
        Move(1, "target", 16.5),
        Move(2, "backlash", -38.9), Move(2, "target", -36.9),
        Move(3, "target", -36.9),
    ]


def test_zero_backlash_moves_straight():
    targets = [(0, -70.0), (1, 16.5), (2, -36.9)]
    assert list(plan_moves(targets, 0.0, backlash_deg=0.0)) == [Move(i, "target", a) for i, a in targets]


def test_plan_is_lazy_on_an_endless_scheme():
    moves = list(itertools.islice(plan_moves(iter_targets(TiltScheme()), 0.0), 10))
    assert len(moves) == 10


def test_overshoot_outside_limits_is_refused_with_the_values():
    scheme = TiltScheme(min_deg=-79, max_deg=70)
    with pytest.raises(UserError) as info:
        check_backlash_config(scheme, 2.0, HolderLimits())
    assert "min -79 deg minus backlash 2 deg = -81 deg is outside the holder limits [-80, 80] deg" in str(info.value)
    check_backlash_config(scheme, 1.0, HolderLimits())  # -80 is inside (ends included)
    check_backlash_config(scheme, 0.0, HolderLimits())  # no correction, no overshoot


@pytest.mark.parametrize("scheme, backlash, limits, fragment", [
    (TiltScheme(), -1.0, HolderLimits(), "backlash -1"),
    (TiltScheme(), float("nan"), HolderLimits(), "backlash nan"),
    (TiltScheme(min_deg=-85), 0.0, HolderLimits(), "scheme min -85 deg is outside the holder limits [-80, 80] deg"),
    (TiltScheme(max_deg=75), 0.0, HolderLimits(min_deg=-70, max_deg=70), "scheme max 75 deg"),
])
def test_bad_configs_are_refused(scheme, backlash, limits, fragment):
    with pytest.raises(UserError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        check_backlash_config(scheme, backlash, limits)


def test_targets_outside_limits_are_refused():
    with pytest.raises(UserError, match="target 81 deg of frame 0 is outside"):
        list(plan_moves([(0, 81.0)], 0.0))
    with pytest.raises(UserError, match="= -81 deg is outside"):
        list(plan_moves([(0, 10.0), (1, -79.0)], 0.0, backlash_deg=2.0))
    with pytest.raises(UserError, match="backlash -0.5"):
        list(plan_moves([(0, 10.0)], 0.0, backlash_deg=-0.5))


@st.composite
def plans(draw):
    """A GRS/incremental scheme, backlash and limits that pass check_backlash_config, and a start angle."""
    limit_min = draw(st.floats(-90, 0))
    limit_max = draw(st.floats(1, 90))
    min_deg = draw(st.floats(limit_min, limit_max - 0.5))
    max_deg = draw(st.floats(min_deg + 0.5, limit_max))
    backlash = draw(st.sampled_from([0.0, 2.0]) | st.floats(0, 5))
    assume(min_deg - backlash >= limit_min)
    kind = draw(st.sampled_from(["grs", "incremental"]))
    count = draw(st.integers(1, 120))
    scheme = TiltScheme(kind=kind, min_deg=min_deg, max_deg=max_deg, count=count)
    limits = HolderLimits(min_deg=limit_min, max_deg=limit_max)
    start = draw(st.floats(limit_min, limit_max))
    return scheme, backlash, limits, start


@settings(max_examples=300, deadline=None)
@given(plans())
def test_every_target_is_approached_from_below_and_moves_stay_inside(plan):
    scheme, backlash, limits, start = plan
    check_backlash_config(scheme, backlash, limits)
    moves = list(plan_moves(iter_targets(scheme), start, backlash, limits))
    assert [m.index for m in moves if m.kind == "target"] == list(range(scheme.count))
    previous = start
    for position, move in enumerate(moves):
        assert limits.min_deg <= move.angle_deg <= limits.max_deg
        if move.kind == "target" and backlash > 0:
            assert previous <= move.angle_deg  # the move before each target is at or below it
        if move.kind == "backlash":
            target = moves[position + 1]
            assert target.kind == "target" and target.index == move.index
            assert move.angle_deg == target.angle_deg - backlash
            assert target.angle_deg < previous  # only targets below the stage get an overshoot
        previous = move.angle_deg
    if backlash == 0:
        assert all(m.kind == "target" for m in moves)


@settings(max_examples=200, deadline=None)
@given(plans(), st.data())
def test_plan_from_start_index_is_the_tail_of_the_full_plan(plan, data):
    scheme, backlash, limits, start = plan
    k = data.draw(st.integers(0, scheme.count))
    full = list(plan_moves(iter_targets(scheme), start, backlash, limits))
    stage_deg = start if k == 0 else [m for m in full if m.kind == "target"][k - 1].angle_deg
    resumed = list(plan_moves(iter_targets(scheme.model_copy(update={"start_index": k})),
                              stage_deg, backlash, limits))
    assert resumed == [m for m in full if m.index >= k]
