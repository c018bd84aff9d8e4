"""What a plan costs and buys (pure): per-frame angular coverage, stage travel, time and electron dose.

Per frame: stage moves (``|distance| / tilt_speed_deg_per_s + settle_s``, backlash overshoots
included), then tracking and the exposure; a frame's time is the middle of its exposure. Defaults follow
the paper's manual tracking; :func:`with_tracking` ``("auto")`` uses the measured
:data:`AUTO_TRACKING_S` and no tracking dose. The time and dose model in full: docs/method.md 11.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pydantic

from tiltstream.acquire.backlash import Move


class AcquisitionEstimate(pydantic.BaseModel):
    """Timing and dose parameters of an acquisition, for estimates (units in every name)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    tilt_speed_deg_per_s: float = pydantic.Field(
        5.0, gt=0, allow_inf_nan=False, description="stage alpha tilt speed (deg/s)")
    settle_s: float = pydantic.Field(
        2.0, ge=0, allow_inf_nan=False, description="settling time after every stage move (s)")
    exposure_s: float = pydantic.Field(
        1.68, ge=0, allow_inf_nan=False,
        description="exposure time per frame (s); 1024x1024 pixels at 1.6 us dwell = 1.68 s")
    tracking_s: float = pydantic.Field(
        28.0, ge=0, allow_inf_nan=False,
        description="tracking and focusing overhead per frame (s); 28 s manual in the paper")
    frame_dose_e_per_A2: float = pydantic.Field(
        45.0, ge=0, allow_inf_nan=False,
        description="electron dose of one recorded frame (e/A^2); 30-62 in the paper")
    tracking_dose_e_per_A2: float = pydantic.Field(
        20.0, ge=0, allow_inf_nan=False,
        description="electron dose of tracking and focusing per frame (e/A^2); ~20 in the paper")


#: Per-frame overhead of automatic tracking and tilt-model focus, seconds: the extra wall time per frame over
#: tracking off, measured by ``OMP_NUM_THREADS=1 python bench/tracking.py --frames 100`` (loopback bridge,
#: 64^2 frames; see docs/benchmarks/tracking.md "Tracking"). A remote bridge adds its round trips (about 5
#: calls).
AUTO_TRACKING_S = 0.03


def with_tracking(estimate: AcquisitionEstimate, tracking: str) -> AcquisitionEstimate:
    """``estimate`` as given (``"manual"``) or with the measured automatic overhead and no tracking dose (``"auto"``)."""
    if tracking == "manual":
        return estimate
    if tracking != "auto":
        raise ValueError(f"tracking must be manual or auto; got {tracking!r}")
    return estimate.model_copy(update={"tracking_s": AUTO_TRACKING_S, "tracking_dose_e_per_A2": 0.0})


@dataclass(frozen=True)
class FrameSummary:
    """Running totals after one frame of a plan."""

    index: int
    target_deg: float
    coverage_gap_deg: float
    """Largest gap (deg) between the angles acquired so far in ``[min, max]``, counting the ends."""
    travel_deg: float
    """Stage travel (deg) from the start up to this frame, backlash moves included."""
    time_s: float
    """Time (s) from the start to the middle of this frame's exposure."""
    dose_e_per_A2: float
    """Dose (e/A^2) this frame adds: tracking plus recording."""
    cumulative_dose_e_per_A2: float


@dataclass(frozen=True)
class PlanSummary:
    """Per-frame running totals and totals of a whole plan."""

    frames: tuple[FrameSummary, ...]
    total_travel_deg: float
    total_time_s: float
    total_dose_e_per_A2: float
    n_moves: int

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, dicts, floats) for JSON."""
        return asdict(self) | {"frames": [asdict(frame) for frame in self.frames]}


def coverage_gaps_deg(
    angles_deg: Iterable[float],
    min_deg: float,
    max_deg: float,
    prior_angles_deg: Iterable[float] = (),
) -> list[float]:
    """Largest angular gap (deg) after each acquired angle, within ``[min_deg, max_deg]`` counting the ends.

    Parameters
    ----------
    angles_deg
        Acquired angles in acquisition order (deg); angles outside the range are clipped to it.
    min_deg, max_deg
        The range to cover (deg).
    prior_angles_deg
        Angles acquired before these (deg), e.g. earlier frames of a continued session.

    Returns
    -------
    list of float
        ``gaps[k]`` is the largest gap between consecutive sorted angles of
        ``prior + angles[:k + 1]`` together with ``min_deg`` and ``max_deg``.
    """
    points = [min_deg, max_deg]
    gaps: Counter[float] = Counter({max_deg - min_deg: 1})

    def insert(angle_deg: float) -> None:
        angle_deg = min(max(angle_deg, min_deg), max_deg)
        at = bisect.bisect_left(points, angle_deg)
        if at < len(points) and points[at] == angle_deg:
            return
        left, right = points[at - 1], points[at]
        gaps[right - left] -= 1
        if gaps[right - left] == 0:
            del gaps[right - left]
        gaps[angle_deg - left] += 1
        gaps[right - angle_deg] += 1
        points.insert(at, angle_deg)

    for angle_deg in prior_angles_deg:
        insert(angle_deg)
    result = []
    for angle_deg in angles_deg:
        insert(angle_deg)
        result.append(max(gaps))
    return result


def summarize_plan(
    moves: Sequence[Move],
    start_deg: float,
    min_deg: float,
    max_deg: float,
    estimate: AcquisitionEstimate = AcquisitionEstimate(),
    prior_angles_deg: Iterable[float] = (),
) -> PlanSummary:
    """Coverage, travel, time and dose of a plan, frame by frame.

    Parameters
    ----------
    moves
        The plan (:func:`tiltstream.acquire.backlash.plan_moves`); each ``"target"`` move is one recorded frame.
    start_deg
        Stage alpha before the first move (deg).
    min_deg, max_deg
        Scheme range (deg) for the coverage.
    estimate
        Timing and dose parameters.
    prior_angles_deg
        Angles (deg) already acquired before this plan (count towards coverage only).
    """
    frames: list[FrameSummary] = []
    targets = [move.angle_deg for move in moves if move.kind == "target"]
    gaps = coverage_gaps_deg(targets, min_deg, max_deg, prior_angles_deg)
    current_deg, travel_deg, time_s, dose = start_deg, 0.0, 0.0, 0.0
    frame_dose = estimate.tracking_dose_e_per_A2 + estimate.frame_dose_e_per_A2
    for move in moves:
        distance_deg = abs(move.angle_deg - current_deg)
        travel_deg += distance_deg
        time_s += distance_deg / estimate.tilt_speed_deg_per_s + estimate.settle_s
        current_deg = move.angle_deg
        if move.kind != "target":
            continue
        time_s += estimate.tracking_s
        dose += frame_dose
        frames.append(FrameSummary(
            index=move.index, target_deg=move.angle_deg, coverage_gap_deg=gaps[len(frames)],
            travel_deg=travel_deg, time_s=time_s + estimate.exposure_s / 2,
            dose_e_per_A2=frame_dose, cumulative_dose_e_per_A2=dose))
        time_s += estimate.exposure_s
    return PlanSummary(frames=tuple(frames), total_travel_deg=travel_deg, total_time_s=time_s,
                       total_dose_e_per_A2=dose, n_moves=len(moves))
