"""The napari reader plugin through npe2's reader API (no napari, no display): a session opens as its tilt
series with angles, a volume file as (time, z, y, x) with physical scale."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from tiltstream.acquire.session import SessionSettings, SessionWriter
from tiltstream.recon.volume_io import write_volumes

npe2 = pytest.importorskip("npe2")


@pytest.fixture(scope="module")
def plugin() -> str:
    """The plugin's name, its manifest registered from the package (as the entry point names it)."""
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    package, _, name = pyproject["project"]["entry-points"]["napari.manifest"]["tiltstream"].partition(":")
    manifest = npe2.PluginManifest.from_file(resources.files(package) / name)
    manager = npe2.PluginManager.instance()
    if manifest.name not in manager:  # installed without the entry point (an older editable install)
        manager.register(manifest)
    return manifest.name


def test_session_opens_with_angles_and_pixel_scale(plugin, tmp_path):
    writer = SessionWriter.create(tmp_path / "s", SessionSettings(pixel_size_nm=0.87))
    frames = np.random.default_rng(0).random((3, 5, 6)).astype(np.float32)
    for i, angle in enumerate([-30.0, 10.0, 45.0]):
        writer.append(frames[i], index=i, target_deg=angle, angle_deg=angle, time_s=2.0 * i, exposure_s=1.0,
                      dose_e_per_A2=0.0)
    [(data, attributes, kind)] = npe2.read([str(tmp_path / "s")], stack=False, plugin_name=plugin)
    assert kind == "image"
    np.testing.assert_array_equal(data, frames)
    assert attributes["scale"] == (1.0, 0.87, 0.87)
    np.testing.assert_array_equal(attributes["metadata"]["angles_deg"], [-30.0, 10.0, 45.0])
    np.testing.assert_array_equal(attributes["metadata"]["times_s"], [0.0, 2.0, 4.0])


@pytest.mark.parametrize("name", ["v.tif", "v.mrc"])
def test_volumes_open_with_physical_scale(plugin, tmp_path, name):
    volumes = np.random.default_rng(1).random((2, 3, 4, 5)).astype(np.float32)
    path = write_volumes(tmp_path / name, volumes, [15.0, 45.0], voxel_size_nm=3.36)
    [(data, attributes, kind)] = npe2.read([str(path)], stack=False, plugin_name=plugin)
    assert kind == "image" and data.shape == (2, 3, 4, 5)
    np.testing.assert_array_equal(data, volumes)
    assert attributes["scale"] == pytest.approx((30.0, 3.36, 3.36, 3.36), rel=1e-6)
    assert attributes["metadata"]["times_s"].tolist() == [15.0, 45.0]
    assert attributes["metadata"]["axes"] == ("time", "z", "y", "x")


def test_other_files_are_left_to_other_readers(plugin, tmp_path):
    (tmp_path / "plain").mkdir()
    np.save(tmp_path / "x.npy", np.zeros(3))
    for path in (tmp_path / "plain", tmp_path / "x.npy"):
        with pytest.raises(ValueError):
            npe2.read([str(path)], stack=False, plugin_name=plugin)
