"""``tiltstream recon import``: a microscopist's tilt series -> a recorded session.

SOURCE is chosen by suffix: IMOD/MRC stacks (:mod:`tiltstream.recon.read_mrc`), SerialEM stacks and per-tilt
folders with ``.mdoc`` (:mod:`tiltstream.recon.read_serialem`), ``.dm3``/``.dm4``/``.emd``/``.hspy``
(:mod:`tiltstream.recon.read_rsciio`), or a TIFF stack (n, ny, nx) in acquisition order with an angles/times
CSV (``--stack``/``--angles``, the reference DIP-STER input). The session (docs/design.md, section 5) is
written with :class:`tiltstream.acquire.session.SessionWriter`, so every tiltstream command (``recon train``,
``recon sirt``, ``replay``, ``export``) reads it like an acquired one; its ``session.json`` records, under
``imported``, where each value came from.

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

    from tiltstream.acquire.session import SessionSettings
    from tiltstream.recon.imported_series import ImportedSeries

TIFF_SUFFIXES = (".tif", ".tiff")


class ReconImportSettings(pydantic.BaseModel):
    """Settings of ``tiltstream recon import``."""

    model_config = pydantic.ConfigDict(extra="forbid")
    pixel_size_nm: float | None = pydantic.Field(default=None, gt=0, description="pixel size of the frames, nm "
                                                 "(overrides the one the files record)")
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


def read_tiff_series(stack: Path | str, angles_csv: Path | str | None) -> ImportedSeries:
    """A TIFF stack (n, ny, nx) in acquisition order and its angles/times CSV as an :class:`ImportedSeries`."""
    import numpy as np

    from tiltstream.recon.imported_series import ImportedSeries

    stack = Path(stack)
    if not stack.is_file():
        raise UserError(f"stack {str(stack)!r} does not exist")
    if angles_csv is None:
        raise UserError(f"{str(stack)!r}: a TIFF stack records no tilt angles; give them with --angles CSV "
                        "(columns angle_deg[,time_s])")
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
    provenance = {"frames": f"{stack} ({frames.dtype})", "angles_deg": f"{angles_csv} column angle_deg"}
    if times is not None:
        provenance["times_s"] = f"{angles_csv} column time_s"
    return ImportedSeries(frames=frames.astype(np.float32), angles_deg=angles, times_s=times, dose_e_per_A2=None,
                          exposure_s=None, pixel_size_nm=None, tilt_axis_deg=None, provenance=provenance)


def read_series(source: Path | str, angles: Path | str | None = None) -> ImportedSeries:
    """Read a tilt series, the reader chosen by the source's suffix, and check it.

    Parameters
    ----------
    source
        A stack (``.mrc``/``.st``/``.ali``/``.preali``, SerialEM when an ``.mdoc`` lies beside it),
        an ``.mdoc``, a folder of SerialEM per-tilt files, a ``.dm3``/``.dm4``/``.emd``/``.hspy`` file, or a
        ``.tif``/``.tiff`` stack (which needs ``angles``).
    angles
        For a TIFF stack, the angles/times CSV; for an MRC stack, a ``.rawtlt``/``.tlt`` to use instead of
        the angles beside it (and instead of an ``.mdoc``).
    """
    from tiltstream.recon.imported_series import checked
    from tiltstream.recon.read_mrc import SUFFIXES as MRC_SUFFIXES
    from tiltstream.recon.read_mrc import read_mrc_stack
    from tiltstream.recon.read_rsciio import SUFFIXES as RSCIIO_SUFFIXES
    from tiltstream.recon.read_rsciio import read_rsciio_series
    from tiltstream.recon.read_serialem import mdoc_beside, read_serialem

    source = Path(source)
    if not source.exists():
        raise UserError(f"{str(source)!r} does not exist")
    suffix = source.suffix.lower()
    if angles is not None and (source.is_dir() or suffix not in (*MRC_SUFFIXES, *TIFF_SUFFIXES)):
        raise UserError(f"--angles {str(angles)!r} applies to an MRC or TIFF stack only; {str(source)!r} "
                        "records its own tilt angles")
    if source.is_dir() or suffix == ".mdoc":
        series = read_serialem(source)
    elif suffix in MRC_SUFFIXES:
        use_mdoc = angles is None and mdoc_beside(source) is not None
        series = read_serialem(source) if use_mdoc else read_mrc_stack(source, angles)
    elif suffix in RSCIIO_SUFFIXES:
        series = read_rsciio_series(source)
    elif suffix in TIFF_SUFFIXES:
        series = read_tiff_series(source, angles)
    else:
        allowed = ", ".join((*MRC_SUFFIXES, ".mdoc", *RSCIIO_SUFFIXES, *TIFF_SUFFIXES))
        raise UserError(f"cannot import {str(source)!r}: suffix {suffix or '(none)'!r} is not a known tilt-series "
                        f"format; allowed: {allowed}, or a folder of SerialEM per-tilt files")
    return checked(series, source)


def _session_settings(series: ImportedSeries, source: Path, settings: ReconImportSettings) -> SessionSettings:
    """session.json of an import: the values read and, for each, where it came from."""
    from tiltstream.acquire.session import SessionSettings

    provenance = dict(series.provenance)
    pixel_nm = series.pixel_size_nm
    if settings.pixel_size_nm is not None:
        pixel_nm = settings.pixel_size_nm
        provenance["pixel_size_nm"] = "pixel_size_nm setting (--pixel-size-nm or --config); overrides the files"
    defaults = {"times_s": f"not in the files: frame_interval_s setting, {settings.frame_interval_s:g} s apart",
                "dose_e_per_A2": f"not in the files: dose_e_per_A2 setting, {settings.dose_e_per_A2:g} (0: unknown)",
                "exposure_s": f"not in the files: exposure_s setting, {settings.exposure_s:g} s (0: unknown)",
                "pixel_size_nm": "not in the files and not set: unknown"}
    for key, text in defaults.items():
        provenance.setdefault(key, text)
    extra = {} if series.tilt_axis_deg is None else {"tilt_axis_deg": series.tilt_axis_deg}
    return SessionSettings(
        scheme={"kind": "imported", "source": str(source), "count": int(len(series.angles_deg))},
        pixel_size_nm=pixel_nm,
        imported={"source": str(source), "values_from": provenance, "details": series.details},
        **extra)


def refuse_existing_session(out: Path | str) -> None:
    """A UserError when ``out`` already holds a session (an import never continues one)."""
    from tiltstream.acquire.session import SETTINGS_FILE

    if (Path(out) / SETTINGS_FILE).exists():
        raise UserError(f"session {str(out)!r} already exists; import into a new or empty directory")


def import_series(series: ImportedSeries, source: Path | str, out: Path | str,
                  settings: ReconImportSettings | None = None) -> Path:
    """Write ``series`` as a new session directory ``out``; returns the session path.

    Times, doses and exposures the files do not record come from ``settings``; session.json records, for
    each value, where it came from (``imported.values_from``).
    """
    import numpy as np

    from tiltstream.acquire.session import SessionWriter

    settings = settings or ReconImportSettings()
    refuse_existing_session(out)
    count = len(series.angles_deg)
    times = series.times_s if series.times_s is not None else np.arange(count) * settings.frame_interval_s
    doses = series.dose_e_per_A2 if series.dose_e_per_A2 is not None else np.full(count, settings.dose_e_per_A2)
    exposures = series.exposure_s if series.exposure_s is not None else np.full(count, settings.exposure_s)
    writer = SessionWriter.create(out, _session_settings(series, Path(source), settings))
    for index in range(count):
        writer.append(series.frames[index], index=index, target_deg=float(series.angles_deg[index]),
                      angle_deg=float(series.angles_deg[index]), time_s=float(times[index]),
                      exposure_s=float(exposures[index]), dose_e_per_A2=float(doses[index]))
    return writer.path


def run_import(settings: ReconImportSettings, args: argparse.Namespace) -> int:
    """Import a tilt series (SOURCE, or --stack and --angles) into a new session directory."""
    if (args.source is None) == (args.stack is None):
        raise UserError("recon import needs one tilt series: SOURCE, or --stack TIF with --angles CSV")
    source = args.source or args.stack
    refuse_existing_session(args.out)  # before reading what may be gigabytes
    series = read_series(source, args.angles)
    path = import_series(series, source, args.out, settings)
    print(f"recon import: wrote session {path} ({len(series.angles_deg)} frames "
          f"{series.frames.shape[1]}x{series.frames.shape[2]}, angles from {series.provenance['angles_deg']})",
          file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``import`` to the ``recon`` group."""
    register_command(
        subparsers, "import", settings=ReconImportSettings, run=run_import, arguments=_arguments, logs=False,
        help="import a tilt series (MRC/IMOD, SerialEM, DM, EMD, HSPY, or TIFF + CSV) as a session",
        description="Write a session directory (docs/design.md, section 5) from SOURCE: an IMOD/MRC stack with "
        "its .rawtlt/.tlt, a SerialEM stack or per-tilt folder with .mdoc, a .dm3/.dm4/.emd/.hspy tilt series; "
        "or from a TIFF stack (n, ny, nx) in acquisition order and a CSV with columns angle_deg[,time_s] "
        "(degrees, seconds), one row per frame. session.json records where each value came from.")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", nargs="?", metavar="SOURCE",
                        help="tilt series: .mrc/.st/.ali/.preali (+ .rawtlt/.tlt or .mdoc), .mdoc, a folder of "
                        "SerialEM per-tilt .mrc + .mdoc, .dm3/.dm4/.emd/.hspy, or .tif (with --angles)")
    parser.add_argument("--stack", metavar="TIF", help="TIFF stack (n, ny, nx), with --angles")
    parser.add_argument("--angles", metavar="FILE", help="angles CSV angle_deg[,time_s] for a TIFF stack; "
                        ".rawtlt/.tlt for an MRC stack (instead of the one beside it)")
    parser.add_argument("--out", required=True, metavar="SESSION", help="new session directory")
