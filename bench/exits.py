"""Benchmark: seconds from SIGINT/SIGTERM to the exit of each long-running command (target: 2 s).

Each command runs as a real ``tiltstream`` process, as in tests/live/test_signals.py: ``sim serve``,
``acquire`` against a simulator, ``live`` waiting for frames, ``view --connect`` drawing, and ``demo``
(16^3, 40 frames) once it acquires and trains. Run it alone on the machine (nothing else busy):

    QT_QPA_PLATFORM=offscreen python bench/exits.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(log: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    return subprocess.Popen([sys.executable, "-m", "tiltstream", *args], stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, env=env)


def _wait(ready: Callable[[], bool], proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"not ready: exit {proc.poll()}")
        time.sleep(0.05)


def _records(session: Path) -> int:
    path = session / "frames.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _one(name: str, sig: signal.Signals, work: Path, bridge: str) -> float:
    """Start ``name``, wait until it works, signal it; seconds to its exit."""
    log = work / f"{name}.log"
    if name == "sim serve":
        proc = _start(log, "sim", "serve", "--size", "16", "--steps", "2", "--port", "0", "--device", "cpu")
        _wait(lambda: "on http://" in log.read_text(), proc)
    elif name == "acquire":
        proc = _start(log, "acquire", "--bridge", bridge, "--session", str(work / "s"), "--count", "400",
                      "--dwell-time-s", "1e-5", "--pixel-size-nm", "0.5")
        _wait(lambda: _records(work / "s") >= 2, proc)
    elif name == "live":
        proc = _start(log, "live", "--connect", f"tcp://127.0.0.1:{_free_port()}", "--out", str(work / "run"),
                      "--headless", "--device", "cpu")
        _wait(lambda: (work / "run" / "endpoints.json").exists(), proc)
    elif name == "view":
        proc = _start(log, "view", "--connect", f"tcp://127.0.0.1:{_free_port()}", "--snapshots",
                      str(work / "snaps"), "--snapshot-interval-s", "0.2")
        _wait(lambda: any((work / "snaps").glob("*.png")), proc)
    else:
        proc = _start(log, "demo", "--out", str(work / "demo"), "--size", "16", "--frames", "40", "--threads", "1")
        _wait(lambda: _records(work / "demo" / "session") >= 2, proc)
        time.sleep(1.0)
    sent = time.monotonic()
    proc.send_signal(sig)
    proc.wait(60)
    return time.monotonic() - sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        sim = _start(Path(tmp) / "sim.log", "sim", "serve", "--size", "16", "--steps", "4", "--mode", "instant",
                     "--port", str(port), "--device", "cpu")
        _wait(lambda: "on http://" in (Path(tmp) / "sim.log").read_text(), sim)
        try:
            print("command      signal   median s   max s   (runs)")
            for name in ("sim serve", "acquire", "live", "view", "demo"):
                for sig in (signal.SIGINT, signal.SIGTERM):
                    times = []
                    for k in range(args.repeats):
                        work = Path(tmp) / f"{name.replace(' ', '_')}_{sig.name}_{k}"
                        work.mkdir()
                        times.append(_one(name, sig, work, f"http://127.0.0.1:{port}"))
                    print(f"{name:12s} {sig.name:8s} {statistics.median(times):8.2f} {max(times):7.2f}   "
                          f"({len(times)})", flush=True)
        finally:
            sim.terminate()
            sim.wait(10)


if __name__ == "__main__":
    main()
