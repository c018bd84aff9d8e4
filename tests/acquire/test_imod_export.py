"""IMOD/SerialEM export: the stack, pixel size, .rawtlt angles and .mdoc sections read back."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from tiltstream.acquire.session import SessionSettings, SessionWriter, StagePosition


def _session(path: Path) -> None:
    writer = SessionWriter.create(path, SessionSettings(pixel_size_nm=0.44))
    for i, angle in enumerate([-70.0, 16.5248, -36.9505]):
        writer.append(np.full((6, 8), i, np.int16), index=i, target_deg=angle, angle_deg=angle + 1e-4,
                      time_s=30.0 * i, exposure_s=1.68, dose_e_per_A2=30.9,
                      temperature_C=220.0 if i else None, stage=StagePosition(x=1e-6, y=2e-6, z=-3e-7))


@pytest.mark.parametrize("order, expected", [("acquisition", [0, 1, 2]), ("angle", [0, 2, 1])])
def test_export_cli_writes_stack_rawtlt_mdoc(tmp_path: Path, order: str, expected: list) -> None:
    _session(tmp_path / "s")
    done = subprocess.run([sys.executable, "-m", "tiltstream", "export", "--session", str(tmp_path / "s"),
                           "--imod", str(tmp_path / "out" / "series"), "--order", order],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    with mrcfile.open(tmp_path / "out" / "series.mrc") as mrc:
        assert mrc.data.shape == (3, 6, 8) and mrc.data.dtype == np.int16
        assert mrc.is_image_stack()
        assert float(mrc.voxel_size.x) == pytest.approx(4.4, abs=1e-5)
        np.testing.assert_array_equal(mrc.data[:, 0, 0], expected)
    angles = [float(x) for x in (tmp_path / "out" / "series.rawtlt").read_text().split()]
    all_angles = [-69.9999, 16.5249, -36.9504]
    assert angles == [all_angles[i] for i in expected]
    mdoc = (tmp_path / "out" / "series.mrc.mdoc").read_text()
    assert re.findall(r"\[ZValue = (\d+)\]", mdoc) == ["0", "1", "2"]
    assert re.findall(r"TiltAngle = (\S+)", mdoc) == [f"{all_angles[i]:.4f}" for i in expected]
    assert mdoc.count("ExposureDose = 30.9") == 3 and "PixelSpacing = 4.4" in mdoc
    assert re.search(r"DateTime = \d\d-[A-Z][a-z]{2}-\d\d  \d\d:\d\d:\d\d", mdoc)
    assert "StagePosition = 1.0000 2.0000" in mdoc and mdoc.count("Temperature = 220") == 2


def test_export_of_missing_session_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "tiltstream", "export", "--session", str(tmp_path / "none"),
                           "--imod", str(tmp_path / "o")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "is not a session" in done.stderr
