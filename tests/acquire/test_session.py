"""The session store (tiltstream.acquire.session): torn-line tolerance, resume, and a writer killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tiltstream.errors import UserError
from tiltstream.acquire.session import (RECORDS_FILE, SessionSettings, SessionWriter, read_ground_truth, read_session,
                             write_ground_truth)


def _fields(index: int) -> dict:
    return dict(index=index, target_deg=-70.0 + index, angle_deg=-70.0 + index + 1e-3, time_s=2.0 * index,
                exposure_s=1.0, dose_e_per_A2=30.0)


def _frame(index: int) -> np.ndarray:
    return np.full((6, 7), index, dtype=np.float32)


def test_write_read_round_trip(tmp_path: Path) -> None:
    writer = SessionWriter.create(tmp_path / "s", SessionSettings(pixel_size_nm=0.44))
    for i in range(3):
        writer.append(_frame(i), **_fields(i))
    session = read_session(tmp_path / "s")
    assert [r.index for r in session.records] == [0, 1, 2]
    assert session.settings.pixel_size_nm == 0.44
    np.testing.assert_array_equal(session.load_frames()[:, 0, 0], [0, 1, 2])
    np.testing.assert_allclose(session.angles_deg, [-69.999, -68.999, -67.999], atol=1e-12)


def test_torn_last_line_is_ignored_then_overwritten_on_resume(tmp_path: Path) -> None:
    writer = SessionWriter.create(tmp_path / "s", SessionSettings())
    for i in range(3):
        writer.append(_frame(i), **_fields(i))
    records_path = tmp_path / "s" / RECORDS_FILE
    intact = records_path.read_bytes()
    with open(records_path, "ab") as handle:  # a crash mid-append of frame 3
        handle.write(b'{"index": 3, "file": "frames/000003.tif", "target_')
    assert [r.index for r in read_session(tmp_path / "s").records] == [0, 1, 2]
    resumed = SessionWriter.resume(tmp_path / "s")
    assert records_path.read_bytes() == intact
    assert resumed.next_index == 3
    resumed.append(_frame(3), **_fields(3))
    lines = records_path.read_text().splitlines()
    assert len(lines) == 4 and all(line.startswith('{"index":') for line in lines)
    assert [r.index for r in read_session(tmp_path / "s").records] == [0, 1, 2, 3]


def test_corruption_before_the_last_line_is_an_error(tmp_path: Path) -> None:
    writer = SessionWriter.create(tmp_path / "s", SessionSettings())
    for i in range(2):
        writer.append(_frame(i), **_fields(i))
    path = tmp_path / "s" / RECORDS_FILE
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("garbage\n" + "".join(lines))
    with pytest.raises(UserError, match="line 1 is not a valid frame record"):
        read_session(tmp_path / "s")


def test_create_refuses_existing_session_and_append_refuses_gap(tmp_path: Path) -> None:
    writer = SessionWriter.create(tmp_path / "s", SessionSettings())
    with pytest.raises(UserError, match="--resume"):
        SessionWriter.create(tmp_path / "s", SessionSettings())
    with pytest.raises(UserError, match="does not continue the session"):
        writer.append(_frame(1), **_fields(1))
    with pytest.raises(UserError, match="not a session"):
        read_session(tmp_path / "nothing")


def test_ground_truth_round_trip(tmp_path: Path) -> None:
    volumes = np.random.default_rng(0).random((3, 4, 5, 6)).astype(np.float32)
    write_ground_truth(tmp_path, volumes, np.array([0.0, 1.5, 3.0]))
    got, times = read_ground_truth(tmp_path)
    np.testing.assert_array_equal(got, volumes)
    np.testing.assert_array_equal(times, [0.0, 1.5, 3.0])


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from tiltstream.acquire.session import SessionSettings, SessionWriter
    path, count = sys.argv[1], int(sys.argv[2])
    writer = SessionWriter.create(path, SessionSettings())
    frame = np.zeros((64, 64), np.float32)
    for i in range(count):
        writer.append(frame + i, index=i, target_deg=float(i), angle_deg=float(i), time_s=float(i),
                      exposure_s=0.0, dose_e_per_A2=0.0)
""")


@pytest.mark.timeout(60)
def test_sigkill_mid_session_then_resume_gives_exactly_count_contiguous(tmp_path: Path) -> None:
    """A writer killed by SIGKILL after >= 5 records, resumed to 40: indices 0..39, each once, files intact."""
    count = 40
    path = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "1000000"])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            records = path / RECORDS_FILE
            if records.exists() and records.read_bytes().count(b"\n") >= 5:
                break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    writer = SessionWriter.resume(path)
    assert 5 <= writer.next_index < count
    for i in range(writer.next_index, count):
        writer.append(np.zeros((64, 64), np.float32) + i, index=i, target_deg=float(i), angle_deg=float(i),
                      time_s=float(i), exposure_s=0.0, dose_e_per_A2=0.0)
    session = read_session(path)
    assert [r.index for r in session.records] == list(range(count))
    frames = session.load_frames()
    np.testing.assert_array_equal(frames[:, 0, 0], np.arange(count, dtype=np.float32))
