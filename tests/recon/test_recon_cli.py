"""``recon import``, ``recon sirt`` and ``recon metrics`` end to end on real files; bad input is one line."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from tiltstream.acquire.session import SessionSettings, SessionWriter, read_session, write_ground_truth
from tiltstream.cli import main
from tiltstream.recon.projector import ParallelProjector
from tiltstream.recon.sirt import moving_window_sirt
from tiltstream.recon.stack_import import read_angles_csv
from tiltstream.recon.volume_io import read_volumes, write_volumes

N = 16
COUNT = 10
GOLDEN = (1 + 5**0.5) / 2


def _series() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A growing blob (COUNT, N, N, N), its GRS angles (deg), times (s) and one frame per step."""
    z, y, x = np.mgrid[:N, :N, :N] - (N - 1) / 2.0
    radius = np.sqrt((x - 1) ** 2 + z**2 + (y / 1.3) ** 2)
    truth = np.stack([1 / (1 + np.exp(radius - 3 - 0.2 * t)) for t in range(COUNT)]).astype(np.float32)
    angles = np.array([((i * GOLDEN * 140) % 140) - 70 for i in range(COUNT)])
    times = 15.0 + 30.0 * np.arange(COUNT)
    frames = np.stack([ParallelProjector([a], (N, N, N))(v)[0] for a, v in zip(angles, truth)])
    return truth, angles, times, frames


