"""Exports a recorded session to IMOD/SerialEM: an MRC stack, a .rawtlt and a SerialEM-style .mdoc.

``OUT.mrc``: the frames (n, ny, nx) in acquisition order (or sorted by angle), float32 unless every
frame shares an integer dtype MRC can hold (int16, uint16, uint8); voxel size = pixel size (A).
``OUT.rawtlt``: one reported tilt angle (deg) per line, in stack order.
``OUT.mrc.mdoc``: IMOD autodoc, global ``PixelSpacing``/``ImageFile``/``ImageSize``/``DataMode`` then one
``[ZValue = z]`` section per frame with ``TiltAngle``, ``ExposureTime``, ``ExposureDose``, ``PixelSpacing``,
``StagePosition``/``StageZ`` (um), ``DateTime`` (SerialEM's ``dd-Mon-yy  HH:MM:SS``), plus tiltstream keys
``FrameIndex``, ``TargetAngle``, ``TimeSinceStart`` (s) and ``Temperature`` (C) when known.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

import numpy as np

from tiltstream.errors import UserError
from tiltstream.acquire.session import read_session

MRC_MODES = {"uint8": 0, "int16": 1, "float32": 2, "uint16": 6}


def export_imod(session_dir: Path | str, out: Path | str,
                order: Literal["acquisition", "angle"] = "acquisition") -> tuple[Path, Path, Path]:
    """Write ``OUT.mrc``, ``OUT.rawtlt`` and ``OUT.mrc.mdoc`` from a session; returns their paths.

    Parameters
    ----------
    session_dir
        The recorded session.
    out
        Output stem (``OUT``; a trailing ``.mrc`` is dropped).
    order
        ``acquisition`` (GRS order, as recorded) or ``angle`` (sorted by reported tilt angle).
    """
    import mrcfile

    session = read_session(session_dir)
    if not session.records:
        raise UserError(f"session {str(session_dir)!r} has no frames to export")
    records = list(session.records)
    if order == "angle":
        records.sort(key=lambda r: r.angle_deg)
    elif order != "acquisition":
        raise UserError(f"order {order!r} is not allowed; allowed: acquisition, angle")
    shapes = {tuple(r.shape) for r in records}
    if len(shapes) != 1:
        raise UserError(f"frames of session {str(session_dir)!r} differ in shape ({sorted(shapes)}); "
                        "an MRC stack needs one shape")
    dtypes = {r.dtype for r in records}
    dtype = dtypes.pop() if len(dtypes) == 1 and next(iter(dtypes)) in MRC_MODES else "float32"
    stack = np.stack([session.load_frame(r).astype(dtype) for r in records])
    stem = Path(out)
    if stem.suffix == ".mrc":
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    mrc_path, tlt_path = stem.with_name(stem.name + ".mrc"), stem.with_name(stem.name + ".rawtlt")
    mdoc_path = stem.with_name(stem.name + ".mrc.mdoc")
    pixel_A = None if session.settings.pixel_size_nm is None else session.settings.pixel_size_nm * 10.0
    with mrcfile.new(mrc_path, overwrite=True) as mrc:
        mrc.set_data(stack)
        mrc.set_image_stack()
        if pixel_A is not None:
            mrc.voxel_size = pixel_A
    tlt_path.write_text("".join(f"{r.angle_deg:.4f}\n" for r in records))
    start = dt.datetime.fromisoformat(session.settings.created)
    ny, nx = stack.shape[1:]
    lines = [f"PixelSpacing = {pixel_A if pixel_A is not None else 1.0:g}", f"ImageFile = {mrc_path.name}",
             f"ImageSize = {nx} {ny}", f"DataMode = {MRC_MODES[dtype]}", "",
             f"[T = tiltstream export of session {session.path.name}]", ""]
    for z, record in enumerate(records):
        when = (start + dt.timedelta(seconds=record.time_s)).astimezone()
        lines += [f"[ZValue = {z}]", f"TiltAngle = {record.angle_deg:.4f}",
                  f"StagePosition = {record.stage.x * 1e6:.4f} {record.stage.y * 1e6:.4f}",
                  f"StageZ = {record.stage.z * 1e6:.4f}", f"ExposureTime = {record.exposure_s:g}",
                  f"ExposureDose = {record.dose_e_per_A2:g}",
                  f"PixelSpacing = {pixel_A if pixel_A is not None else 1.0:g}",
                  f"DateTime = {when.strftime('%d-%b-%y  %H:%M:%S')}",
                  f"FrameIndex = {record.index}", f"TargetAngle = {record.target_deg:.6f}",
                  f"TimeSinceStart = {record.time_s:.3f}"]
        if record.temperature_C is not None:
            lines.append(f"Temperature = {record.temperature_C:g}")
        lines.append("")
    mdoc_path.write_text("\n".join(lines))
    return mrc_path, tlt_path, mdoc_path
