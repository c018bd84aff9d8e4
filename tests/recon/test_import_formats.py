"""``recon import SOURCE`` on small files written here: MRC + .rawtlt, SerialEM stack + .mdoc, the export
round trip, and the bad inputs that end in one line naming the file and the value."""

from __future__ import annotations

import json
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from tiltstream.acquire.imod_export import export_imod
from tiltstream.acquire.session import SessionSettings, SessionWriter, read_session
from tiltstream.cli import main

ANGLES = np.array([0.0, 12.5, -12.5, -25.0, 25.0])


def _stack(count: int = len(ANGLES), dtype: type = np.int16) -> np.ndarray:
    """Frames (count, 6, 8) whose first pixel is the frame index."""
    frames = np.random.default_rng(0).integers(0, 100, (count, 6, 8)).astype(dtype)
    frames[:, 0, 0] = np.arange(count)
    return frames


def _write_mrc(path: Path, frames: np.ndarray, voxel_A: float | None = 8.5) -> Path:
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(frames)
        mrc.set_image_stack()
        if voxel_A is not None:
            mrc.voxel_size = voxel_A
    return path


def _import(source: Path, out: Path, *extra: str) -> int:
    return main(["recon", "import", str(source), "--out", str(out), *extra])


def _one_line_error(capsys, argv: list[str], *fragments: str) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(f in err[0] for f in fragments), err
    return err[0]


def test_mrc_with_rawtlt_beside_it(tmp_path):
    frames = _stack()
    _write_mrc(tmp_path / "series.st", frames)
    (tmp_path / "series.rawtlt").write_text("".join(f"{a}\n" for a in ANGLES))
    assert _import(tmp_path / "series.st", tmp_path / "s") == 0
    session = read_session(tmp_path / "s")
    np.testing.assert_array_equal(session.angles_deg, ANGLES)
    np.testing.assert_array_equal(session.load_frames(), frames.astype(np.float32))
    assert session.settings.pixel_size_nm == pytest.approx(0.85)
    values_from = session.settings.model_extra["imported"]["values_from"]
    assert values_from["angles_deg"].startswith(str(tmp_path / "series.rawtlt"))
    assert "MRC header voxel size" in values_from["pixel_size_nm"]
    assert "frame_interval_s" in values_from["times_s"]  # the files record no times
    np.testing.assert_array_equal(session.times_s, 30.0 * np.arange(len(ANGLES)))


def test_angles_option_overrides_the_file_beside(tmp_path):
    _write_mrc(tmp_path / "series.ali", _stack())
    (tmp_path / "series.tlt").write_text("".join(f"{a + 1}\n" for a in ANGLES))
    (tmp_path / "mine.txt").write_text("".join(f"{a}\n\n" for a in ANGLES))
    assert _import(tmp_path / "series.ali", tmp_path / "s1") == 0
    np.testing.assert_array_equal(read_session(tmp_path / "s1").angles_deg, ANGLES + 1)
    assert _import(tmp_path / "series.ali", tmp_path / "s2", "--angles", str(tmp_path / "mine.txt")) == 0
    np.testing.assert_array_equal(read_session(tmp_path / "s2").angles_deg, ANGLES)


MDOC = """PixelSpacing = 5.4
ImageFile = tilts.mrc
ImageSize = 8 6
DataMode = 1

[T = SerialEM: test scope    30-Nov-15  15:21:30]

[T =     Tilt axis angle = 85.3, binning = 4  spot = 8  camera = 2]

"""


def _section(z: int, angle: float, when: str, dose: float) -> str:
    """A [ZValue] section with its keys in an unusual order."""
    return (f"[ZValue = {z}]\nDateTime = 30-Nov-15  {when}\nExposureDose = {dose}\nPixelSpacing = 5.4\n"
            f"TiltAngle = {angle}\nExposureTime = 0.8\n\n")


def test_serialem_stack_sorted_by_time(tmp_path):
    # written in the order 0, -3, +3; acquired 0, +3, -3 (the DateTime says so)
    frames = _stack(3)
    _write_mrc(tmp_path / "tilts.mrc", frames, voxel_A=None)
    (tmp_path / "tilts.mrc.mdoc").write_text(
        MDOC + _section(0, 0.001, "15:21:38", 2.0) + _section(1, -2.999, "15:24:24", 2.5)
        + _section(2, 3.001, "15:22:37", 3.0))
    assert _import(tmp_path / "tilts.mrc.mdoc", tmp_path / "s") == 0
    session = read_session(tmp_path / "s")
    np.testing.assert_allclose(session.angles_deg, [0.001, 3.001, -2.999])
    np.testing.assert_array_equal(session.times_s, [0.0, 59.0, 166.0])
    np.testing.assert_array_equal(session.load_frames()[:, 0, 0], [0, 2, 1])
    assert [r.dose_e_per_A2 for r in session.records] == [2.0, 3.0, 2.5]
    assert [r.exposure_s for r in session.records] == [0.8] * 3
    assert session.settings.pixel_size_nm == pytest.approx(0.54)
    assert session.settings.model_extra["tilt_axis_deg"] == 85.3
    imported = session.settings.model_extra["imported"]
    assert imported["details"]["frame_origins"] == ["tilts.mrc z=0", "tilts.mrc z=2", "tilts.mrc z=1"]
    assert "DateTime" in imported["values_from"]["times_s"] and "TiltAngle" in imported["values_from"]["angles_deg"]


