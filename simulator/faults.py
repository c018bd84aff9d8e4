"""Fault injection for the simulated bridge: failing calls, dropped connections, slow responses.

Faults are keyed by endpoint, the path after ``/v1/`` without the query (``acquire``,
``stage_position``, ``stage_status``, ...); ``"*"`` matches every endpoint. The bridge server asks
:meth:`FaultInjector.take` before serving each request. A stage that stays ``MOVING`` is a stage fault
(:attr:`tiltstream.simulator.stage.SimulatedStage.stuck`).

On the command line (``tiltstream sim serve --fault ENDPOINT:KIND[:N]``, repeatable) a fault is written
``acquire:error:3`` (the next 3 acquisitions answer HTTP 500), ``stage_position:drop`` (the next request
is dropped unanswered) or ``*:delay:0.5`` (every request waits 0.5 s); :func:`apply_fault_spec` reads it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from tiltstream.errors import UserError

FAULT_KINDS = ("error", "drop", "delay")


@dataclass(frozen=True)
class Fault:
    """What to do to one request: ``kind`` is ``"error"`` (answer ``status``) or ``"drop"`` (close the
    socket without answering); ``delay_s`` seconds pass first."""

    kind: str | None
    status: int = 500
    delay_s: float = 0.0


class FaultInjector:
    """Counts of pending faults per endpoint, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._errors: dict[str, list[int]] = {}  # endpoint -> [remaining, status]
        self._drops: dict[str, int] = {}
        self._delays: dict[str, float] = {}

    def fail(self, endpoint: str = "acquire", count: int = 1, status: int = 500) -> None:
        """The next ``count`` requests to ``endpoint`` get HTTP ``status`` (an error response)."""
        with self._lock:
            self._errors[endpoint] = [int(count), int(status)]

    def drop(self, endpoint: str = "acquire", count: int = 1) -> None:
        """The next ``count`` requests to ``endpoint`` are read and the connection closed, unanswered."""
        with self._lock:
            self._drops[endpoint] = int(count)

    def delay(self, endpoint: str = "*", seconds: float = 1.0) -> None:
        """Every request to ``endpoint`` waits ``seconds`` (wall) before it is served; 0 clears."""
        with self._lock:
            if seconds > 0:
                self._delays[endpoint] = float(seconds)
            else:
                self._delays.pop(endpoint, None)

    def clear(self) -> None:
        """Remove every pending fault."""
        with self._lock:
            self._errors.clear()
            self._drops.clear()
            self._delays.clear()

    def take(self, endpoint: str) -> Fault:
        """The fault for one request to ``endpoint`` (consumes a count); ``kind`` None when none is due."""
        with self._lock:
            delay_s = self._delays.get(endpoint, self._delays.get("*", 0.0))
            for key in (endpoint, "*"):
                if self._drops.get(key, 0) > 0:
                    self._drops[key] -= 1
                    return Fault("drop", delay_s=delay_s)
                pending = self._errors.get(key)
                if pending and pending[0] > 0:
                    pending[0] -= 1
                    return Fault("error", status=pending[1], delay_s=delay_s)
            return Fault(None, delay_s=delay_s)


def apply_fault_spec(injector: FaultInjector, spec: str) -> str:
    """Arm ``injector`` with one ``ENDPOINT:KIND[:N]`` spec; returns a description of what was armed.

    ``KIND`` is ``error`` (the next N requests answer HTTP 500; N defaults to 1), ``drop`` (the next N are
    closed unanswered) or ``delay`` (every request waits N seconds; default 1).

    Raises
    ------
    UserError
        A malformed spec, an unknown kind or a bad N.
    """
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or parts[1] not in FAULT_KINDS:
        raise UserError(f"--fault {spec!r} is not ENDPOINT:KIND[:N] with KIND one of {', '.join(FAULT_KINDS)} "
                        "(e.g. acquire:error:3, stage_position:drop, *:delay:0.5)")
    endpoint, kind = parts[0], parts[1]
    try:
        amount = float(parts[2]) if len(parts) == 3 else 1.0
    except ValueError:
        amount = -1.0
    if amount <= 0 or (kind != "delay" and amount != int(amount)):
        raise UserError(f"--fault {spec!r}: N must be a positive "
                        f"{'number of seconds' if kind == 'delay' else 'whole number of requests'}")
    if kind == "error":
        injector.fail(endpoint, count=int(amount))
        return f"the next {int(amount)} request(s) to {endpoint} answer HTTP 500"
    if kind == "drop":
        injector.drop(endpoint, count=int(amount))
        return f"the next {int(amount)} request(s) to {endpoint} are dropped unanswered"
    injector.delay(endpoint, seconds=amount)
    return f"every request to {endpoint} waits {amount:g} s"
