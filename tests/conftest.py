"""Suite-wide settings and fixtures: Qt renders offscreen (viewer tests run without a display); `processes`."""

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# One torch/OpenMP thread per process unless a test says otherwise (its own --threads or set_num_threads):
# the suite runs in two xdist workers on two cores, and two workers of two threads each (plus the
# processes the tests start, which inherit this) oversubscribe the cores and slow every step severalfold.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def processes():
    """Subprocesses started through it are killed when the test ends (tests/live and tests/acquire use it)."""
    from tests.live.conftest import Processes

    procs = Processes()
    try:
        yield procs
    finally:
        procs.kill_all()

