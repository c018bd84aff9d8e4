"""``tiltstream acquire`` as a subprocess against the real temscript server (PyPI ``--null`` backend).

The null microscope's alpha range is +-30 deg (NullMicroscope.STAGE_AB_RANGE = pi/6), so these runs use
``--min -25 --max 25``; it has no STEM detector, so ``--detector CCD`` (camera: 2048 px, binned 8, QUARTER
-> 64 x 64 int16). Moves are read back from ``recording_null_server.py`` (NullMicroscope subclass that
logs every commanded position, served by temscript's own MicroscopeServer).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tiltstream.acquire.scheme import grs_angle_deg
from tiltstream.acquire.session import RECORDS_FILE, read_session
from tiltstream.acquire.subscriber import FrameSubscriber
from tests.acquire.conftest import free_port

pytestmark = pytest.mark.timeout(60)
NULL_RUN = ["--detector", "CCD", "--min", "-25", "--max", "25", "--image-size", "QUARTER", "--binning", "8",
            "--pixel-size-nm", "1.0", "--beam-current-pA", "100"]


def _acquire(*args: str, **popen) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "tiltstream", "acquire", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **popen)


def _run(*args: str, timeout: float = 45) -> subprocess.CompletedProcess:
    proc = _acquire(*args)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_null_server_ccd_run_approaches_every_target_from_below(recording_null_server, tmp_path: Path) -> None:
    url, moves_file = recording_null_server
    done = _run("--bridge", url, "--count", "20", "--session", str(tmp_path / "s"), "--exposure-s", "0.001",
                *NULL_RUN)
    assert done.returncode == 0, done.stderr
    records = read_session(tmp_path / "s").records
    targets = [grs_angle_deg(i, -25.0, 25.0) for i in range(20)]
    np.testing.assert_allclose([r.target_deg for r in records], targets, atol=1e-9)
    assert records[0].shape == (64, 64) and records[0].dtype == "int16"
    commanded = [math.degrees(json.loads(line)["pos"]["a"]) for line in moves_file.read_text().splitlines()]
    assert all(-30.0 <= a <= 30.0 for a in commanded)
    position, remaining = 0.0, list(targets)
    for angle in commanded:
        if remaining and abs(angle - remaining[0]) < 1e-9:
            assert angle >= position, f"target {angle} approached from above ({position})"
            remaining.pop(0)
        position = angle
    assert remaining == []
    # what the null microscope reports wins over --pixel-size-nm 1.0 and --beam-current-pA 100: its CCD's
    # 24 um pixels x binning 8 / magnification 100000 = 1.92 nm, and a screen current of 1 nA
    session = read_session(tmp_path / "s")
    assert session.settings.pixel_size_nm == pytest.approx(1.92)
    assert session.settings.microscope["pixel_size_source"] == "microscope"
    assert session.settings.microscope["beam_current_pA"] == pytest.approx(1000.0)
    assert session.settings.microscope["beam_current_source"] == "microscope"
    # camera dose: 1000 pA * 1 ms / e / (64*64 px * 368.64 A^2) = 6.2415e6 e / 1509949 A^2 = 4.1336 e/A^2
    assert records[0].dose_e_per_A2 == pytest.approx(4.13359, rel=1e-4)


def test_kill_9_mid_session_then_resume(null_server: str, tmp_path: Path) -> None:
    """SIGKILL after >= 4 frames, then --resume: exactly 12 frames, indices 0..11, GRS targets."""
    session = tmp_path / "k"
    proc = _acquire("--bridge", null_server, "--count", "12", "--session", str(session), "--exposure-s", "0.2",
                    *NULL_RUN)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if (session / RECORDS_FILE).exists() and (session / RECORDS_FILE).read_bytes().count(b"\n") >= 4:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert 4 <= len(read_session(session).records) < 12
    done = _run("--bridge", null_server, "--session", str(session), "--resume", "--exposure-s", "0.001",
                *NULL_RUN)
    assert done.returncode == 0, done.stderr
    records = read_session(session).records
    assert [r.index for r in records] == list(range(12))
    np.testing.assert_allclose([r.target_deg for r in records], [grs_angle_deg(i, -25, 25) for i in range(12)],
                               atol=1e-9)


def test_subscriber_connecting_after_frame_10_gets_all_frames(null_server: str, tmp_path: Path) -> None:
    session = tmp_path / "late"
    endpoint, resend = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    proc = _acquire("--bridge", null_server, "--count", "16", "--session", str(session), "--exposure-s", "0.15",
                    "--publish", endpoint, "--resend", resend, *NULL_RUN)
    frames: list = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if (session / RECORDS_FILE).exists() and (session / RECORDS_FILE).read_bytes().count(b"\n") >= 11:
                break
            time.sleep(0.02)
        with FrameSubscriber(endpoint, resend_endpoint=resend) as subscriber:
            frames = list(subscriber.frames(timeout_s=15))
    finally:
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert [h.index for h, _ in frames] == list(range(16))
    assert all(a.shape == (64, 64) and a.dtype == np.int16 for _, a in frames)


def test_sigint_blanks_and_exits_130(recording_null_server, tmp_path: Path) -> None:
    url, _ = recording_null_server
    session = tmp_path / "int"
    proc = _acquire("--bridge", url, "--session", str(session), "--exposure-s", "0.1", *NULL_RUN)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if (session / RECORDS_FILE).exists() and (session / RECORDS_FILE).read_bytes().count(b"\n") >= 2:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "stopping after the current frame" in err
    from tiltstream.acquire.bridge import BridgeMicroscope
    assert BridgeMicroscope(url, timeout_s=5).beam_blanked() is True
    records = read_session(session).records
    assert [r.index for r in records] == list(range(len(records))) and len(records) >= 2


@pytest.mark.parametrize("case, args, message", [
    ("unreachable", ["--retries", "2", "--retry-backoff-s", "0"], "cannot reach the microscope bridge"),
    ("detector", ["--detector", "HAADF"], "detector 'HAADF' is not offered by the microscope"),
    ("limits", ["--min", "-70", "--max", "70"], "outside the holder limits [-30, 30] deg"),
    ("overshoot", ["--min", "-29", "--max", "25", "--backlash-deg", "2"],
     "min -29 deg minus backlash 2 deg = -31 deg is outside the holder limits [-30, 30] deg"),
    ("bad value", ["--count", "zero"], "invalid count = 'zero'"),
])
def test_bad_input_one_line_nonzero(null_server: str, tmp_path: Path, case: str, args: list, message: str) -> None:
    bridge = f"http://127.0.0.1:{free_port()}" if case == "unreachable" else null_server
    base = ["--bridge", bridge, "--count", "3", "--session", str(tmp_path / "bad"), "--exposure-s", "0.001",
            *NULL_RUN]
    done = _run(*base, *args)
    # an unreachable bridge is a microscope fault (exit 4), the rest bad input (exit 2)
    expected_code, marker = (4, "microscope fault:") if case == "unreachable" else (2, "error:")
    assert done.returncode == expected_code
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if marker in line]  # retry warnings may precede the error line
    assert errors == [lines[-1]] and message in lines[-1], done.stderr
    assert "Traceback" not in done.stderr
