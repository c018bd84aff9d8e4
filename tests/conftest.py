"""Suite-wide settings and fixtures: Qt renders offscreen (viewer tests run without a display); `processes`."""

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture
def processes():
    """Subprocesses started through it are killed when the test ends (tests/live and tests/acquire use it)."""
    from tests.live.conftest import Processes

    procs = Processes()
    try:
        yield procs
    finally:
        procs.kill_all()

