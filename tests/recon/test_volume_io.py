"""Volume series files: TIFF hyperstack and MRC volume stack round trips, times CSV, bad input."""

from __future__ import annotations

import csv

import mrcfile
import numpy as np
import pytest
import tifffile

from tiltstream.errors import UserError
from tiltstream.acquire.session import write_ground_truth
from tiltstream.recon.volume_io import read_volumes, times_path, write_volumes


@pytest.mark.parametrize("name", ["series.tif", "series.mrc"])
def test_round_trip(tmp_path, name):
    volumes = np.random.default_rng(0).random((3, 4, 5, 6)).astype(np.float32)
    times = np.array([1.5, 31.25, 60.0])
    path = write_volumes(tmp_path / "out" / name, volumes, times, voxel_size_nm=0.87)
    got, got_times = read_volumes(path, require_times=True)
    np.testing.assert_array_equal(got, volumes)
    np.testing.assert_array_equal(got_times, times)
    with open(times_path(path), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["index", "time_s"] and rows[2] == {"index": "2", "time_s": "60.0"}


def test_formats_on_disk(tmp_path):
    volumes = np.ones((2, 3, 4, 5), dtype=np.float32)
    write_volumes(tmp_path / "a.mrc", volumes, [0.0, 1.0], voxel_size_nm=0.5)
    with mrcfile.open(tmp_path / "a.mrc") as mrc:
        assert mrc.is_volume_stack() and mrc.data.shape == (2, 3, 4, 5)
        assert float(mrc.voxel_size.x) == pytest.approx(5.0)  # Angstrom
    write_volumes(tmp_path / "a.tif", volumes, [0.0, 1.0], format="tif")
    with tifffile.TiffFile(tmp_path / "a.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "TZYX"
    single = write_volumes(tmp_path / "one.tif", volumes[:1], [5.0])
    got, times = read_volumes(single)
    assert got.shape == (1, 3, 4, 5) and times.tolist() == [5.0]


def test_reads_session_ground_truth(tmp_path):
    volumes = np.random.default_rng(1).random((4, 3, 3, 3)).astype(np.float32)
    write_ground_truth(tmp_path, volumes, np.arange(4) * 2.0)
    got, times = read_volumes(tmp_path / "ground_truth.tif", require_times=True)
    np.testing.assert_array_equal(got, volumes)
    assert times.tolist() == [0.0, 2.0, 4.0, 6.0]


def test_bad_input(tmp_path):
    with pytest.raises(UserError, match="one time per volume"):
        write_volumes(tmp_path / "x.tif", np.zeros((2, 3, 3, 3)), [0.0])
    with pytest.raises(UserError, match=r"\(T, Z, Y, X\)"):
        write_volumes(tmp_path / "x.tif", np.zeros((3, 3, 3)), [0.0, 1.0, 2.0])
    with pytest.raises(UserError, match="NaN"):
        write_volumes(tmp_path / "x.tif", np.zeros((1, 3, 3, 3)), [np.nan])
    with pytest.raises(UserError, match="allowed: tif, mrc"):
        write_volumes(tmp_path / "x.tif", np.zeros((1, 3, 3, 3)), [0.0], format="h5")
    with pytest.raises(UserError, match="does not exist"):
        read_volumes(tmp_path / "missing.tif")
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((2, 3, 3, 3), dtype=np.float32), photometric="minisblack")
    with pytest.raises(UserError, match="missing"):
        read_volumes(tmp_path / "plain.tif", require_times=True)
    assert np.isnan(read_volumes(tmp_path / "plain.tif")[1]).all()
    (tmp_path / "plain_times.csv").write_text("index,time_s\n0,0.0\n")
    with pytest.raises(UserError, match="lists 1 times"):
        read_volumes(tmp_path / "plain.tif")
    (tmp_path / "junk.tif").write_bytes(b"not a tiff")
    with pytest.raises(UserError, match="cannot read"):
        read_volumes(tmp_path / "junk.tif")
