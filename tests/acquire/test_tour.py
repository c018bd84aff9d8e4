"""The README tour's ``sim serve`` and ``acquire`` commands, as written there, give frames a reconstruction can use.

The two command lines are read from README.md's tour; only the port, the session, the stream endpoint and
``--count`` (20 of the tour's 60, for time) are changed. Both run as subprocesses on loopback.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.acquire.conftest import _stop, _wait_listening, free_port
from tiltstream.acquire.session import read_session
from tiltstream.recon.sirt import sirt
from tiltstream.simulator.phantoms import make_phantom
from tiltstream.simulator.settings import SimSettings

pytestmark = pytest.mark.timeout(240)
README = Path(__file__).resolve().parents[2] / "README.md"
COUNT = 20
# SIRT (30 iterations, non-negative) of 20 tour frames against the phantom: 0.87 measured with the tour's
# defaults (24 e/A^2 per frame); 0.32 with the old 0.08 e/A^2 (98 % empty frames, a streaked volume).
MIN_CORRELATION = 0.7


def _tour_command(prefix: str) -> list[str]:
    """The README tour's command line that starts with ``prefix`` (comment cut off), as argv after ``tiltstream``."""
    tour = README.read_text().split("## A tour", 1)[1].split("\n## ", 1)[0]
    lines = [line.split("#", 1)[0].strip() for line in tour.splitlines()]
    found = [line for line in lines if line.startswith(prefix)]
    assert len(found) == 1, f"the tour has {len(found)} lines starting with {prefix!r}"
    return shlex.split(found[0])[1:]


def _replace(argv: list[str], option: str, value: str) -> list[str]:
    """``argv`` with ``option``'s value replaced (or the option added)."""
    if option in argv:
        at = argv.index(option)
        return [*argv[:at + 1], value, *argv[at + 2:]]
    return [*argv, option, value]


@pytest.mark.slow
def test_the_tour_records_the_true_metadata_and_frames_sirt_can_use(tmp_path: Path) -> None:
    port = free_port()
    serve = _replace(_tour_command("tiltstream sim serve"), "--port", str(port))
    acquire = _tour_command("tiltstream acquire")
    for option, value in (("--bridge", f"http://127.0.0.1:{port}"), ("--count", str(COUNT)),
                          ("--session", str(tmp_path / "rod")), ("--publish", f"tcp://127.0.0.1:{free_port()}")):
        assert option in acquire, f"the tour's acquire line has no {option}"
        acquire = _replace(acquire, option, value)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(tmp_path / "sim.log", "w") as sim_log:
        sim = subprocess.Popen([sys.executable, "-m", "tiltstream", *serve], stdout=sim_log, stderr=sim_log, env=env)
        try:
            _wait_listening(sim, port, timeout_s=60)
            done = subprocess.run([sys.executable, "-m", "tiltstream", *acquire], capture_output=True, text=True,
                                  env=env, timeout=180)
        finally:
            _stop(sim)
    assert done.returncode == 0, done.stderr[-2000:]
    for warning in ("mostly empty", "shot noise implies", "reports no pixel size", "reports no beam current"):
        assert warning not in done.stderr, done.stderr[-2000:]
    session = read_session(tmp_path / "rod")
    assert len(session.records) == COUNT
    values = dict(zip(serve[2::2], serve[3::2]))  # serve's options after "sim serve": --phantom nanorod ...
    defaults = SimSettings()
    # the recorded pixel size and dose are the simulator's own: 0.5 nm (acquire's configured 0.44 unused);
    # 60 pA x 1.6 us / e / (5 A)^2 = 24.0 e/A^2
    assert session.settings.pixel_size_nm == pytest.approx(defaults.pixel_size_nm)
    assert session.settings.microscope["pixel_size_source"] == "microscope"
    assert session.records[0].dose_e_per_A2 == pytest.approx(23.97, rel=1e-3)
    frames = np.stack([session.load_frame(record) for record in session.records])
    size = int(values["--size"])
    volume = sirt(frames, [r.angle_deg for r in session.records], (size, size, size), iterations=30)
    truth = make_phantom(values["--phantom"], size, defaults.steps, seed=defaults.seed, device="cpu")
    # the run lasts about 25 s of wall time, 125 s of specimen time: phantom steps 0..6 (21 s per step)
    correlation = np.corrcoef(volume.ravel(), truth[:7].mean(axis=0).ravel())[0, 1]
    assert correlation > MIN_CORRELATION, correlation
