"""Fixtures for the simulator tests: small simulated microscopes served over loopback HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from temscript import RemoteMicroscope

from tiltstream.simulator.bridge_server import running_server
from tiltstream.simulator.clock import ManualClock
from tiltstream.simulator.microscope import SimulatedMicroscope
from tiltstream.simulator.settings import SimSettings


def small_settings(**overrides) -> SimSettings:
    """24^3 nanorod, 6 steps of 1 s, no noise, instant stage, CPU (fast and exact)."""
    values = dict(phantom="nanorod", size=24, steps=6, seconds_per_step=1.0, noise="none", mode="instant",
                  device="cpu", seed=3)
    values.update(overrides)
    return SimSettings(**values)


@contextmanager
def served(microscope: SimulatedMicroscope, timeout: float | None = 10.0) -> Iterator[RemoteMicroscope]:
    """A ``RemoteMicroscope`` connected to ``microscope`` served on a free loopback port."""
    with running_server(microscope) as url:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        yield RemoteMicroscope((host, int(port)), timeout=timeout)


@pytest.fixture
def manual_microscope() -> Callable[..., SimulatedMicroscope]:
    """Factory of simulated microscopes on a manual clock (``small_settings`` plus overrides)."""

    def make(**overrides) -> SimulatedMicroscope:
        return SimulatedMicroscope(small_settings(**overrides), clock=ManualClock())

    return make
