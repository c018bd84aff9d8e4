"""Turns on the CPU for the live process's two threads: a query runs between two training steps, not beside one.

The training thread and the reprojection service (:mod:`tiltstream.live.reprojection_service`) each run torch
ops with the process's thread count. Run at once on a small machine they ask for twice as many threads as
there are cores, and both slow down by more than the query's own work (docs/benchmarks/live.md, "Taking
turns"). :class:`CpuTurns` makes them alternate instead: the service asks for a turn, the training thread
grants it at its next step boundary (:meth:`CpuTurns.between_steps`, called by the trainer before each
step) and waits until the query is done. Outside a training chunk (:meth:`CpuTurns.training`) a turn is
granted at once. A query therefore waits at most one training step.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class CpuTurns:
    """The turn-taking described in the module docstring; one training thread, one querying thread."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._training = False  # the training thread is inside a chunk
        self._wanted = False  # the querying thread waits for, or holds, a turn
        self._paused = False  # the training thread waits at a step boundary

    # ------------------------------------------------------------------ training thread
    @contextmanager
    def training(self) -> Iterator[None]:
        """The context of one training chunk: queries now wait for a step boundary."""
        with self._condition:
            self._training = True
        try:
            yield
        finally:
            with self._condition:
                self._training = False
                self._condition.notify_all()

    def between_steps(self) -> None:
        """Called by the training thread before each step: give a waiting query its turn, then go on."""
        if not self._wanted:  # the common case: one attribute read, no lock
            return
        with self._condition:
            self._paused = True
            self._condition.notify_all()
            while self._wanted:
                self._condition.wait()
            self._paused = False

    # ------------------------------------------------------------------ querying thread
    @contextmanager
    def turn(self) -> Iterator[None]:
        """Hold the CPU for one query: wait for the training thread's next step boundary (none outside a chunk)."""
        with self._condition:
            self._wanted = True
            while self._training and not self._paused:
                self._condition.wait()
        try:
            yield
        finally:
            with self._condition:
                self._wanted = False
                self._condition.notify_all()
