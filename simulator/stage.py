"""Simulated goniometer alpha axis: limits, tilt speed, settling, status and mechanical backlash.

The stage is a function of clock time (no thread): a command at time ``t0`` from angle ``a0`` to ``a1``
travels at ``speed`` degrees per second, then settles for ``settle_s``; until then the status is
``GOING`` (method GO) or ``MOVING`` (method MOVE), then ``READY`` (temscript ``StageStatus`` names). In
instant mode the move and settling take no time.

Backlash: the reported (encoder) angle is the commanded one, but the specimen follows the drive gear
through a play of ``backlash_deg``. After a move in the positive direction the specimen angle equals
the reported one; after a move in the negative direction the specimen lags the commanded angle: it
stays ``backlash_deg`` above it (the gear's other face has yet to take up the play). Approaching every
target from below therefore removes the error; this is what the executor's backlash correction relies on.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from tiltstream.simulator.clock import Clock


@dataclass(frozen=True)
class CommandedMove:
    """One alpha command the stage received: clock time (s), commanded angle (deg), speed factor, and
    whether it was accepted (False: refused, outside the limits)."""

    time_s: float
    alpha_deg: float
    speed: float
    accepted: bool = True


class StageLimitError(ValueError):
    """A command outside the holder's alpha limits; the stage does not move."""


class SimulatedStage:
    """Alpha axis of the simulated holder.

    Parameters
    ----------
    clock
        Time source (:mod:`tiltstream.simulator.clock`).
    instant
        True: moves complete at once; False: ``tilt_speed_deg_per_s`` and ``settle_s`` apply.
    tilt_speed_deg_per_s
        Speed at ``speed=1.0``, degrees per second.
    settle_s
        Settling time after the travel, seconds.
    backlash_deg
        Mechanical play, degrees.
    min_deg, max_deg
        Holder limits, degrees; commands outside are refused.
    """

    def __init__(self, clock: Clock, *, instant: bool = False, tilt_speed_deg_per_s: float = 15.0,
                 settle_s: float = 0.5, backlash_deg: float = 0.5, min_deg: float = -80.0,
                 max_deg: float = 80.0) -> None:
        self.clock = clock
        self.instant = instant
        self.tilt_speed_deg_per_s = float(tilt_speed_deg_per_s)
        self.settle_s = float(settle_s)
        self.backlash_deg = float(backlash_deg)
        self.min_deg = float(min_deg)
        self.max_deg = float(max_deg)
        self.commanded_moves: list[CommandedMove] = []
        self.stuck = False  # fault injection: status stays MOVING
        self._lock = threading.Lock()
        self._start_deg = 0.0
        self._target_deg = 0.0
        self._t0 = clock.now_s()
        self._travel_s = 0.0
        self._method = "GO"
        self._offset_deg = 0.0  # specimen minus reported angle, set by the last move's direction

    def command(self, alpha_deg: float, speed: float | None = None, method: str = "GO") -> None:
        """Start a move to ``alpha_deg`` (degrees); refuses targets outside the limits.

        Raises
        ------
        StageLimitError
            ``alpha_deg`` outside ``[min_deg, max_deg]``; nothing moves.
        """
        alpha_deg = float(alpha_deg)
        factor = 1.0 if speed is None else float(speed)
        if not self.min_deg <= alpha_deg <= self.max_deg:
            with self._lock:
                self.commanded_moves.append(CommandedMove(self.clock.now_s(), alpha_deg, factor, False))
            raise StageLimitError(f"alpha {alpha_deg:.4f} deg is outside the holder limits "
                                  f"[{self.min_deg}, {self.max_deg}] deg; the stage did not move")
        if factor <= 0:
            raise ValueError(f"stage speed factor must be > 0; got {factor}")
        with self._lock:
            now = self.clock.now_s()
            current = self._reported_locked(now)
            self.commanded_moves.append(CommandedMove(now, alpha_deg, factor))
            if alpha_deg > current:
                self._offset_deg = 0.0
            elif alpha_deg < current:
                self._offset_deg = self.backlash_deg
            self._start_deg, self._target_deg, self._t0 = current, alpha_deg, now
            self._method = method
            speed_deg_s = self.tilt_speed_deg_per_s * factor
            self._travel_s = 0.0 if self.instant else abs(alpha_deg - current) / speed_deg_s

    def _reported_locked(self, now: float) -> float:
        if self._travel_s <= 0:
            return self._target_deg
        fraction = min(max((now - self._t0) / self._travel_s, 0.0), 1.0)
        return self._start_deg + fraction * (self._target_deg - self._start_deg)

    def reported_deg(self) -> float:
        """Angle the encoder reports now, degrees (the commanded target once arrived)."""
        with self._lock:
            return self._reported_locked(self.clock.now_s())

    def true_deg(self) -> float:
        """Angle of the specimen now, degrees (reported angle plus the backlash offset)."""
        with self._lock:
            return self._reported_locked(self.clock.now_s()) + self._offset_deg

    def status(self) -> str:
        """``READY``, or ``GOING``/``MOVING`` during travel and settling (or forever when stuck)."""
        with self._lock:
            if self.stuck:
                return "MOVING"
            settle = 0.0 if self.instant else self.settle_s
            if self.clock.now_s() < self._t0 + self._travel_s + settle:
                return "MOVING" if self._method == "MOVE" else "GOING"
            return "READY"
