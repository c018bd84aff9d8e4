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
