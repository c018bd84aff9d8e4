"""``tiltstream recon align``: geometry without hands, after ``recon import``; writes the aligned frames as a
new session whose ``session.json`` records, under ``aligned``, what :mod:`tiltstream.recon.series_alignment`
did (the axis and where it came from, its quality, each projection-matching round's shifts and residuals).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tiltstream.config import add_model_arguments, load_settings, overrides_from_args
from tiltstream.errors import UserError
from tiltstream.recon.series_alignment import AlignSettings


def run_align(args: argparse.Namespace) -> int:
    """Align a session's frames and write them as a new session."""
    import numpy as np

    from tiltstream.acquire.session import SessionSettings, SessionWriter
    from tiltstream.recon.series_alignment import align_frames
    from tiltstream.recon.session_frames import load_session_frames
    from tiltstream.recon.stack_import import refuse_existing_session

    settings = load_settings(AlignSettings, config_file=args.config,
                             overrides=overrides_from_args(args, AlignSettings))
    refuse_existing_session(args.out)
    session, frames = load_session_frames(Path(args.session))
    if len(frames) < 3:
        raise UserError(f"session {args.session!r} holds {len(frames)} frames; alignment needs at least 3")
    order = np.argsort(session.times_s, kind="stable")  # aligned and written in acquisition order
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
    add_model_arguments(parser, AlignSettings)
    parser.set_defaults(run=run_align)
