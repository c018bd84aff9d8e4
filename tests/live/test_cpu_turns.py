"""The live process's two threads take turns on the CPU: a query never runs beside a training step, waits at
most one step for its turn, and runs at once outside a training chunk."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tiltstream.live.cpu_turns import CpuTurns
from tiltstream.recon.presets import preset
from tiltstream.recon.trainer import Trainer

STEP_S = 0.02  # a training step's length in the threaded test
QUERY_S = 0.01


def _overlaps(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> int:
    """How many intervals of ``a`` overlap one of ``b`` (intervals: (start, end) seconds)."""
    return sum(any(s < e2 and s2 < e for s2, e2 in b) for s, e in a)


@pytest.mark.timeout(60)
def test_queries_run_between_steps_not_beside_them():
    """200 steps of 20 ms in chunks of 20 while another thread queries (10 ms each) as fast as it can: no
    query overlaps a step, every query waits at most about one step for its turn, and queries do run
    (the training thread grants turns rather than starving them)."""
    turns = CpuTurns()
    steps: list[tuple[float, float]] = []
    queries: list[tuple[float, float]] = []
    waits: list[float] = []
    stop = threading.Event()

    def query() -> None:
        while not stop.is_set():
            asked = time.perf_counter()
            with turns.turn():
                started = time.perf_counter()
                time.sleep(QUERY_S)
                queries.append((started, time.perf_counter()))
            waits.append(started - asked)
            time.sleep(0.001)

    thread = threading.Thread(target=query)
    thread.start()
    try:
        for _ in range(10):
            with turns.training():
                for _ in range(20):
                    turns.between_steps()
                    started = time.perf_counter()
                    time.sleep(STEP_S)
                    steps.append((started, time.perf_counter()))
            time.sleep(0.005)
    finally:
        stop.set()
        thread.join(5)
    assert len(steps) == 200
    assert len(queries) >= 50, f"only {len(queries)} queries ran beside 200 steps"
    assert _overlaps(queries, steps) == 0
    assert max(waits) < STEP_S + QUERY_S + 0.05, f"a query waited {max(waits):.3f} s"


@pytest.mark.timeout(10)
def test_a_query_outside_training_runs_at_once():
    """No chunk is training: the turn is granted without waiting."""
    turns = CpuTurns()
    started = time.perf_counter()
    with turns.turn():
        pass
    assert time.perf_counter() - started < 0.05


@pytest.mark.timeout(60)
def test_trainer_calls_before_step_once_per_step():
    """A DIP-STER trainer calls its ``before_step`` once before each of its steps, and trains the same
    steps with it as without (same seed: the same loss to the last bit)."""
    frames = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    losses = []
    calls = [0]
    for hook in (None, lambda: calls.__setitem__(0, calls[0] + 1)):
        trainer = Trainer(preset("fast"), (8, 8), 10.0, seed=0)
        for index, frame in enumerate(frames):
            trainer.add_frame(index, frame, angle_deg=30.0 * index - 30.0, time_s=float(index))
        trainer.before_step = hook
        losses.append(trainer.train_steps(7))
    assert calls[0] == 7
    assert losses[0] == losses[1]
