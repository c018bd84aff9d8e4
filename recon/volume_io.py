"""Volume-time series on disk: float32 TIFF hyperstack or MRC volume stack, plus a times CSV.

``tif``: one ImageJ hyperstack (``TZYX``) that Fiji opens as a 4-D stack, also the layout of a
simulated session's ``ground_truth.tif``; ``mrc``: one MRC volume stack. Both keep ``<stem>_times.csv``
(``index,time_s``) beside them and are written atomically; :func:`read_volumes` reads either. The
formats in full: docs/design.md 9.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from tiltstream.atomic_files import write_atomic, write_bytes_atomic
from tiltstream.errors import UserError

FORMATS = ("tif", "mrc")


def times_path(path: Path | str) -> Path:
    """The times CSV that goes with a volume file: ``<stem>_times.csv`` beside it."""
    path = Path(path)
    return path.with_name(f"{path.stem}_times.csv")


def _format_of(path: Path, format: str | None) -> str:
    if format is None:
        return "mrc" if path.suffix.lower() in (".mrc", ".rec", ".map") else "tif"
    if format not in FORMATS:
        raise UserError(f"volume format {format!r} is not known; allowed: {', '.join(FORMATS)}")
    return format


def _check_series(volumes: np.ndarray, times_s: np.ndarray) -> None:
    if volumes.ndim != 4 or min(volumes.shape) < 1:
        raise UserError(f"volumes must have shape (T, Z, Y, X) with positive sizes; got {volumes.shape}")
    if times_s.shape != (volumes.shape[0],):
        raise UserError(f"times_s must have one time per volume ({volumes.shape[0]}); got shape "
                        f"{times_s.shape}")
    if not np.all(np.isfinite(times_s)):
        raise UserError("times_s holds NaN or infinite values; every volume needs a finite time in seconds")


def _tiff_writer(volumes: np.ndarray, times: np.ndarray, voxel_size_nm: float | None):
    """The function that writes the ImageJ hyperstack (voxel size and times in its metadata) to a path."""
    import tifffile

    metadata: dict = {"axes": "TZYX", "unit": "nm" if voxel_size_nm else "pixel",
                      "Properties": {"time_s": json.dumps([float(t) for t in times])},
                      "Labels": [f"t = {t:g} s, z = {z}" for t in times for z in range(volumes.shape[1])],
                      "Info": "tiltstream volume series: Properties time_s holds each volume's time, seconds "
                              "since the session start"}
    if voxel_size_nm:
        metadata["spacing"] = float(voxel_size_nm)
    steps = np.diff(times)
    if len(steps) and steps[0] > 0 and np.allclose(steps, steps[0], rtol=1e-6, atol=0):
        metadata.update(finterval=float(steps[0]), tunit="s")
    extra = {"resolution": (1.0 / voxel_size_nm, 1.0 / voxel_size_nm)} if voxel_size_nm else {}

    def write(tmp: Path) -> None:
        tifffile.imwrite(tmp, volumes, imagej=True, metadata=metadata, **extra)
    return write


def write_volumes(path: Path | str, volumes: np.ndarray, times_s: np.ndarray | list[float],
                  format: str | None = None, voxel_size_nm: float | None = None) -> Path:
    """Write a volume-time series and its times CSV.

    Parameters
    ----------
    path
        Output file (``.tif``/``.tiff`` or ``.mrc``); parent directories are created.
    volumes
        Shape (T, Z, Y, X); stored as float32.
    times_s
        Time of each volume, seconds since the session start, shape (T,).
    format
        ``"tif"`` or ``"mrc"``; by default taken from the suffix (``.mrc``/``.rec``/``.map`` -> mrc,
        anything else -> tif).
    voxel_size_nm
        Voxel edge length, nanometres; recorded in the MRC header (and the TIFF resolution) when given.

    Returns
    -------
    Path
        The volume file written.
    """
    path = Path(path)
    kind = _format_of(path, format)
    volumes = np.ascontiguousarray(volumes, dtype=np.float32)
    times = np.asarray(times_s, dtype=np.float64).reshape(-1)
    _check_series(volumes, times)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "tif":
        write = _tiff_writer(volumes, times, voxel_size_nm)
    else:
        import mrcfile

        def write(tmp: Path) -> None:
            with mrcfile.new(tmp, overwrite=True) as mrc:
                mrc.set_data(volumes)  # 4-D data -> volume stack (ispg 401)
                if voxel_size_nm:
                    mrc.voxel_size = float(voxel_size_nm) * 10.0  # Angstrom
                mrc.add_label(f"tiltstream volume series: {len(times)} volumes, times (s) in <stem>_times.csv")
    write_atomic(path, write)
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(["index", "time_s"])
    for index, time_s in enumerate(times):
        writer.writerow([index, repr(float(time_s))])
    write_bytes_atomic(times_path(path), table.getvalue().encode("utf-8"))
    return path


def recorded_scale(path: Path | str) -> tuple[float | None, np.ndarray | None]:
    """The voxel size and times a volume file itself records (not its times CSV).

    Returns
    -------
    voxel_size_nm : float or None
        The MRC voxel size, or the TIFF's ImageJ ``spacing`` when its unit is nm (None: not recorded).
    times_s : np.ndarray or None
        A TIFF's ImageJ ``Properties`` ``time_s``, shape (T,) (None: not recorded; always for MRC).
    """
    path = Path(path)
    if _format_of(path, None) == "mrc":
        import mrcfile

        with mrcfile.open(path, permissive=True, header_only=True) as mrc:
            voxel_A = float(mrc.voxel_size.x)
        return (voxel_A / 10.0 if voxel_A > 0 else None), None
    import tifffile

    with tifffile.TiffFile(path) as tif:
        meta = tif.imagej_metadata or {}
    voxel = float(meta["spacing"]) if meta.get("unit") == "nm" and meta.get("spacing") else None
    text = (meta.get("Properties") or {}).get("time_s")
    try:
        times = None if text is None else np.asarray(json.loads(text), dtype=np.float64)
    except ValueError:
        times = None
    return voxel, times


def _read_times(path: Path, count: int, require_times: bool) -> np.ndarray:
    csv_path = times_path(path)
    if not csv_path.is_file():
        embedded = recorded_scale(path)[1] if _format_of(path, None) == "tif" else None
        if embedded is not None and embedded.shape == (count,):
            return embedded
        if require_times:
            raise UserError(f"{str(csv_path)!r} is missing: the times of {str(path)!r} are stored there "
                            "(columns index,time_s)")
        return np.full(count, np.nan)
    try:
        with open(csv_path, newline="") as handle:
            times = np.array([float(row["time_s"]) for row in csv.DictReader(handle)], dtype=np.float64)
    except (KeyError, ValueError, TypeError):
        raise UserError(f"{str(csv_path)!r} must have columns index,time_s with numbers") from None
    if times.shape != (count,):
        raise UserError(f"{str(csv_path)!r} lists {len(times)} times but {str(path)!r} holds {count} volumes")
    return times


def read_volumes(path: Path | str, require_times: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Read a series written by :func:`write_volumes` (or a session's ``ground_truth.tif``).

    Parameters
    ----------
    path
        The ``.tif`` or ``.mrc`` file.
    require_times
        When True, a missing ``<stem>_times.csv`` is an error unless the TIFF records its times itself;
        otherwise unknown times are NaN.

    Returns
    -------
    volumes : np.ndarray
        Shape (T, Z, Y, X), float32. A plain 3-D file is read as T = 1 (or as T volumes when its
        times CSV says so).
    times_s : np.ndarray
        Shape (T,), seconds (NaN when unknown).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"volume file {str(path)!r} does not exist")
    kind = _format_of(path, None)
    try:
        if kind == "tif":
            import tifffile

            data = tifffile.imread(path)
        else:
            import mrcfile

            with mrcfile.open(path, permissive=True) as mrc:
                data = np.array(mrc.data)
                if mrc.is_volume_stack():
                    data = data.reshape(-1, *data.shape[-3:])
    except Exception as exc:  # unreadable files are the user's to fix, in one line
        raise UserError(f"cannot read {str(path)!r} as a {kind} volume file: {exc}") from None
    data = np.asarray(data, dtype=np.float32)
    csv_path = times_path(path)
    if data.ndim == 3:
        count = 1
        if csv_path.is_file():
            with open(csv_path, newline="") as handle:
                count = sum(1 for _ in csv.DictReader(handle))
        if count < 1 or data.shape[0] % count:
            raise UserError(f"{str(path)!r} holds a 3-D array {data.shape} that {count} times cannot split")
        data = data.reshape(count, data.shape[0] // count, *data.shape[1:])
    if data.ndim != 4:
        raise UserError(f"{str(path)!r} holds an array of shape {data.shape}; expected (T, Z, Y, X)")
    return data, _read_times(path, data.shape[0], require_times)
