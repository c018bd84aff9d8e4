"""Velox ``.emd``, DigitalMicrograph ``.dm3``/``.dm4`` and HyperSpy/etspy ``.hspy`` tilt series.

Read with rosettasciio (``rsciio``; ``h5py`` for the HDF5 formats), one plugin chosen per suffix. The first
3-D image signal in the file is the series. Angles, in order of preference: DigitalMicrograph Tomography's
per-image ``stage angle (degree)`` (online tracking data), etspy's ``Tomography._sig_tilts``, a per-frame
``Acquisition_instrument.TEM.Stage.tilt_alpha`` array, then the navigation axis when its unit is an angle
(offset + scale x index). The pixel size is the signal x axis's scale, converted to nm with ``pint``.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Any

import numpy as np

from tiltstream.errors import UserError
from tiltstream.recon.imported_series import ImportedSeries, float32_decimal

PLUGINS = {".dm3": "rsciio.digitalmicrograph", ".dm4": "rsciio.digitalmicrograph", ".emd": "rsciio.emd",
           ".hspy": "rsciio.hspy"}
SUFFIXES = tuple(PLUGINS)
DM_TAGS = ("ImageList", "TagGroup0", "ImageTags")


@functools.lru_cache(maxsize=1)
def _units():
    import pint

    return pint.UnitRegistry()


def _get(tree: dict, *keys: str) -> Any:
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _image_signal(path: Path) -> dict:
    """The first signal of ``path`` with 3-D (or 2-D) data, through the suffix's rosettasciio plugin."""
    plugin = PLUGINS[path.suffix.lower()]
    reader = importlib.import_module(plugin).file_reader
    try:
        signals = reader(str(path))
    except Exception as exc:  # an unreadable file is the user's to fix, in one line
        raise UserError(f"cannot read {str(path)!r} with rosettasciio ({plugin}): {exc}") from None
    for signal in signals:
        if np.ndim(signal["data"]) in (2, 3):
            return signal
    shapes = [tuple(np.shape(s["data"])) for s in signals]
    raise UserError(f"{str(path)!r} holds no image stack (signals of shapes {shapes}); a tilt series is (n, ny, nx)")


def _dm_tracking_angles(original: dict) -> np.ndarray | None:
    """Per-image stage angles of a DigitalMicrograph Tomography series, ordered by ``Index in series``."""
    records = _get(original, *DM_TAGS, "Tomography", "Tracking data", "Online tracking data")
    if not isinstance(records, dict) or not records:
        return None
    rows = sorted((r.get("Index in series", i), r.get("stage angle (degree)"))
                  for i, r in enumerate(records.values()) if isinstance(r, dict))
    if any(angle is None for _, angle in rows):
        return None
    return np.array([float(angle) for _, angle in rows])


def _angles(signal: dict, path: Path, count: int) -> tuple[np.ndarray, str]:
    metadata, original = signal.get("metadata", {}), signal.get("original_metadata", {})
    dm = _dm_tracking_angles(original)
    if dm is not None:
        return dm, (f"{path} DigitalMicrograph Tomography Tracking data / Online tracking data / "
                    "stage angle (degree) per image")
    tilts = _get(metadata, "Tomography", "_sig_tilts", "data")
    if tilts is not None:
        return np.asarray(tilts, dtype=np.float64).reshape(-1), f"{path} metadata Tomography._sig_tilts (etspy)"
    alpha = _get(metadata, "Acquisition_instrument", "TEM", "Stage", "tilt_alpha")
    if alpha is not None and np.ndim(alpha) == 1 and np.size(alpha) >= count:
        return (np.asarray(alpha, dtype=np.float64)[:count],
                f"{path} metadata Acquisition_instrument.TEM.Stage.tilt_alpha[:{count}]")
    axis = signal["axes"][0]
    units = str(axis.get("units") or "")
    if units and str(_units().Unit(units)) in ("degree", "radian"):
        step = _units().Quantity(float(axis["scale"]), units).to("deg").magnitude
        start = _units().Quantity(float(axis["offset"]), units).to("deg").magnitude
        return start + step * np.arange(count), f"{path} navigation axis {axis.get('name')!r} (offset + scale x index)"
    raise UserError(f"{str(path)!r}: no tilt angles: no stage angle per image, no tilt_alpha per frame and no "
                    "navigation axis in degrees")


def _pixel_size_nm(signal: dict, path: Path) -> tuple[float | None, str | None]:
    axis = signal["axes"][-1]
    units = axis.get("units")
    if not units:
        return None, None
    try:
        pixel = _units().Quantity(float(axis["scale"]), str(units)).to("nm").magnitude
    except Exception:  # pint: unknown or non-length unit -> no pixel size from this axis
        return None, None
    return float32_decimal(pixel), f"{path} signal axis {axis.get('name')!r} scale ({units})"


def read_rsciio_series(path: Path | str) -> ImportedSeries:
    """A ``.dm3``/``.dm4``/``.emd``/``.hspy`` tilt series as an :class:`ImportedSeries` (frames in file order)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{str(path)!r} does not exist")
    signal = _image_signal(path)
    frames = np.asarray(signal["data"], dtype=np.float32)
    if frames.ndim == 2:
        frames = frames[None]
    angles, angles_from = _angles(signal, path, len(frames))
    pixel_nm, pixel_from = _pixel_size_nm(signal, path)
    provenance = {"frames": f"{path} {PLUGINS[path.suffix.lower()]} signal "
                            f"{_get(signal, 'metadata', 'General', 'title')!r} ({np.asarray(signal['data']).dtype})",
                  "angles_deg": angles_from}
    if pixel_from:
        provenance["pixel_size_nm"] = pixel_from
    details: dict[str, Any] = {}
    tomography = _get(signal, "metadata", "Tomography") or {}
    for key in ("tiltaxis", "xshift", "yshift"):
        if key in tomography:
            details[f"etspy_{key}"] = float(tomography[key])
    dm_tomography = _get(signal.get("original_metadata", {}), *DM_TAGS, "Tomography") or {}
    for key in ("Acquisition start", "Acquisition finish"):
        if key in dm_tomography:
            details[f"dm_{key.lower().replace(' ', '_')}"] = str(dm_tomography[key])
    return ImportedSeries(frames=frames, angles_deg=angles, times_s=None, dose_e_per_A2=None, exposure_s=None,
                          pixel_size_nm=pixel_nm, tilt_axis_deg=None, provenance=provenance, details=details)