def test_prior_record_dose_when_no_exposure_dose(tmp_path):
    _write_mrc(tmp_path / "t.mrc", _stack(3))
    sections = "".join(f"[ZValue = {z}]\nTiltAngle = {a}\nPriorRecordDose = {p}\n\n"
                       for z, a, p in [(0, 0, 0.0), (1, 3, 2.0), (2, -3, 5.0)])
    (tmp_path / "t.mdoc").write_text("PixelSpacing = 5.4\n\n" + sections)
    assert _import(tmp_path / "t.mrc", tmp_path / "s") == 0
    session = read_session(tmp_path / "s")
    assert [r.dose_e_per_A2 for r in session.records] == [2.0, 3.0, 3.0]
    assert "PriorRecordDose" in session.settings.model_extra["imported"]["values_from"]["dose_e_per_A2"]


def test_timestamp_and_section_pixel_spacing(tmp_path):
    # no global keys at all: the pixel size is the sections' own; TimeStamp (s) orders the frames
    _write_mrc(tmp_path / "t.mrc", _stack(3), voxel_A=None)
    sections = "".join(f"[ZValue = {z}]\nTimeStamp = {t}\nTiltAngle = {a}\nPixelSpacing = 3.3\n\n"
                       for z, a, t in [(0, 0, 7000.5), (1, 3, 7010.0), (2, -3, 7004.25)])
    (tmp_path / "t.mrc.mdoc").write_text(sections)
    assert _import(tmp_path / "t.mrc", tmp_path / "s") == 0
    session = read_session(tmp_path / "s")
    np.testing.assert_array_equal(session.times_s, [0.0, 3.75, 9.5])
    np.testing.assert_array_equal(session.angles_deg, [0, -3, 3])
    assert session.settings.pixel_size_nm == pytest.approx(0.33)


@pytest.mark.parametrize("order", ["acquisition", "angle"])
def test_export_round_trip(tmp_path, order):
    frames = np.random.default_rng(1).random((4, 6, 8)).astype(np.float32)
    angles = [-60.1234, 10.5, -20.25, 44.0]
    times = [1.5, 31.25, 61.125, 90.0]
    writer = SessionWriter.create(tmp_path / "orig", SessionSettings(pixel_size_nm=0.44))
    for i in range(4):
        writer.append(frames[i], index=i, target_deg=angles[i], angle_deg=angles[i], time_s=times[i],
                      exposure_s=1.68, dose_e_per_A2=30.9)
    mrc_path, _, _ = export_imod(tmp_path / "orig", tmp_path / "exp" / "series", order=order)
    assert _import(mrc_path, tmp_path / "back") == 0
    back = read_session(tmp_path / "back")
    np.testing.assert_array_equal(back.angles_deg, angles)  # acquisition order again, from the times
    np.testing.assert_array_equal(back.times_s, times)
    np.testing.assert_array_equal(back.load_frames(), frames)
    assert back.settings.pixel_size_nm == pytest.approx(0.44)
    assert [r.dose_e_per_A2 for r in back.records] == [30.9] * 4
    assert "TimeSinceStart" in back.settings.model_extra["imported"]["values_from"]["times_s"]


def test_session_json_is_plain_json(tmp_path):
    _write_mrc(tmp_path / "a.mrc", _stack())
    (tmp_path / "a.rawtlt").write_text("".join(f"{a}\n" for a in ANGLES))
    assert _import(tmp_path / "a.mrc", tmp_path / "s", "--pixel-size-nm", "0.3") == 0
    data = json.loads((tmp_path / "s" / "session.json").read_text())
    assert data["pixel_size_nm"] == 0.3 and "overrides" in data["imported"]["values_from"]["pixel_size_nm"]
    assert data["scheme"] == {"kind": "imported", "source": str(tmp_path / "a.mrc"), "count": len(ANGLES)}


