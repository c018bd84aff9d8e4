"""Fixtures for the live tests: a small recorded session and a live-process launcher that never leaks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tiltstream.simulator.tiltseries import write_synthetic_session

SIZE, FRAMES, SECONDS_PER_FRAME = 16, 10, 2.0


@pytest.fixture(scope="session")
def small_session(tmp_path_factory) -> Path:
    """A noiseless 16^3 nanorod session of 10 GRS frames, 2 s apart (seed 0)."""
    return write_synthetic_session(tmp_path_factory.mktemp("live") / "session", "nanorod", SIZE, FRAMES,
                                   noise="none", seed=0, seconds_per_step=SECONDS_PER_FRAME)


def wait_for(predicate, timeout_s: float, what: str, proc: subprocess.Popen | None = None) -> None:
    """Poll ``predicate`` every 50 ms; fail with ``what`` after ``timeout_s`` (or when ``proc`` died)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) while waiting for {what}: "
                                 f"{proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


class Processes:
    """Starts ``tiltstream`` subprocesses and kills whatever is still running at teardown."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, *args: str, log: Path | None = None) -> subprocess.Popen:
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
        out = open(log, "w") if log is not None else subprocess.PIPE
        proc = subprocess.Popen([sys.executable, "-m", "tiltstream", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT if log is not None else subprocess.PIPE, text=True)
        self.procs.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(10)




def live_args(session: Path, run: Path, connect: str = "tcp://127.0.0.1:1", *extra: str) -> list[str]:
    """``tiltstream live`` arguments for a headless CPU run on loopback ports picked by the OS."""
    return ["live", "--connect", connect, "--session", str(session), "--out", str(run),
            "--status", "tcp://127.0.0.1:*", "--volume-endpoint", "tcp://127.0.0.1:*", "--headless",
            "--device", "cpu", *extra]
