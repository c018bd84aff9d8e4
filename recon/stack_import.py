"""``tiltstream recon import``: a TIFF tilt-series stack plus an angles/times CSV -> a recorded session.

This is the reference DIP-STER input (a stack in acquisition order and its tilt angles, optionally
times). The session (DESIGN.md 5) is written with :class:`tiltstream.acquire.session.SessionWriter`, so every
tiltstream command (``recon train``, ``recon sirt``, ``replay``, ``export``) reads it like an acquired one.

Angles CSV: a header row naming ``angle_deg`` and optionally ``time_s`` (seconds since the start of the
series, exposure midpoints); or, without a header, one or two numeric columns in that order.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pydantic

from tiltstream.command import register_command
from tiltstream.errors import UserError

if TYPE_CHECKING:  # numpy is imported where it is used, so `tiltstream --help` does not load it
    import numpy as np


class ReconImportSettings(pydantic.BaseModel):
    """Settings of ``tiltstream recon import``."""

    model_config = pydantic.ConfigDict(extra="forbid")
    pixel_size_nm: float | None = pydantic.Field(default=None, gt=0, description="pixel size of the frames, nm")
    frame_interval_s: float = pydantic.Field(
        default=30.0, gt=0, description="seconds between frames, used when the CSV has no time_s column "
        "(the paper: about 2 frames per minute)")
    exposure_s: float = pydantic.Field(default=0.0, ge=0, description="exposure (frame) time, seconds (0: unknown)")
    dose_e_per_A2: float = pydantic.Field(default=0.0, ge=0, description="electron dose per frame, e/A^2 (0: unknown)")


def read_angles_csv(path: Path | str) -> tuple[np.ndarray, np.ndarray | None]:
    """Angles (degrees) and, when given, times (seconds) from an angles CSV.

    Returns
    -------
    angles_deg : np.ndarray (n,)
    times_s : np.ndarray (n,) or None
    """
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise UserError(f"angles file {str(path)!r} does not exist")
    with open(path, newline="") as handle:
        rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise UserError(f"angles file {str(path)!r} is empty; it needs a column angle_deg (and optionally time_s)")
    header = [cell.strip() for cell in rows[0]]
    if "angle_deg" in header:
        columns = {"angle_deg": header.index("angle_deg")}
        if "time_s" in header:
            columns["time_s"] = header.index("time_s")
        rows = rows[1:]
    else:
        columns = {"angle_deg": 0, **({"time_s": 1} if len(header) > 1 else {})}
    values: dict[str, list[float]] = {name: [] for name in columns}
    for number, row in enumerate(rows, start=2 if "angle_deg" in header else 1):
        for name, col in columns.items():
            try:
                values[name].append(float(row[col]))
            except (IndexError, ValueError):
                raise UserError(f"{str(path)!r} line {number}: {name} is missing or not a number "
                                f"({row!r}); expected columns angle_deg[,time_s]") from None
    angles = np.asarray(values["angle_deg"], dtype=np.float64)
    times = np.asarray(values["time_s"], dtype=np.float64) if "time_s" in values else None
    for name, arr in (("angle_deg", angles), ("time_s", times)):
        if arr is not None and not np.all(np.isfinite(arr)):
            bad = np.flatnonzero(~np.isfinite(arr))[:5].tolist()
            raise UserError(f"{str(path)!r}: {name} is NaN or infinite at rows {bad}")
    if np.any(np.abs(angles) >= 90):
        raise UserError(f"{str(path)!r}: tilt angles must lie within (-90, 90) degrees; got "
                        f"{angles.min():g} .. {angles.max():g}")
    if times is not None and np.any(np.diff(times) < 0):
        raise UserError(f"{str(path)!r}: time_s must not decrease (frames are in acquisition order)")
    return angles, times


def import_stack(stack: Path | str, angles_csv: Path | str, out: Path | str,
                 settings: ReconImportSettings | None = None) -> Path:
    """Write a session from a TIFF stack (n, ny, nx) and its angles/times CSV; returns the session path."""
    import numpy as np

    from tiltstream.acquire.session import SessionSettings, SessionWriter

    settings = settings or ReconImportSettings()
    stack = Path(stack)
    if not stack.is_file():
        raise UserError(f"stack {str(stack)!r} does not exist")
    try:
        import tifffile

        frames = tifffile.imread(stack)
    except Exception as exc:  # an unreadable file is the user's to fix, in one line
        raise UserError(f"cannot read {str(stack)!r} as a TIFF stack: {exc}") from None
    if frames.ndim != 3 or min(frames.shape) < 1:
        raise UserError(f"{str(stack)!r} holds shape {frames.shape}; a tilt series stack is (n, ny, nx)")
    if frames.dtype.kind not in "uif":
        raise UserError(f"{str(stack)!r} has dtype {frames.dtype}; expected integer or float pixels")
    angles, times = read_angles_csv(angles_csv)
    if len(angles) != frames.shape[0]:
        raise UserError(f"{str(angles_csv)!r} lists {len(angles)} angles but {str(stack)!r} holds "
                        f"{frames.shape[0]} frames")
    bad = [i for i in range(frames.shape[0]) if not np.all(np.isfinite(frames[i]))]
    if bad:
        raise UserError(f"{str(stack)!r}: frame(s) {bad[:5]} contain NaN or infinite values; clean or drop them")
    if times is None:
        times = np.arange(len(angles)) * settings.frame_interval_s
    if frames.dtype == np.float64:
        frames = frames.astype(np.float32)
    session_settings = SessionSettings(
        scheme={"kind": "imported", "source_stack": str(stack), "source_angles": str(angles_csv),
                "count": int(len(angles))},
        pixel_size_nm=settings.pixel_size_nm)
    writer = SessionWriter.create(out, session_settings)
    for index, (frame, angle_deg, time_s) in enumerate(zip(frames, angles, times)):
        writer.append(frame, index=index, target_deg=float(angle_deg), angle_deg=float(angle_deg),
                      time_s=float(time_s), exposure_s=settings.exposure_s,
                      dose_e_per_A2=settings.dose_e_per_A2)
    return writer.path


def run_import(settings: ReconImportSettings, args: argparse.Namespace) -> int:
    """Import a stack and its angles CSV into a new session directory."""
    path = import_stack(args.stack, args.angles, args.out, settings)
    print(f"recon import: wrote session {path}", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``import`` to the ``recon`` group."""
    register_command(
        subparsers, "import", settings=ReconImportSettings, run=run_import, arguments=_arguments, logs=False,
        help="import a TIFF tilt-series stack and an angles/times CSV as a session",
        description="Write a session directory (DESIGN.md 5) from a TIFF stack (n, ny, nx) in acquisition "
        "order and a CSV with columns angle_deg[,time_s] (degrees, seconds), one row per frame.")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", required=True, metavar="TIF", help="TIFF stack (n, ny, nx)")
    parser.add_argument("--angles", required=True, metavar="CSV", help="angles CSV: angle_deg[,time_s]")
    parser.add_argument("--out", required=True, metavar="SESSION", help="new session directory")