def test_bad_sources_are_one_line(tmp_path, capsys):
    frames = _stack()
    _write_mrc(tmp_path / "bare.mrc", frames)
    _one_line_error(capsys, ["recon", "import", str(tmp_path / "bare.mrc"), "--out", str(tmp_path / "o1")],
                    "bare.mrc", "no tilt angles", "--angles")
    _write_mrc(tmp_path / "few.mrc", frames)
    (tmp_path / "few.rawtlt").write_text("".join(f"{a}\n" for a in ANGLES[:-1]))
    _one_line_error(capsys, ["recon", "import", str(tmp_path / "few.mrc"), "--out", str(tmp_path / "o2")],
                    "few.mrc", "angles_deg lists 4 values", "few.rawtlt", "5 frames")
    (tmp_path / "nanangle.rawtlt").write_text("0\nnan\n1\n2\n3\n")
    _write_mrc(tmp_path / "nanangle.mrc", frames)
    _one_line_error(capsys, ["recon", "import", str(tmp_path / "nanangle.mrc"), "--out", str(tmp_path / "o3")],
                    "nanangle.mrc", "angles_deg is NaN", "[1]")
    nan_frames = frames.astype(np.float32)
    nan_frames[3, 2, 2] = np.nan
    _write_mrc(tmp_path / "nan.mrc", nan_frames)
    (tmp_path / "nan.rawtlt").write_text("".join(f"{a}\n" for a in ANGLES))
    _one_line_error(capsys, ["recon", "import", str(tmp_path / "nan.mrc"), "--out", str(tmp_path / "o4")],
                    "nan.mrc", "frame(s) [3]", "NaN")
    whole = (tmp_path / "nan.mrc").read_bytes()
    (tmp_path / "cut.mrc").write_bytes(whole[:-40])
    (tmp_path / "cut.rawtlt").write_text("".join(f"{a}\n" for a in ANGLES))
    _one_line_error(capsys, ["recon", "import", str(tmp_path / "cut.mrc"), "--out", str(tmp_path / "o5")],
                    "cut.mrc", "truncated")
    _write_mrc(tmp_path / "short.mrc", frames)
    (tmp_path / "short.mrc.mdoc").write_text("PixelSpacing = 5.4\n\n" + "".join(
        f"[ZValue = {z}]\nTiltAngle = {a}\n\n" for z, a in enumerate(ANGLES[:3])))
    _one_line_error(capsys, ["recon", "import", str(tmp_path / "short.mrc"), "--out", str(tmp_path / "o6")],
                    "short.mrc.mdoc", "3 [ZValue] sections", "5 frames")
    (tmp_path / "series.xyz").write_text("")
    _one_line_error(capsys, ["recon", "import", str(tmp_path / "series.xyz"), "--out", str(tmp_path / "o7")],
                    "series.xyz", "'.xyz'", "allowed")
    _one_line_error(capsys, ["recon", "import", "--out", str(tmp_path / "o8")], "SOURCE, or --stack")
    _one_line_error(capsys, ["recon", "import", str(tmp_path / "short.mrc.mdoc"), "--angles",
                             str(tmp_path / "few.rawtlt"), "--out", str(tmp_path / "o9")], "applies to an MRC or TIFF")


def test_existing_session_does_not_suggest_resume(tmp_path, capsys):
    _write_mrc(tmp_path / "a.mrc", _stack())
    (tmp_path / "a.rawtlt").write_text("".join(f"{a}\n" for a in ANGLES))
    assert _import(tmp_path / "a.mrc", tmp_path / "s") == 0
    line = _one_line_error(capsys, ["recon", "import", str(tmp_path / "a.mrc"), "--out", str(tmp_path / "s")],
                           "already exists", "new or empty directory")
    assert "--resume" not in line


def test_emd_with_a_tilt_axis_in_degrees(tmp_path):
    # an EMD (NCEM flavour, as rosettasciio writes it) whose first axis is the tilt in degrees
    from rsciio.emd import file_writer

    frames = np.random.default_rng(2).random((5, 6, 7)).astype(np.float32)
    axes = [{"name": "tilt", "size": 5, "offset": -20.0, "scale": 10.0, "units": "deg", "navigate": True},
            {"name": "y", "size": 6, "offset": 0.0, "scale": 0.025, "units": "µm", "navigate": False},
            {"name": "x", "size": 7, "offset": 0.0, "scale": 0.025, "units": "µm", "navigate": False}]
    metadata = {"General": {"title": "t"}, "Signal": {}}
    file_writer(str(tmp_path / "t.emd"), {"data": frames, "axes": axes, "metadata": metadata, "original_metadata": {}})
    assert _import(tmp_path / "t.emd", tmp_path / "s") == 0
    session = read_session(tmp_path / "s")
    np.testing.assert_allclose(session.angles_deg, [-20, -10, 0, 10, 20], atol=1e-12)
    np.testing.assert_array_equal(session.load_frames(), frames)
    assert session.settings.pixel_size_nm == pytest.approx(25.0)
    assert "navigation axis 'tilt'" in session.settings.model_extra["imported"]["values_from"]["angles_deg"]
