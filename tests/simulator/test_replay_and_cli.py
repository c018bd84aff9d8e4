"""Replaying a recorded session as a microscope, and the ``tiltstream sim`` command line (subprocesses)."""

from __future__ import annotations

import math
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from temscript import RemoteMicroscope

from tiltstream.acquire.session import read_session
from tiltstream.simulator.clock import ManualClock
from tiltstream.simulator.microscope import SimulatedMicroscope
from tiltstream.simulator.replay_specimen import ReplaySpecimen
from tiltstream.simulator.tiltseries import write_synthetic_session

from .conftest import served, small_settings

CLI = [sys.executable, "-m", "tiltstream", "sim"]


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    return write_synthetic_session(tmp_path_factory.mktemp("replay") / "s", "nanorod", 16, 8, noise="none")


@pytest.mark.timeout(60)
def test_replay_returns_recorded_frames_nearest_the_true_angle(session):
    """Driven in the recorded GRS order (approached from below), frame k comes back for exposure k; driven
    to record 3's angle first, record 3 is served from the window of 8 unused frames."""
    recorded = read_session(session)
    frames = recorded.load_frames()
    specimen = ReplaySpecimen(session, window=8)
    microscope = SimulatedMicroscope(small_settings(), clock=ManualClock(), specimen=specimen)
    with served(microscope) as remote:
        third = recorded.records[3].angle_deg
        remote.set_stage_position(a=math.radians(third - 5.0))
        remote.set_stage_position(a=math.radians(third))
        np.testing.assert_array_equal(remote.acquire("HAADF")["HAADF"], frames[3])
        for k in (0, 1, 2, 4):
            target = recorded.records[k].angle_deg
            remote.set_stage_position(a=math.radians(target - 5.0))
            remote.set_stage_position(a=math.radians(target))
            np.testing.assert_array_equal(remote.acquire("HAADF")["HAADF"], frames[k])
    assert specimen.used == [3, 0, 1, 2, 4]


def test_replay_window_one_is_recorded_order_and_exhausts(session):
    specimen = ReplaySpecimen(session, window=1)
    served_order = [specimen.frame(0.0, 0.0) for _ in range(8)]
    assert specimen.used == list(range(8))
    assert served_order[0].shape == (16, 16)
    with pytest.raises(RuntimeError, match="exhausted"):
        specimen.frame(0.0, 0.0)


@pytest.mark.parametrize("args, field", [
    (["tiltseries", "--phantom", "nanoblob"], "phantom"),
    (["tiltseries", "--size", "4"], "size"),
    (["tiltseries", "--dose", "-2"], "dose_e_per_A2"),
    (["serve", "--size", "7"], "size"),
    (["serve", "--phantom", "cube"], "phantom"),
    (["serve", "--dose-rate", "-1"], "dose_rate_e_per_A2_s"),
    (["serve", "--replay", "/nonexistent/session"], "not a session"),
])
def test_bad_input_one_line_nonzero_exit(tmp_path, args, field):
    if args[0] == "tiltseries":
        args = args + ["--out", str(tmp_path / "out")]
    result = subprocess.run(CLI + args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0] and "Traceback" not in result.stderr


def test_port_in_use_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(CLI + ["serve", "--port", str(port), "--size", "16"], capture_output=True,
                                text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"tiltstream sim serve: error: port {port} on 127.0.0.1 is already in use; stop the other server "
        "or choose another --port"]


def _stop(process: subprocess.Popen, stop: signal.Signals) -> str:
    """Send ``stop`` to a ``sim serve`` process and wait up to 20 s for it to exit; returns its remaining
    stderr. Drains stderr while waiting (communicate, not wait), so a chatty server cannot block on a full
    pipe; kills it and fails the test when it does not stop."""
    process.send_signal(stop)
    try:
        return process.communicate(timeout=20)[1]
    except subprocess.TimeoutExpired:
        process.kill()
        err = process.communicate()[1]
        pytest.fail(f"sim serve did not stop within 20 s of {stop.name}; its stderr ends: {err[-2000:]!r}")


def _ignore_stop_signals() -> None:
    """What a non-interactive shell does to a job it starts in the background (SIGINT, and here SIGTERM too)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_stops_on_a_signal_its_parent_left_ignored(stop):
    """A server started as a background job (SIGINT inherited as ignored) still stops cleanly (exit 0,
    "stopped") on SIGINT and on SIGTERM."""
    process = subprocess.Popen(CLI + ["serve", "--port", "0", "--size", "16", "--steps", "3", "--mode",
                                      "instant", "--device", "cpu"], preexec_fn=_ignore_stop_signals,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = ""
        deadline = time.monotonic() + 60
        while "http://127.0.0.1:" not in line and time.monotonic() < deadline and process.poll() is None:
            line = process.stderr.readline()
        assert "http://127.0.0.1:" in line, "server did not print its address"
    finally:
        err = _stop(process, stop)
    assert process.returncode == 0, err[-2000:]
    assert err.strip().splitlines() == ["tiltstream sim serve: stopped"]


@pytest.mark.timeout(90)
def test_serve_subprocess_answers_remote_microscope():
    """``sim serve --port 0`` prints its URL; RemoteMicroscope moves and acquires; SIGINT stops it (exit 0)."""
    process = subprocess.Popen(CLI + ["serve", "--port", "0", "--size", "16", "--steps", "3", "--mode",
                                      "instant", "--device", "cpu"],
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
            port = int(match.group(1)) if match else None
        assert port, "server did not print its address"
        remote = RemoteMicroscope(("127.0.0.1", port), timeout=10)
        remote.set_stage_position(a=math.radians(-20.0))
        assert remote.get_stage_status() == "READY"
        assert remote.acquire("HAADF")["HAADF"].shape == (16, 16)
    finally:
        err = _stop(process, signal.SIGINT)
    assert process.returncode == 0, err[-2000:]
