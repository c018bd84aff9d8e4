"""The core install (``pip install tiltstream``, no extras) runs the microscope-side commands without torch or Qt.

Every command here runs as a real ``tiltstream`` process whose interpreter cannot import torch, kornia,
scikit-image, PySide6 or pyqtgraph: a ``sitecustomize`` on ``PYTHONPATH`` puts an import blocker first
on ``sys.meta_path`` that raises ``ModuleNotFoundError`` for them, exactly as a missing package would.
``scheme`` writes a plan, ``acquire`` records a session through temscript's own null microscope
(``temscript-server --null``), ``export`` writes the IMOD stack, ``replay`` streams the session to a
subscriber; a command that needs an extra says which, in one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tiltstream.acquire.session import read_session
from tiltstream.acquire.subscriber import FrameSubscriber
from tests.acquire.conftest import free_port

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
BLOCKED = ("torch", "kornia", "skimage", "PySide6", "pyqtgraph")
BLOCKER = f'''
"""Test import blocker: the optional dependencies of tiltstream cannot be imported in this interpreter."""
import sys

BLOCKED = {set(BLOCKED)!r}


class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the core-install test)", name=name)
        return None


sys.meta_path.insert(0, _Blocker())
'''
# the NullMicroscope has a +-30 deg holder and a CCD (2048 px, QUARTER, binned 8 -> 64 x 64 int16)
NULL_RUN = ["--detector", "CCD", "--min", "-25", "--max", "25", "--image-size", "QUARTER", "--binning", "8",
            "--pixel-size-nm", "1.0", "--beam-current-pA", "100", "--exposure-s", "0.001"]


@pytest.fixture(scope="module")
def core_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a core-install process: the blocker's ``sitecustomize`` first on the path."""
    blocker_dir = tmp_path_factory.mktemp("blocker")
    (blocker_dir / "sitecustomize.py").write_text(BLOCKER)
    env = {k: v for k, v in os.environ.items() if k != "TILTSTREAM_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join([str(blocker_dir), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _tiltstream() -> list[str]:
    """The installed console script when there is one (what a user runs), else the dispatcher module."""
    script = Path(sys.executable).with_name("tiltstream.exe" if os.name == "nt" else "tiltstream")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "tiltstream"]


def _run(env: dict[str, str], *args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*_tiltstream(), *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout)


@pytest.mark.parametrize("module", BLOCKED)
def test_the_blocker_really_blocks(core_env: dict[str, str], module: str, tmp_path: Path) -> None:
    """Without this the other tests would prove nothing."""
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True,
                          env=core_env, cwd=tmp_path, timeout=60)
    assert done.returncode != 0 and "blocked by the core-install test" in done.stderr


def test_help_lists_every_command(core_env: dict[str, str], tmp_path: Path) -> None:
    """Registering all subcommands (recon, sim, live included) imports nothing heavy."""
    done = _run(core_env, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for command in ("scheme", "acquire", "export", "replay", "sim", "recon", "live", "view", "demo"):
        assert command in done.stdout


def test_scheme_writes_a_plan(core_env: dict[str, str], tmp_path: Path) -> None:
    done = _run(core_env, "scheme", "--count", "12", "--min", "-60", "--max", "60", "--format", "json",
                "--out", "plan.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    plan = json.loads((tmp_path / "plan.json").read_text())
    targets = [frame["target_deg"] for frame in plan["summary"]["frames"]]
    assert len(targets) == 12 and targets[0] == -60.0 and all(-60.0 <= t <= 60.0 for t in targets)


def test_acquire_export_and_replay_without_torch_or_qt(core_env: dict[str, str], null_server: str,
                                                      tmp_path: Path) -> None:
    """A session recorded through the real temscript null server, exported to IMOD, and streamed again."""
    session = tmp_path / "session"
    done = _run(core_env, "acquire", "--bridge", null_server, "--count", "5", "--session", str(session),
                *NULL_RUN, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    recorded = read_session(session)
    assert [r.index for r in recorded.records] == [0, 1, 2, 3, 4]
    assert recorded.records[0].shape == (64, 64)

    done = _run(core_env, "export", "--session", str(session), "--imod", str(tmp_path / "imod" / "run"),
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "imod" / "run.rawtlt").read_text().split()) == 5
    assert (tmp_path / "imod" / "run.mrc").stat().st_size > 5 * 64 * 64 * 2

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    replay = subprocess.Popen([*_tiltstream(), "replay", "--session", str(session), "--publish", endpoint,
                               "--resend", "", "--speed", "1000", "--wait-timeout-s", "30", "--linger-s", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=core_env, cwd=tmp_path)
    try:
        with FrameSubscriber(endpoint) as subscriber:
            frames = list(subscriber.frames(timeout_s=30))
        out, err = replay.communicate(timeout=30)
    finally:
        if replay.poll() is None:
            replay.kill()
            replay.wait(10)
    assert replay.returncode == 0, err
    assert [header.index for header, _ in frames] == [0, 1, 2, 3, 4]
    for (header, frame), record in zip(frames, recorded.records):
        np.testing.assert_array_equal(frame, recorded.load_frame(record))
        assert header.angle_deg == record.angle_deg


@pytest.mark.parametrize("args, expected", [
    (("recon", "train", "--session", "s", "--out", "r"),
     'tiltstream recon train: needs the [recon] extra (torch is not installed): pip install "tiltstream[recon]"'),
    (("sim", "serve", "--port", "0"),
     'tiltstream sim serve: needs the [sim] extra (torch is not installed): pip install "tiltstream[sim]"'),
    (("view", "--headless", "--snapshots", "snaps"),
     'tiltstream view: needs the [live] extra (pyqtgraph is not installed): pip install "tiltstream[live]"'),
])
def test_a_missing_extra_is_one_line_naming_it(core_env: dict[str, str], tmp_path: Path, args: tuple[str, ...],
                                               expected: str) -> None:
    done = _run(core_env, *args, cwd=tmp_path)
    assert done.returncode == 3
    assert done.stderr.splitlines() == [expected]
    assert "Traceback" not in done.stderr and done.stdout == ""
