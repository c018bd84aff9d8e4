"""Volume files carry their voxel size and times where Fiji and IMOD users look: TIFF resolution and ImageJ
metadata, MRC voxel size; a run's voxel size follows its session's pixel size through preprocessing."""

from __future__ import annotations

import json

import mrcfile
import numpy as np
import pytest
import tifffile

from tiltstream.acquire.session import SessionSettings, SessionWriter
from tiltstream.cli import main
from tiltstream.recon.projector import project_volume
from tiltstream.recon.run_dir import RunDescription
from tiltstream.recon.run_voxel import preprocess_pixel_scale, run_voxel_size_nm
from tiltstream.recon.volume_io import read_volumes, recorded_scale, times_path, write_volumes


def test_tiff_carries_voxel_size_and_times(tmp_path):
    volumes = np.random.default_rng(0).random((3, 2, 4, 5)).astype(np.float32)
    path = write_volumes(tmp_path / "v.tif", volumes, [0.0, 30.0, 60.0], voxel_size_nm=3.36)
    with tifffile.TiffFile(path) as tif:
        meta = tif.imagej_metadata
        x_num, x_den = tif.pages[0].tags["XResolution"].value
        y_num, y_den = tif.pages[0].tags["YResolution"].value
    assert meta["unit"] == "nm" and meta["spacing"] == pytest.approx(3.36)
    assert x_den / x_num == pytest.approx(3.36, rel=1e-6) and y_den / y_num == pytest.approx(3.36, rel=1e-6)
    assert json.loads(meta["Properties"]["time_s"]) == [0.0, 30.0, 60.0]
    assert meta["finterval"] == 30.0 and meta["tunit"] == "s" and meta["Labels"][2] == "t = 30 s, z = 0"
    assert recorded_scale(path)[0] == pytest.approx(3.36)
    times_path(path).unlink()  # the file alone still knows its times
    got, times = read_volumes(path, require_times=True)
    np.testing.assert_array_equal(got, volumes)
    assert times.tolist() == [0.0, 30.0, 60.0]


def test_uneven_times_have_no_frame_interval(tmp_path):
    path = write_volumes(tmp_path / "v.tif", np.zeros((3, 1, 2, 2)), [0.0, 1.0, 5.0])
    with tifffile.TiffFile(path) as tif:
        assert "finterval" not in tif.imagej_metadata and tif.imagej_metadata["unit"] == "pixel"
    assert recorded_scale(path) == (None, pytest.approx([0.0, 1.0, 5.0]))


def test_mrc_carries_voxel_size(tmp_path):
    path = write_volumes(tmp_path / "v.mrc", np.zeros((2, 3, 4, 5)), [0.0, 1.0], voxel_size_nm=0.87)
    with mrcfile.open(path) as mrc:
        assert mrc.is_volume_stack()
        for axis in ("x", "y", "z"):
            assert float(getattr(mrc.voxel_size, axis)) == pytest.approx(8.7, rel=1e-6)  # Angstrom
        assert any("_times.csv" in label for label in mrc.get_labels())
    assert recorded_scale(path)[0] == pytest.approx(0.87, rel=1e-6)


def test_preprocess_pixel_scale():
    assert preprocess_pixel_scale(None) == 1.0
    report = {"input_shape": [10, 256, 256], "config": {"bin_factor": 2, "crop_shape": None, "rescale_shape": None}}
    assert preprocess_pixel_scale(report) == 2.0
    report["config"].update(crop_shape=[100, 100], rescale_shape=[50, 50])
    assert preprocess_pixel_scale(report) == 4.0
    report["config"].update(crop_shape=None, rescale_shape=[64, 64])
    assert preprocess_pixel_scale(report) == 4.0  # 256 -> 128 (bin) -> 64


def test_run_voxel_size_follows_the_session(tmp_path):
    SessionWriter.create(tmp_path / "s", SessionSettings(pixel_size_nm=0.5))
    assert run_voxel_size_nm(RunDescription(session=str(tmp_path / "s"))) == 0.5
    report = {"input_shape": [3, 32, 32], "config": {"bin_factor": 2}}
    assert run_voxel_size_nm(RunDescription(session=str(tmp_path / "s"), preprocess=report)) == 1.0
    assert run_voxel_size_nm(RunDescription(session="tcp://127.0.0.1:5555")) is None
    SessionWriter.create(tmp_path / "bare", SessionSettings())
    assert run_voxel_size_nm(RunDescription(session=str(tmp_path / "bare"))) is None


@pytest.mark.timeout(200)
def test_recon_volumes_writes_the_voxel_size(tmp_path):
    writer = SessionWriter.create(tmp_path / "s", SessionSettings(pixel_size_nm=0.87))
    cube = np.zeros((16, 16, 16), dtype=np.float32)
    cube[4:11, 3:12, 5:10] = 1.0
    for i, angle in enumerate([-60.0, -20.0, 20.0, 60.0]):
        writer.append(project_volume(cube, angle), index=i, target_deg=angle, angle_deg=angle, time_s=10.0 * i,
                      exposure_s=1.0, dose_e_per_A2=1.0)
    assert main(["recon", "train", "--session", str(tmp_path / "s"), "--out", str(tmp_path / "run"),
                 "--steps", "2", "--eval-every", "2", "--threads", "1", "--device", "cpu"]) == 0
    for name in ("v.tif", "v.mrc"):
        assert main(["recon", "volumes", "--run", str(tmp_path / "run"), "--out", str(tmp_path / name),
                     "--times", "0,30"]) == 0
        voxel_nm, _ = recorded_scale(tmp_path / name)
        assert voxel_nm == pytest.approx(0.87, rel=1e-6)
