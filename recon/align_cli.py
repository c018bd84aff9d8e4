"""``tiltstream recon align``: geometry without hands, after ``recon import``.

Frames are first aligned by chained cross-correlation (``--no-prealign``: off). The tilt axis is taken from
``--tilt-axis-deg``, else from the session's ``tilt_axis_deg`` (metadata the import read), else estimated
from the frames (:mod:`tiltstream.recon.tilt_axis`); its offset from the image centre is always estimated.
Frames are resampled once (shift and rotation together) so the axis is the project's y through the centre
(docs/design.md 2), then registered by projection matching (:mod:`tiltstream.recon.projection_matching`),
and written as a new session whose ``session.json`` records, under ``aligned``, the axis and where it came
from, its quality figures, and each round's per-frame shifts, matrices and residuals.

``tilt_axis_deg`` convention (session.json, ``--tilt-axis-deg``): IMOD's and SerialEM's image rotation,
the angle of the tilt axis from the image Y axis, counter-clockwise positive, with the image shown as IMOD
shows an MRC file (row 0 at the bottom). 0 is the project's geometry; 90 or -90 is an axis along the
image rows (x). The hand of the tilt (which way is +alpha) is taken from the metadata or the override;
an estimate cannot see it and picks the smaller rotation.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pydantic

from tiltstream.config import add_model_arguments, load_settings, overrides_from_args
from tiltstream.errors import UserError

if TYPE_CHECKING:  # numpy is imported where it is used, so `tiltstream --help` does not load it
    import numpy as np


class ReconAlignSettings(pydantic.BaseModel):
    """Settings of ``tiltstream recon align``."""

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
    device: Literal["auto", "cpu", "cuda"] = pydantic.Field(default="cpu", description="where SIRT runs")


def axis_from_session(settings: ReconAlignSettings, session_extra: dict) -> tuple[float | None, str]:
    """The tilt axis in IMOD's convention and where it came from (None: to be estimated)."""
    if settings.tilt_axis_deg is not None:
        return settings.tilt_axis_deg, "--tilt-axis-deg (or --config), overriding the metadata"
    value = session_extra.get("tilt_axis_deg")
    if value is not None:
        where = (session_extra.get("imported") or {}).get("values_from", {}).get("tilt_axis_deg", "session.json")
        return float(value), f"session metadata tilt_axis_deg ({where})"
    return None, "estimated from the frames (tiltstream.recon.tilt_axis)"


def prealign_shifts_px(frames: np.ndarray, angles_deg: np.ndarray) -> np.ndarray:
    """Chained cross-correlation shifts (n, 2) (dy, dx), pixels, of the median-subtracted frames
    (:func:`tiltstream.recon.preprocess.alignment_shifts`), their mean removed."""
    import numpy as np

    from tiltstream.recon.preprocess import alignment_shifts

    shifts = alignment_shifts(frames - np.median(frames, axis=(1, 2), keepdims=True), angles_deg)
    return shifts - shifts.mean(axis=0)


def align_frames(frames: np.ndarray, angles_deg: np.ndarray, settings: ReconAlignSettings, session_extra: dict,
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
        affine=settings.affine, device=settings.device,
        progress=lambda k, r: log(f"recon align: round {k}: max shift change {r['max_change_px']:.3f} px, "
                                  f"median residual {float(np.median(r['residual'])):.4f}"))
    aligned = np.stack([warp(f - m, mat, t) + m for f, m, mat, t in
                        zip(upright.astype(np.float64), medians, matched.matrices, matched.translations_px)])
    record["projection_matching"] = {"converged": matched.converged, "rounds": matched.rounds,
                                     "settings": settings.model_dump(mode="json")}
    return aligned.astype(np.float32), record


def run_align(args: argparse.Namespace) -> int:
    """Align a session's frames and write them as a new session."""
    import numpy as np

    from tiltstream.acquire.session import SessionSettings, SessionWriter
    from tiltstream.recon.session_frames import load_session_frames
    from tiltstream.recon.stack_import import refuse_existing_session

    settings = load_settings(ReconAlignSettings, config_file=args.config,
                             overrides=overrides_from_args(args, ReconAlignSettings))
    refuse_existing_session(args.out)
    session, frames = load_session_frames(Path(args.session))
    if len(frames) < 3:
        raise UserError(f"session {args.session!r} holds {len(frames)} frames; alignment needs at least 3")
    order = np.argsort(session.times_s, kind="stable")
    extra = dict(session.settings.model_extra or {})
    aligned, record = align_frames(frames[order], session.angles_deg[order], settings, extra,
                                   log=lambda text: print(text, file=sys.stderr))
    record["source_session"] = str(args.session)
    extra.update({"tilt_axis_deg": 0.0, "aligned": record})
    base = session.settings.model_dump(exclude=set(extra))
    base.pop("created", None)
    writer = SessionWriter.create(args.out, SessionSettings(**base, **extra))
    for frame, index in zip(aligned, order):
        fields = session.records[index].model_dump(exclude={"file", "shape", "dtype", "tracking"})
        writer.append(frame, **fields)
    print(f"recon align: wrote session {writer.path} ({len(aligned)} frames {aligned.shape[1]}x{aligned.shape[2]})",
          file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``align`` to the ``recon`` group."""
    parser = subparsers.add_parser(
        "align", help="find the tilt axis and register frames by projection matching; writes a new session",
        description="Rotate a session's frames so the tilt axis (from --tilt-axis-deg, the session's metadata, "
        "or estimated) is the image y axis through the centre, register every frame to a reprojection of the "
        "SIRT reconstruction (translation, skew, scale; iterated), and write a new session recording the axis, "
        "its quality and each round's per-frame shifts and residuals.")
    parser.add_argument("--session", required=True, metavar="DIR", help="session to align (e.g. from recon import)")
    parser.add_argument("--out", required=True, metavar="SESSION", help="new session directory")
    parser.add_argument("--config", metavar="FILE", help="TOML file with recon align settings")
    add_model_arguments(parser, ReconAlignSettings)
    parser.set_defaults(run=run_align)
