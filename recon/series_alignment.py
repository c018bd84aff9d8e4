"""Geometry without hands: a tilt series rotated so its tilt axis is the project's y through the centre, then
registered by projection matching (what ``tiltstream recon align`` and ``recon train --preprocess real`` do).

Frames are first aligned by chained cross-correlation (``prealign``). The tilt axis is taken from the
settings' ``tilt_axis_deg``, else from the session's ``tilt_axis_deg`` (metadata the import read), else
estimated from the frames (:mod:`tiltstream.recon.tilt_axis`); its offset from the image centre is always
estimated. Frames are resampled once (shift and rotation together) so the axis is the project's y through
the centre (docs/design.md 2), then registered by projection matching
(:mod:`tiltstream.recon.projection_matching`). The JSON-ready record says which axis was used and where it
came from, its quality figures, and each round's per-frame shifts, matrices and residuals.

``tilt_axis_deg`` convention (session.json, ``--tilt-axis-deg``): IMOD's and SerialEM's image rotation,
the angle of the tilt axis from the image Y axis, counter-clockwise positive, with the image shown as IMOD
shows an MRC file (row 0 at the bottom). 0 is the project's geometry; 90 or -90 is an axis along the
image rows (x). The hand of the tilt (which way is +alpha) is taken from the metadata or the override;
an estimate cannot see it and picks the smaller rotation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import pydantic

if TYPE_CHECKING:  # numpy is imported where it is used, so `tiltstream --help` does not load it
    import numpy as np


class AlignSettings(pydantic.BaseModel):
    """Settings of the alignment (``tiltstream recon align``'s options)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    tilt_axis_deg: float | None = pydantic.Field(
        default=None, ge=-180, le=180, description="tilt axis from the image Y axis, counter-clockwise (IMOD/"
        "SerialEM convention), degrees; overrides the session's metadata (default: metadata, else estimated)")
    rounds: int = pydantic.Field(default=3, ge=0, description="most projection-matching rounds (the paper: 3; "
                                 "0: tilt axis only)")
    tolerance_px: float = pydantic.Field(default=0.1, gt=0, description="stop when no frame's shift changes "
                                         "by more than this in a round, pixels")
    iterations: int = pydantic.Field(default=100, ge=1, description="SIRT iterations of each reconstruction")
    window: int | None = pydantic.Field(
        default=None, ge=2, description="dynamic series: register each frame to the moving-window SIRT volume "
        "at its time, this many frames wide (default: one static SIRT of all frames)")
    prealign: bool = pydantic.Field(default=True, description="first align frames by cross-correlation, chained "
                                    "in angle order (the axis estimate needs frames without drift along the axis)")
    affine: bool = pydantic.Field(default=True, description="refine a full affine per frame (translation, "
                                  "skew, scale) after the translation (--no-affine: translation only)")
    match_size_px: int | None = pydantic.Field(
        default=128, ge=8, description="register on frames resized so their larger side is this many pixels "
        "and apply the transforms at full size (as IMOD and etspy align binned frames; the 256^2 needle in a "
        "sixth of the time); unset: at full size")
    device: Literal["auto", "cpu", "cuda"] = pydantic.Field(default="cpu", description="where SIRT runs")


def axis_from_session(settings: AlignSettings, session_extra: dict) -> tuple[float | None, str]:
    """The tilt axis in IMOD's convention and where it came from (None: to be estimated)."""
    if settings.tilt_axis_deg is not None:
        return settings.tilt_axis_deg, "--tilt-axis-deg (or --config), overriding the metadata"
    value = session_extra.get("tilt_axis_deg")
    if value is not None:
        where = (session_extra.get("imported") or {}).get("values_from", {}).get(
            "tilt_axis_deg", session_extra.get("tilt_axis_from", "session.json"))
        return float(value), f"session metadata tilt_axis_deg ({where})"
    return None, "estimated from the frames (tiltstream.recon.tilt_axis)"


def prealign_shifts_px(frames: np.ndarray, angles_deg: np.ndarray) -> np.ndarray:
    """Chained cross-correlation shifts (n, 2) (dy, dx), pixels, of the median-subtracted frames
    (:func:`tiltstream.recon.preprocess.alignment_shifts`), their mean removed."""
    import numpy as np

    from tiltstream.recon.preprocess import alignment_shifts

    shifts = alignment_shifts(frames - np.median(frames, axis=(1, 2), keepdims=True), angles_deg)
    return shifts - shifts.mean(axis=0)


def align_frames(frames: np.ndarray, angles_deg: np.ndarray, settings: AlignSettings, session_extra: dict,
                 log: Callable[[str], None] = print) -> tuple[np.ndarray, dict]:
    """Aligned frames (n, ny', nx') float32 and the JSON-ready record of what was done.

    ``frames`` (n, ny, nx) and ``angles_deg`` (n,) in acquisition order; ``session_extra`` the input
    session's extra fields (``tilt_axis_deg``, ``imported``).
    """
    import numpy as np
    from scipy import ndimage

    from tiltstream.recon.projection_matching import match_projections, warp
    from tiltstream.recon.tilt_axis import find_tilt_axis, to_axis_frames

    imod_deg, axis_from = axis_from_session(settings, session_extra)
    known = None if imod_deg is None else 90.0 + imod_deg  # tilt_axis.py's angle from the array x axis
    shifts = prealign_shifts_px(frames, angles_deg) if settings.prealign else np.zeros((len(frames), 2))
    shifted = np.stack([ndimage.shift(f, s, order=1, mode="nearest") for f, s in zip(frames, shifts)])
    axis = find_tilt_axis(shifted, angles_deg, known, axis_from)
    record = {"tilt_axis_deg": axis.axis_deg - 90.0, "tilt_axis_from": axis_from, **axis.as_record(),
              "prealign_shift_px": shifts.tolist()}
    log(f"recon align: tilt axis {axis.axis_deg - 90.0:.2f} deg ({axis_from}), offset {axis.offset_px:.2f} px, "
        f"consistency residual {axis.residual_untouched:.4f} -> {axis.residual:.4f}")
    upright = to_axis_frames(frames, axis.axis_deg, axis.offset_px, shifts_px=shifts)
    if settings.rounds == 0:
        return upright, record
    medians = np.median(upright, axis=(1, 2))
    matched = match_projections(
        np.clip(upright - medians[:, None, None], 0.0, None), angles_deg, rounds=settings.rounds,
        tolerance_px=settings.tolerance_px, iterations=settings.iterations, window=settings.window,
        affine=settings.affine, device=settings.device, size_px=settings.match_size_px,
        progress=lambda k, r: log(f"recon align: round {k}: max shift change {r['max_change_px']:.3f} px, "
                                  f"median residual {float(np.median(r['residual'])):.4f}"))
    aligned = np.stack([warp(f - m, mat, t) + m for f, m, mat, t in
                        zip(upright.astype(np.float64), medians, matched.matrices, matched.translations_px)])
    record["projection_matching"] = {"converged": matched.converged, "rounds": matched.rounds,
                                     "settings": settings.model_dump(mode="json")}
    return aligned.astype(np.float32), record


def is_aligned(session_extra: dict) -> bool:
    """Whether a session's frames were written by an alignment (its ``session.json`` has an ``aligned`` record)."""
    return bool(session_extra.get("aligned"))
