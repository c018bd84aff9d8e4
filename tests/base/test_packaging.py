"""The distribution installs one import name: a wheel in a fresh venv adds ``tiltstream`` and its script only.

The wheel is built from a copy of this checkout's sources (``pip wheel --no-deps --no-build-isolation``,
setuptools from the ``[test]`` extra; a copy, so no stale ``build/`` of an earlier build leaks into it) and installed with ``--no-deps`` into a new virtual environment; what it adds to
site-packages and bin/ is compared with what was there before. ``python -m tiltstream --help`` then runs
from that venv (its dependencies reached through ``PYTHONPATH`` from this interpreter's site-packages,
which hold no ``tiltstream`` of their own: the editable install is a finder, not a folder).
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(240)

REPO = Path(__file__).resolve().parents[2]


def _listing(directory: Path) -> set[str]:
    return {path.name for path in directory.iterdir()}


def test_wheel_adds_only_tiltstream(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                                                 "__pycache__", ".pytest_cache", "tiltstream-demo"))
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(source)], capture_output=True, text=True, timeout=180)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = wheels.glob("tiltstream-*.whl")

    env_dir = tmp_path / "fresh"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    (site_packages,) = (env_dir / "lib").glob("python*/site-packages")
    before_site, before_bin = _listing(site_packages), _listing(env_dir / "bin")

    done = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    added_site = _listing(site_packages) - before_site
    added_bin = _listing(env_dir / "bin") - before_bin
    assert {name for name in added_site if not name.endswith(".dist-info")} == {"tiltstream"}
    assert [name for name in added_site if name.endswith(".dist-info")] == [wheel.name.split("-py")[0] + ".dist-info"]
    assert added_bin == {"tiltstream"}
    installed = site_packages / "tiltstream"
    assert {p.name for p in installed.iterdir() if p.is_dir() and p.name != "__pycache__"} == {
        "acquire", "recon", "live", "simulator"}

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join(site.getsitepackages())
    helped = subprocess.run([str(python), "-c", "import tiltstream, tiltstream.recon; print(tiltstream.__file__)"],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert Path(helped.stdout.strip()).is_relative_to(site_packages)
    helped = subprocess.run([str(python), "-m", "tiltstream", "--help"], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=60)
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert "recon" in helped.stdout and "acquire" in helped.stdout
