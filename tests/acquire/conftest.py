"""Fixtures for acquisition tests: real temscript servers on loopback, started as subprocesses and stopped."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(proc: subprocess.Popen, port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on port {port} within {timeout_s} s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@pytest.fixture
def null_server(tmp_path: Path) -> Iterator[str]:
    """``temscript-server --null`` from PyPI on a free loopback port; yields its URL."""
    port = free_port()
    code = ("from temscript.server import run_server; "
            f"run_server(['--null', '--host', '127.0.0.1', '-p', '{port}'])")
    log = open(tmp_path / "null_server.log", "w")  # the request log; a pipe could fill and stall it
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=log)
    try:
        _wait_listening(proc, port)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)
        log.close()


@pytest.fixture
def recording_null_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """temscript's MicroscopeServer over a move-recording NullMicroscope; yields (URL, moves file)."""
    port = free_port()
    moves = tmp_path / "moves.jsonl"
    log = open(tmp_path / "recording_server.log", "w")
    proc = subprocess.Popen([sys.executable, str(HERE / "recording_null_server.py"), str(port), str(moves)],
                            stdout=log, stderr=log)
    try:
        _wait_listening(proc, port)
        yield f"http://127.0.0.1:{port}", moves
    finally:
        _stop(proc)
        log.close()


def start_centred_sim(log: Path, z_nm: float, pixel_nm: float, *options: str) -> tuple[subprocess.Popen, int]:
    """``tiltstream sim serve`` (32^3, noise-free, CPU, one thread, ``options`` added) with a specimen ``z_nm``
    above the tilt axis, listening on a free port, and centred at the first angle (-70 deg) through the bridge
    as an operator would; returns the process (its output in ``log``) and its port. Stop it with :func:`_stop`."""
    import math

    from tiltstream.acquire.bridge import BridgeMicroscope, RetryPolicy

    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tiltstream", "sim", "serve", "--size", "32", "--noise", "none",
                                 "--device", "cpu", "--threads", "1", "--pixel-size-nm", str(pixel_nm),
                                 "--eucentric-offset-nm", str(z_nm), "--port", str(port), *options],
                                stdout=out, stderr=out)
    try:
        _wait_listening(proc, port, timeout_s=60)
        BridgeMicroscope(f"http://127.0.0.1:{port}", retry=RetryPolicy(attempts=1)).set_image_shift_m(
            (z_nm * 1e-9 * math.sin(math.radians(70.0)), 0.0))
    except BaseException:
        _stop(proc)
        raise
    return proc, port
