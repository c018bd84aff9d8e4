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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests marked ``slow`` first (stable order otherwise): with ``-n 2`` the two workers then
    share the long tests at the start and the many short ones fill the end, instead of one worker
    finishing a 90-second test alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