@pytest.fixture
def imported(tmp_path):
    truth, angles, times, frames = _series()
    tifffile.imwrite(tmp_path / "stack.tif", frames, photometric="minisblack")
    with open(tmp_path / "angles.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["angle_deg", "time_s"])
        writer.writerows(zip(angles, times))
    code = main(["recon", "import", "--stack", str(tmp_path / "stack.tif"), "--angles",
                 str(tmp_path / "angles.csv"), "--out", str(tmp_path / "session"), "--pixel-size-nm", "0.87"])
    assert code == 0
    write_volumes(tmp_path / "truth.tif", truth, times)
    return tmp_path, truth, angles, times, frames


def test_import_writes_a_session(imported):
    tmp_path, _, angles, times, frames = imported
    session = read_session(tmp_path / "session")
    np.testing.assert_allclose(session.angles_deg, angles, atol=1e-9)
    np.testing.assert_allclose(session.times_s, times, atol=1e-9)
    np.testing.assert_array_equal(session.load_frames(), frames)
    assert session.settings.pixel_size_nm == 0.87 and session.settings.scheme["kind"] == "imported"


def test_sirt_then_metrics(imported, capsys):
    tmp_path, truth, angles, times, frames = imported
    code = main(["recon", "sirt", "--session", str(tmp_path / "session"), "--out", str(tmp_path / "sirt.tif"),
                 "--window", "4", "--iterations", "5", "--device", "cpu"])
    assert code == 0
    volumes, got_times = read_volumes(tmp_path / "sirt.tif", require_times=True)
    np.testing.assert_allclose(got_times, times)
    expected = moving_window_sirt(frames, angles, (N, N, N), window=4, iterations=5)
    np.testing.assert_allclose(volumes, expected, rtol=1e-5, atol=1e-6)
    assert "recon sirt: volume 10/10" in capsys.readouterr().err

    code = main(["recon", "metrics", "--volumes", str(tmp_path / "sirt.tif"), "--reference",
                 str(tmp_path / "truth.tif"), "--out", str(tmp_path / "m.csv")])
    assert code == 0
    with open(tmp_path / "m.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == COUNT and float(rows[3]["time_s"]) == times[3]
    assert all(0 < float(r["rmse_percent"]) < 50 and 0 < float(r["ssim"]) <= 1 for r in rows)
    err = capsys.readouterr().err
    assert "rmse_percent" in err and "mean" in err

    assert main(["recon", "metrics", "--volumes", str(tmp_path / "truth.tif"), "--reference",
                 str(tmp_path / "truth.tif")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("index,time_s,rmse_percent,rmse_paper,ssim") and len(table) == COUNT + 1
    assert float(table[1].split(",")[2]) == 0.0


def test_metrics_against_a_simulated_session(imported, capsys):
    """--reference SESSION uses its ground_truth.tif and its pixel size for the redistribution (nm^3)."""
    tmp_path, truth, _, times, _ = imported
    write_ground_truth(tmp_path / "session", truth, times)
    moved = truth.copy()
    moved[1:] = truth[:1]  # a series that never changes: redistribution 0, unlike the truth's
    write_volumes(tmp_path / "static.tif", moved, times)
    assert main(["recon", "metrics", "--volumes", str(tmp_path / "static.tif"), "--reference",
                 str(tmp_path / "session"), "--out", str(tmp_path / "m.csv")]) == 0
    with open(tmp_path / "m.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["redistribution_nm3"] == "" and rows[0]["redistribution_ref_nm3"] == ""
    assert all(float(r["redistribution_nm3"]) == 0.0 for r in rows[1:])
    voxels = sum(float(r["redistribution_ref_nm3"]) for r in rows[1:]) / 0.87**3  # the truth grows
    assert voxels > 0 and voxels == pytest.approx(round(voxels), abs=1e-6)  # whole voxels of 0.87 nm
    assert "voxel 0.87 nm" in capsys.readouterr().err


def _one_line_error(capsys, argv, fragment):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0] and fragment in err[0], err


def test_bad_input_is_one_line(tmp_path, capsys, imported):
    base, truth, angles, times, frames = imported
    capsys.readouterr()  # the fixture's own output
    _one_line_error(capsys, ["recon", "sirt", "--session", str(tmp_path / "nope"), "--out", "x.tif"],
                    "does not exist")
    SessionWriter.create(tmp_path / "empty", SessionSettings())
    _one_line_error(capsys, ["recon", "sirt", "--session", str(tmp_path / "empty"), "--out", "x.tif"],
                    "has no frames")
    _one_line_error(capsys, ["recon", "sirt", "--session", str(base / "session"), "--out", "x.tif",
                             "--window", "0"], "window")
    write_volumes(tmp_path / "short.tif", truth[:3], times[:3])
    _one_line_error(capsys, ["recon", "metrics", "--volumes", str(tmp_path / "short.tif"), "--reference",
                             str(base / "truth.tif")], "must match")
    bad = frames.copy()
    bad[2, 3, 4] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", bad, photometric="minisblack")
    _one_line_error(capsys, ["recon", "import", "--stack", str(tmp_path / "nan.tif"), "--angles",
                             str(base / "angles.csv"), "--out", str(tmp_path / "s2")], "frame(s) [2]")
    (tmp_path / "few.csv").write_text("angle_deg\n0\n10\n")
    _one_line_error(capsys, ["recon", "import", "--stack", str(base / "stack.tif"), "--angles",
                             str(tmp_path / "few.csv"), "--out", str(tmp_path / "s3")], "lists 2 angles")
    (tmp_path / "nan.csv").write_text("angle_deg,time_s\n0,0\nnan,1\n")
    _one_line_error(capsys, ["recon", "import", "--stack", str(base / "stack.tif"), "--angles",
                             str(tmp_path / "nan.csv"), "--out", str(tmp_path / "s4")], "NaN")
    tifffile.imwrite(tmp_path / "flat.tif", frames[0])
    _one_line_error(capsys, ["recon", "import", "--stack", str(tmp_path / "flat.tif"), "--angles",
                             str(base / "angles.csv"), "--out", str(tmp_path / "s5")], "(n, ny, nx)")
    _one_line_error(capsys, ["recon", "import", "--stack", str(base / "stack.tif"), "--angles",
                             str(base / "angles.csv"), "--out", str(base / "session")], "already exists")


def test_angles_csv_without_header(tmp_path):
    (tmp_path / "a.csv").write_text("-70.0, 0.5\n12.5, 30.5\n")
    angles, times = read_angles_csv(tmp_path / "a.csv")
    assert angles.tolist() == [-70.0, 12.5] and times.tolist() == [0.5, 30.5]
    (tmp_path / "b.csv").write_text("angle_deg\n5\n")
    assert read_angles_csv(tmp_path / "b.csv")[1] is None


@pytest.mark.timeout(60)
def test_subprocess_exit_code_and_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tiltstream", "recon", "metrics", "--volumes",
                             str(tmp_path / "missing.tif"), "--reference", str(tmp_path / "missing.tif")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "does not exist" in result.stderr
