"""Simulation clocks: wall time (optionally accelerated) or a manually stepped clock, in seconds since start."""

from __future__ import annotations

import threading
import time


class WallClock:
    """Simulated seconds = wall seconds since creation times ``factor`` (1: real time).

    Parameters
    ----------
    factor
        Speed-up over wall time, dimensionless (> 0).
    """

    def __init__(self, factor: float = 1.0) -> None:
        if factor <= 0:
            raise ValueError(f"clock factor must be > 0; got {factor}")
        self.factor = float(factor)
        self._start = time.monotonic()

    def now_s(self) -> float:
        """Simulated time, seconds since the clock started."""
        return (time.monotonic() - self._start) * self.factor

    def wait(self, duration_s: float) -> None:
        """Let ``duration_s`` simulated seconds pass (sleeps ``duration_s / factor`` wall seconds)."""
        if duration_s > 0:
            time.sleep(duration_s / self.factor)


class ManualClock:
    """A clock that only moves when told: ``advance`` or ``wait`` (tests, deterministic runs).

    Parameters
    ----------
    start_s
        Initial time, seconds.
    """

    def __init__(self, start_s: float = 0.0) -> None:
        self._now = float(start_s)
        self._lock = threading.Lock()

    def now_s(self) -> float:
        """Current time, seconds."""
        with self._lock:
            return self._now

    def advance(self, duration_s: float) -> None:
        """Move the clock forward by ``duration_s`` seconds (>= 0)."""
        if duration_s < 0:
            raise ValueError(f"a clock cannot go back; got {duration_s} s")
        with self._lock:
            self._now += float(duration_s)

    def wait(self, duration_s: float) -> None:
        """Same as :meth:`advance`: the waiting party moves the clock, nothing sleeps."""
        self.advance(max(duration_s, 0.0))


Clock = WallClock | ManualClock
