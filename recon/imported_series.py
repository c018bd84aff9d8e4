"""One tilt series read from a microscopist's files, with where each value came from, and its checks.

Every reader (:mod:`tiltstream.recon.read_mrc`, :mod:`tiltstream.recon.read_serialem`,
:mod:`tiltstream.recon.read_rsciio`, the TIFF + CSV path of :mod:`tiltstream.recon.stack_import`) returns
an :class:`ImportedSeries`; :func:`checked` turns what a file cannot hold (missing angles, a count mismatch,
NaNs) into one line naming the file and the value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tiltstream.errors import UserError


@dataclass(frozen=True)
class ImportedSeries:
    """A tilt series in acquisition order.

    Attributes
    ----------
    frames
        Shape (n, ny, nx), float32.
    angles_deg
        Tilt angle of each frame, degrees, shape (n,).
    times_s
        Time of each frame, seconds since the first, shape (n,); None when the files record none.
    dose_e_per_A2
        Electron dose of each frame, e/A^2, shape (n,); None when not recorded.
    exposure_s
        Exposure time of each frame, seconds, shape (n,); None when not recorded.
    pixel_size_nm
        Pixel edge length, nm; None when not recorded.
    tilt_axis_deg
        In-plane angle of the tilt axis as the files record it (SerialEM's convention: from the image
        x axis, counter-clockwise), degrees; None when not recorded.
    provenance
        For each value above that was read (``frames``, ``angles_deg``, ...), the file and field it came from.
    details
        Further values read that have no place above (frame origins, acquisition start, instrument), kept in
        the session as they are.
    """

    frames: np.ndarray
    angles_deg: np.ndarray
    times_s: np.ndarray | None
    dose_e_per_A2: np.ndarray | None
    exposure_s: np.ndarray | None
    pixel_size_nm: float | None
    tilt_axis_deg: float | None
    provenance: dict[str, str]
    details: dict[str, Any] = field(default_factory=dict)


def float32_decimal(value: float) -> float:
    """``value`` to the 7 significant digits a float32 holds (3.3600000559630416 -> 3.36): sizes files store
    as float32 (possibly in other units) are recorded as written, not with float32's rounding error."""
    return float(f"{float(value):.7g}")


def _first_bad(values: np.ndarray) -> list[int]:
    return np.flatnonzero(~np.isfinite(values))[:5].tolist()


def checked(series: ImportedSeries, source: Path | str) -> ImportedSeries:
    """``series`` when it is a usable tilt series, else a UserError naming ``source`` and the value.

    Checks: frames are (n, ny, nx) numbers without NaN; one finite angle within [-90, 90] degrees per frame;
    times (when given) finite and non-decreasing; doses and exposures (when given) finite and >= 0; pixel
    size (when given) finite and > 0.
    """
    name = str(source)
    frames = series.frames
    if frames.ndim != 3 or min(frames.shape) < 1:
        raise UserError(f"{name!r}: frames have shape {frames.shape}; a tilt series is (n, ny, nx)")
    count = frames.shape[0]
    bad_frames = [i for i in range(count) if not np.all(np.isfinite(frames[i]))]
    if bad_frames:
        raise UserError(f"{name!r}: frame(s) {bad_frames[:5]} contain NaN or infinite values; clean or drop them")
    per_frame = {"angles_deg": series.angles_deg, "times_s": series.times_s,
                 "dose_e_per_A2": series.dose_e_per_A2, "exposure_s": series.exposure_s}
    for key, values in per_frame.items():
        if values is None:
            continue
        where = series.provenance.get(key, name)
        if values.shape != (count,):
            raise UserError(f"{name!r}: {key} lists {values.size} values ({where}) but the stack holds "
                            f"{count} frames")
        if _first_bad(values):
            raise UserError(f"{name!r}: {key} is NaN or infinite at frame(s) {_first_bad(values)} ({where})")
    if np.any(np.abs(series.angles_deg) > 90):
        raise UserError(f"{name!r}: tilt angles must lie within [-90, 90] degrees; got "
                        f"{series.angles_deg.min():g} .. {series.angles_deg.max():g} "
                        f"({series.provenance.get('angles_deg', name)})")
    if series.times_s is not None and np.any(np.diff(series.times_s) < 0):
        raise UserError(f"{name!r}: times_s must not decrease (frames are in acquisition order)")
    for key in ("dose_e_per_A2", "exposure_s"):
        values = per_frame[key]
        if values is not None and np.any(values < 0):
            raise UserError(f"{name!r}: {key} is negative at frame(s) {np.flatnonzero(values < 0)[:5].tolist()}")
    pixel = series.pixel_size_nm
    if pixel is not None and not (np.isfinite(pixel) and pixel > 0):
        raise UserError(f"{name!r}: pixel size {pixel!r} nm ({series.provenance.get('pixel_size_nm')}) "
                        "must be a positive number")
    return series
