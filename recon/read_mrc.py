"""IMOD/MRC tilt stacks (``.mrc``, ``.st``, ``.ali``, ``.preali``) with their ``.rawtlt``/``.tlt`` angles.

The stack is read with ``mrcfile`` (permissively: FEI/TIA files carry no ``MAP`` stamp). Angles come from a
file given by the user, else a ``.rawtlt``/``.tlt`` beside the stack (``.tlt`` first for aligned stacks),
else the extended header. The pixel size comes from an FEI extended header (the old 32-float TIA layout,
parsed by rosettasciio's MRC reader, or FEI1/FEI2 through ``mrcfile``), else the MRC header's voxel size.
FEI/TIA stores unsigned HAADF counts in MRC mode 1 shifted by -32768; when the per-frame means its header
records match the stored means plus 32768, the offset is undone and the session says so.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tiltstream.errors import UserError
from tiltstream.recon.imported_series import ImportedSeries, float32_decimal

SUFFIXES = (".mrc", ".st", ".ali", ".preali")
SIGNED_OFFSET = 32768.0  # FEI/TIA: unsigned counts written as int16 minus this
FEI_NEW_KEYS = {"angles_deg": "Alpha tilt", "pixel_m": "Pixel size X", "tilt_axis_deg": "Tilt axis angle"}


@dataclass(frozen=True)
class MrcStack:
    """The contents of one MRC file.

    Attributes
    ----------
    data
        Stored values, shape (n, ny, nx), in the file's dtype.
    voxel_size_nm
        The header's voxel size x, nm (None: 0, or IMOD's 1.0 A placeholder).
    mode
        MRC data mode (1: int16).
    fei_new
        FEI1/FEI2 extended-header fields per frame (``FEI_NEW_KEYS``), empty when there is none.
    """

    data: np.ndarray
    voxel_size_nm: float | None
    mode: int
    fei_new: dict[str, np.ndarray]


def read_mrc_file(path: Path) -> MrcStack:
    """Read an MRC stack; a truncated or unreadable file is a UserError naming it."""
    import mrcfile

    if not path.is_file():
        raise UserError(f"{str(path)!r} does not exist")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with mrcfile.open(path, permissive=True) as mrc:
                data = None if mrc.data is None else np.array(mrc.data)
                voxel_A = float(mrc.voxel_size.x)
                mode = int(mrc.header.mode)
                fei_new = _fei_new_fields(mrc)
        except Exception as exc:  # an unreadable file is the user's to fix, in one line
            raise UserError(f"cannot read {str(path)!r} as an MRC stack: {exc}") from None
    if data is None:
        why = "; ".join(str(w.message) for w in caught if "data block" in str(w.message)) or "no data block"
        raise UserError(f"{str(path)!r} is truncated or not an MRC stack: {why}")
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise UserError(f"{str(path)!r} holds shape {data.shape}; a tilt series stack is (n, ny, nx)")
    voxel_nm = float32_decimal(voxel_A / 10.0) if voxel_A > 0 and voxel_A != 1.0 else None
    return MrcStack(data=data, voxel_size_nm=voxel_nm, mode=mode, fei_new=fei_new)


def _fei_new_fields(mrc) -> dict[str, np.ndarray]:
    """FEI1/FEI2 (EPU, Velox, Tomography 5) extended-header fields per frame, through mrcfile."""
    if bytes(mrc.header.exttyp) not in (b"FEI1", b"FEI2"):
        return {}
    table = mrc.indexed_extended_header
    if table is None or table.dtype.names is None:
        return {}
    return {key: np.asarray(table[name], dtype=np.float64) for key, name in FEI_NEW_KEYS.items()
            if name in table.dtype.names}


def fei_tia_header(path: Path, count: int) -> dict[str, np.ndarray]:
    """The old FEI/TIA extended header (1024 records of 32 floats), first ``count`` records; {} when absent."""
    from rsciio.mrc import file_reader

    try:
        signal = file_reader(str(path), lazy=True)[0]
    except Exception:  # not every MRC file is one rosettasciio reads; the header is optional
        return {}
    header = signal.get("original_metadata", {}).get("fei_header")
    if not header:
        return {}
    return {key: np.asarray(values, dtype=np.float64)[:count] for key, values in header.items()}


def read_tilt_file(path: Path) -> np.ndarray:
    """Angles, degrees, from an IMOD ``.rawtlt``/``.tlt`` (one per line; blank lines ignored)."""
    if not path.is_file():
        raise UserError(f"angles file {str(path)!r} does not exist")
    angles = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if line.strip():
            try:
                angles.append(float(line.split()[0]))
            except ValueError:
                raise UserError(f"{str(path)!r} line {number}: {line.strip()!r} is not a tilt angle in degrees "
                                "(one number per line)") from None
    if not angles:
        raise UserError(f"angles file {str(path)!r} is empty; it needs one tilt angle (degrees) per line")
    return np.asarray(angles, dtype=np.float64)


def tilt_file_beside(path: Path) -> Path | None:
    """``STEM.rawtlt`` or ``STEM.tlt`` next to a stack (``.tlt``, the refined angles, first for aligned ones)."""
    order = (".tlt", ".rawtlt") if path.suffix.lower() in (".ali", ".preali") else (".rawtlt", ".tlt")
    for suffix in order:
        if path.with_suffix(suffix).is_file():
            return path.with_suffix(suffix)
    return None


def _undo_signed_offset(data: np.ndarray, mode: int, means: np.ndarray | None) -> tuple[np.ndarray, str | None]:
    """float32 frames; +32768 when mode 1 and the recorded per-frame means say the counts were shifted."""
    frames = data.astype(np.float32)
    if mode != 1 or means is None or means.shape != (len(frames),):
        return frames, None
    stored = frames.mean(axis=(1, 2), dtype=np.float64)
    if np.max(np.abs(stored + SIGNED_OFFSET - means)) < np.max(np.abs(stored - means)):
        frames += np.float32(SIGNED_OFFSET)
        return frames, (f"stored int16 + {SIGNED_OFFSET:g}: the FEI extended header's mean_int of each frame "
                        f"equals the stored mean + {SIGNED_OFFSET:g} (unsigned counts stored shifted)")
    return frames, None


def _angles(path: Path, angles_path: Path | None, header_angles: np.ndarray | None,
            header_field: str) -> tuple[np.ndarray, str]:
    if angles_path is None:
        angles_path = tilt_file_beside(path)
    if angles_path is not None:
        return read_tilt_file(angles_path), f"{angles_path} (one angle per line)"
    if header_angles is not None:
        return header_angles, f"{path} {header_field}"
    raise UserError(f"{str(path)!r}: no tilt angles: no {path.stem}.rawtlt or {path.stem}.tlt beside it and "
                    "none in its header; give them with --angles FILE (one angle in degrees per line)")


def read_mrc_stack(path: Path | str, angles_path: Path | str | None = None) -> ImportedSeries:
    """An IMOD/MRC tilt stack and its angles as an :class:`ImportedSeries` (frames in stack order).

    Parameters
    ----------
    path
        The stack, shape (n, ny, nx) on disk.
    angles_path
        A ``.rawtlt``/``.tlt`` (one angle per line) to use instead of the one beside the stack.
    """
    path = Path(path)
    stack = read_mrc_file(path)
    count = len(stack.data)
    tia = fei_tia_header(path, count)
    provenance: dict[str, str] = {}
    details: dict[str, object] = {"source_mode": stack.mode, "source_dtype": stack.data.dtype.name}
    frames, offset_note = _undo_signed_offset(stack.data, stack.mode, tia.get("mean_int"))
    provenance["frames"] = f"{path} data block" + (f" ({offset_note})" if offset_note else f" ({stack.data.dtype})")
    details["signed_offset_undone"] = offset_note is not None
    if "a_tilt" in tia:
        header_angles, field_name = tia["a_tilt"], "FEI/TIA extended header a_tilt"
    else:
        header_angles, field_name = stack.fei_new.get("angles_deg"), "FEI extended header Alpha tilt"
    angles, provenance["angles_deg"] = _angles(path, None if angles_path is None else Path(angles_path),
                                               header_angles, field_name)
    if header_angles is not None and header_angles.shape == angles.shape:
        details["header_angles_max_difference_deg"] = float(np.max(np.abs(header_angles - angles)))
    pixel_nm = None
    if tia.get("pixel_size") is not None and tia["pixel_size"][0] > 0:
        pixel_nm = float32_decimal(tia["pixel_size"][0] * 1e9)
        provenance["pixel_size_nm"] = f"{path} FEI/TIA extended header pixel_size (m), frame 0"
    elif stack.fei_new.get("pixel_m") is not None and stack.fei_new["pixel_m"][0] > 0:
        pixel_nm = float32_decimal(stack.fei_new["pixel_m"][0] * 1e9)
        provenance["pixel_size_nm"] = f"{path} FEI extended header Pixel size X (m), frame 0"
    elif stack.voxel_size_nm is not None:
        pixel_nm = stack.voxel_size_nm
        provenance["pixel_size_nm"] = f"{path} MRC header voxel size (A)"
    tilt_axis = None
    if stack.fei_new.get("tilt_axis_deg") is not None:
        tilt_axis = float(stack.fei_new["tilt_axis_deg"][0])
        provenance["tilt_axis_deg"] = f"{path} FEI extended header Tilt axis angle, frame 0"
    for key in ("tilt_axis", "magnification", "ht", "exp_time"):
        if key in tia:
            details[f"fei_{key}"] = float(tia[key][0])
    return ImportedSeries(frames=frames, angles_deg=np.asarray(angles, dtype=np.float64), times_s=None,
                          dose_e_per_A2=None, exposure_s=None, pixel_size_nm=pixel_nm, tilt_axis_deg=tilt_axis,
                          provenance=provenance, details=details)
