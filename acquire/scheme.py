"""Tilt schemes as pure functions: golden-ratio (GRS, the paper's Eq. 1), incremental, dose-symmetric.

A scheme maps a frame index to a target tilt angle in degrees (``grs`` exactly rounded for any index);
nothing here talks to a microscope, and :mod:`tiltstream.acquire.backlash` turns the targets into stage
moves. The schemes' definitions: docs/design.md 3.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from decimal import Decimal, localcontext
from fractions import Fraction
from functools import lru_cache
from typing import Literal

import pydantic

from tiltstream.errors import UserError

SchemeKind = Literal["grs", "incremental", "dose-symmetric"]

#: Tolerance (deg) for deciding whether a grid angle lies inside ``[min_deg, max_deg]``.
RANGE_TOLERANCE_DEG = 1e-9


def _golden_ratio_fraction() -> Fraction:
    """phi = (1 + sqrt 5) / 2 as an exact fraction of its first 60 significant digits."""
    with localcontext() as ctx:
        ctx.prec = 60
        return Fraction((1 + Decimal(5).sqrt()) / 2)


PHI = (1 + math.sqrt(5)) / 2
_PHI_EXACT = _golden_ratio_fraction()


def grs_angle_deg(index: int, min_deg: float, max_deg: float) -> float:
    """Golden-ratio scheme angle of frame ``index``: the paper's Eq. 1.

    ``theta_i = ((i * phi * (max - min)) mod (max - min)) + min`` with ``phi = (1 + sqrt 5) / 2``.
    Computed as ``min + (max - min) * frac(i * phi)`` (the same number) in exact rational
    arithmetic and rounded once, so large indices keep full double precision.

    Parameters
    ----------
    index
        Frame index ``i >= 0``; frame 0 is at ``min_deg``.
    min_deg, max_deg
        Tilt range in degrees, ``min_deg < max_deg``.

    Returns
    -------
    float
        Target angle in degrees, in ``[min_deg, max_deg)``.
    """
    if index < 0:
        raise UserError(f"frame index {index} is negative; allowed: 0 or more")
    if not min_deg < max_deg:
        raise UserError(f"min {min_deg} deg is not below max {max_deg} deg; allowed: min < max")
    frac = (index * _PHI_EXACT) % 1
    lo, hi = Fraction(min_deg), Fraction(max_deg)
    return float(lo + (hi - lo) * frac)


@lru_cache(maxsize=64)
def _dose_symmetric_angles(min_deg: float, max_deg: float, step_deg: float) -> tuple[float, ...]:
    """All dose-symmetric angles inside the range, in acquisition order: 0, +s, -s, +2s, -2s, ..."""
    angles = [0.0]
    for k in itertools.count(1):
        plus, minus = k * step_deg, -k * step_deg
        plus_in = plus <= max_deg + RANGE_TOLERANCE_DEG
        minus_in = minus >= min_deg - RANGE_TOLERANCE_DEG
        if not plus_in and not minus_in:
            return tuple(angles)
        if plus_in:
            angles.append(plus)
        if minus_in:
            angles.append(minus)


def _incremental_sweep_length(min_deg: float, max_deg: float, step_deg: float) -> int:
    """Number of angles ``min + k * step <= max`` in one incremental sweep."""
    return int(math.floor((max_deg - min_deg) / step_deg + RANGE_TOLERANCE_DEG)) + 1


class TiltScheme(pydantic.BaseModel):
    """Which target angle each frame gets: kind, range, number of frames, where to continue from."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    kind: SchemeKind = pydantic.Field(
        "grs", description="tilt scheme: grs (golden ratio, Eq. 1), incremental, dose-symmetric")
    min_deg: float = pydantic.Field(-70.0, allow_inf_nan=False,
                                    description="lowest tilt angle of the scheme (deg)")
    max_deg: float = pydantic.Field(70.0, allow_inf_nan=False,
                                    description="highest tilt angle of the scheme (deg)")
    count: int | None = pydantic.Field(
        None, ge=1, description="number of frames (None: endless for grs and incremental)")
    start_index: int = pydantic.Field(
        0, ge=0, description="first frame index to produce (to continue a session)")
    step_deg: float = pydantic.Field(
        3.0, gt=0, allow_inf_nan=False,
        description="angular step (deg) of dose-symmetric, and of incremental when count is None")

    @pydantic.model_validator(mode="after")
    def _check(self) -> TiltScheme:
        if not self.min_deg < self.max_deg:
            raise ValueError(f"min_deg {self.min_deg} deg must be below max_deg {self.max_deg} deg")
        if self.kind == "dose-symmetric":
            if not self.min_deg <= 0.0 <= self.max_deg:
                raise ValueError(f"dose-symmetric starts at 0 deg, which is outside "
                                 f"[{self.min_deg}, {self.max_deg}] deg; allowed: min_deg <= 0 <= max_deg")
            available = len(_dose_symmetric_angles(self.min_deg, self.max_deg, self.step_deg))
            if self.count is not None and self.count > available:
                raise ValueError(f"count {self.count} exceeds the {available} dose-symmetric angles "
                                 f"in [{self.min_deg}, {self.max_deg}] deg at step {self.step_deg} deg; "
                                 f"allowed: count <= {available} (or a smaller step_deg)")
        end = self.end_index
        if end is not None and self.start_index > end:
            raise ValueError(f"start_index {self.start_index} is beyond the last frame; "
                             f"allowed: 0 <= start_index <= {end}")
        return self

    @property
    def end_index(self) -> int | None:
        """One past the last frame index, or ``None`` for an endless scheme."""
        if self.count is not None:
            return self.count
        if self.kind == "dose-symmetric":
            return len(_dose_symmetric_angles(self.min_deg, self.max_deg, self.step_deg))
        return None


def scheme_angle_deg(scheme: TiltScheme, index: int) -> float:
    """Target angle (deg) of frame ``index`` under ``scheme`` (any index of the scheme, not only >= start)."""
    end = scheme.end_index
    if index < 0 or (end is not None and index >= end):
        allowed = "0 or more" if end is None else f"0 to {end - 1}"
        raise UserError(f"frame index {index} is outside the {scheme.kind} scheme; allowed: {allowed}")
    if scheme.kind == "grs":
        return grs_angle_deg(index, scheme.min_deg, scheme.max_deg)
    if scheme.kind == "incremental":
        if scheme.count is not None:
            if scheme.count == 1:
                return scheme.min_deg
            # interpolation that is exactly min at 0 and exactly max at count - 1
            t = index / (scheme.count - 1)
            return scheme.min_deg * (1.0 - t) + scheme.max_deg * t
        sweep = _incremental_sweep_length(scheme.min_deg, scheme.max_deg, scheme.step_deg)
        return scheme.min_deg + (index % sweep) * scheme.step_deg
    return _dose_symmetric_angles(scheme.min_deg, scheme.max_deg, scheme.step_deg)[index]


def iter_targets(scheme: TiltScheme) -> Iterator[tuple[int, float]]:
    """``(index, target_deg)`` from ``start_index`` to the end (endless for grs/incremental without count)."""
    end = scheme.end_index
    indices = itertools.count(scheme.start_index) if end is None else range(scheme.start_index, end)
    for index in indices:
        yield index, scheme_angle_deg(scheme, index)
