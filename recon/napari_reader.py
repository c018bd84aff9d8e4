"""napari readers (npe2 manifest ``napari.yaml`` beside this module): a session and a volume series.

A session directory opens as one image layer, the frames (n, ny, nx) in record order with the pixel size as
scale and each frame's angle and time in the layer metadata. A volume file written by
:func:`tiltstream.recon.volume_io.write_volumes` opens as one layer (time, z, y, x) scaled by its voxel size
(nm) and, when evenly spaced, its time step (s); its times are in the metadata. Neither needs Qt or napari.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

LayerData = tuple[np.ndarray, dict[str, Any], str]


def _single_path(path: str | list[str]) -> Path | None:
    if isinstance(path, (list, tuple)):
        return Path(path[0]) if len(path) == 1 else None
    return Path(path)


def session_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    """The reader of a session directory (one holding ``session.json``), else None."""
    from tiltstream.acquire.session import SETTINGS_FILE

    found = _single_path(path)
    if found is None or not (found.is_dir() and (found / SETTINGS_FILE).is_file()):
        return None
    return read_session_layers


def read_session_layers(path: str | list[str]) -> list[LayerData]:
    """The frames of a session as one image layer: scale (1, pixel, pixel) nm, angles and times in metadata."""
    from tiltstream.acquire.session import read_session

    session = read_session(_single_path(path))
    pixel_nm = session.settings.pixel_size_nm or 1.0
    metadata = {"angles_deg": session.angles_deg, "times_s": session.times_s,
                "indices": [r.index for r in session.records], "axes": ("frame", "y", "x"),
                "units": ("frame", "nm" if session.settings.pixel_size_nm else "pixel", "")}
    attributes = {"name": f"{session.path.name} tilt series", "scale": (1.0, pixel_nm, pixel_nm),
                  "metadata": metadata}
    return [(session.load_frames(), attributes, "image")]


def volumes_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    """The reader of a tiltstream volume file (its times CSV beside it, or times in the TIFF), else None."""
    from tiltstream.recon.volume_io import recorded_scale, times_path

    found = _single_path(path)
    if found is None or not found.is_file():
        return None
    if times_path(found).is_file():
        return read_volume_layers
    try:
        _, times = recorded_scale(found)
    except Exception:  # not a file this plugin wrote: leave it to other readers
        return None
    return read_volume_layers if times is not None else None


def read_volume_layers(path: str | list[str]) -> list[LayerData]:
    """A volume series as one image layer (time, z, y, x): scale (time step or 1, voxel nm x 3), times in metadata."""
    from tiltstream.recon.volume_io import read_volumes, recorded_scale

    found = _single_path(path)
    volumes, times = read_volumes(found)
    voxel_nm, _ = recorded_scale(found)
    steps = np.diff(times)
    even = len(steps) > 0 and np.all(np.isfinite(steps)) and steps[0] > 0 and np.allclose(steps, steps[0])
    time_scale = float(steps[0]) if even else 1.0
    voxel = voxel_nm or 1.0
    metadata = {"times_s": times, "axes": ("time", "z", "y", "x"),
                "units": ("s" if even else "volume", *(("nm",) * 3 if voxel_nm else ("pixel",) * 3))}
    attributes = {"name": found.stem, "scale": (time_scale, voxel, voxel, voxel), "metadata": metadata}
    return [(volumes, attributes, "image")]
