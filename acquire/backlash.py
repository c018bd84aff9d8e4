"""Backlash planning (pure): turn target angles into stage moves that reach every target from below.

The alpha drive of a tomography holder has mechanical play; an angle reached from above lands
somewhere else than the same angle reached from below. As in the paper (2 deg correction through
TEMScript), every target is approached from the negative side: when the target is below the current
stage angle the stage first goes to ``target - backlash_deg``, then up to the target. A backlash of 0
turns the correction off (straight moves). Moves never leave the holder limits; a configuration that
could make them do so is refused by :func:`check_backlash_config` before anything moves.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import pydantic

from tiltstream.errors import UserError
from tiltstream.acquire.scheme import TiltScheme

MoveKind = Literal["backlash", "target"]


@dataclass(frozen=True)
class Move:
    """One stage alpha move: the frame it belongs to, whether it is the overshoot or the target, where to (deg)."""

    index: int
    kind: MoveKind
    angle_deg: float


class HolderLimits(pydantic.BaseModel):
    """The alpha range the specimen holder may be driven to (deg)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    min_deg: float = pydantic.Field(-80.0, allow_inf_nan=False, description="lowest holder alpha (deg)")
    max_deg: float = pydantic.Field(80.0, allow_inf_nan=False, description="highest holder alpha (deg)")

    @pydantic.model_validator(mode="after")
    def _check(self) -> HolderLimits:
        if not self.min_deg < self.max_deg:
            raise ValueError(f"holder limit min {self.min_deg} deg must be below max {self.max_deg} deg")
        return self

    def contains(self, angle_deg: float) -> bool:
        """Whether ``angle_deg`` lies inside the limits (ends included)."""
        return self.min_deg <= angle_deg <= self.max_deg

    def describe(self) -> str:
        """The limits as text, e.g. ``[-80, 80] deg``."""
        return f"[{self.min_deg:g}, {self.max_deg:g}] deg"


def _check_backlash_value(backlash_deg: float) -> None:
    if not math.isfinite(backlash_deg) or backlash_deg < 0:
        raise UserError(f"backlash {backlash_deg} deg is not allowed; allowed: a finite value >= 0 deg "
                        "(0 turns the correction off)")


def check_backlash_config(scheme: TiltScheme, backlash_deg: float, limits: HolderLimits = HolderLimits()) -> None:
    """Refuse, before anything moves, a scheme whose targets or overshoots could leave the holder limits.

    Parameters
    ----------
    scheme
        The tilt scheme; its ``[min_deg, max_deg]`` bounds every target.
    backlash_deg
        Overshoot below a target approached from above (deg), ``>= 0``.
    limits
        Holder alpha limits (deg).

    Raises
    ------
    UserError
        Naming the values, e.g. ``min -79 deg minus backlash 2 deg = -81 deg is outside the holder
        limits [-80, 80] deg``.
    """
    _check_backlash_value(backlash_deg)
    for name, angle_deg in (("min", scheme.min_deg), ("max", scheme.max_deg)):
        if not limits.contains(angle_deg):
            raise UserError(f"scheme {name} {angle_deg:g} deg is outside the holder limits {limits.describe()}")
    if backlash_deg > 0:
        overshoot_deg = scheme.min_deg - backlash_deg
        if not limits.contains(overshoot_deg):
            raise UserError(f"min {scheme.min_deg:g} deg minus backlash {backlash_deg:g} deg = {overshoot_deg:g} deg "
                            f"is outside the holder limits {limits.describe()}; raise min or lower the backlash")


def plan_moves(
    targets: Iterable[tuple[int, float]],
    start_deg: float,
    backlash_deg: float = 2.0,
    limits: HolderLimits = HolderLimits(),
) -> Iterator[Move]:
    """Stage moves that reach every target from below (lazy; works on endless schemes).

    Parameters
    ----------
    targets
        ``(index, target_deg)`` pairs in acquisition order (e.g. :func:`tiltstream.acquire.scheme.iter_targets`).
    start_deg
        Stage alpha before the first move (deg).
    backlash_deg
        Overshoot (deg): a target below the current angle is reached via ``target - backlash_deg``;
        0 means straight moves.
    limits
        Holder alpha limits (deg); a target or overshoot outside them raises.

    Yields
    ------
    Move
        For each target: a ``"backlash"`` move when the target is below the current angle and the
        backlash is positive, then the ``"target"`` move.

    Raises
    ------
    UserError
        A negative backlash, or a target or overshoot outside the holder limits (raised when that
        target is reached in the iteration; call :func:`check_backlash_config` first to refuse
        before anything moves).
    """
    _check_backlash_value(backlash_deg)
    current_deg = start_deg
    for index, target_deg in targets:
        if not limits.contains(target_deg):
            raise UserError(f"target {target_deg:g} deg of frame {index} is outside the holder limits "
                            f"{limits.describe()}")
        if backlash_deg > 0 and target_deg < current_deg:
            overshoot_deg = target_deg - backlash_deg
            if not limits.contains(overshoot_deg):
                raise UserError(f"target {target_deg:g} deg of frame {index} minus backlash {backlash_deg:g} deg "
                                f"= {overshoot_deg:g} deg is outside the holder limits {limits.describe()}")
            yield Move(index, "backlash", overshoot_deg)
        yield Move(index, "target", target_deg)
        current_deg = target_deg
