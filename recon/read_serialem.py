"""SerialEM tilt series: one stack with its ``.mdoc``, or one ``.mrc`` + ``.mdoc`` per tilt in a folder.

The ``.mdoc`` files are read with the ``mdocfile`` package (sections in any key order). Per ``[ZValue]``
section: the angle from ``TiltAngle``; the time from tiltstream's own ``TimeSinceStart`` (written by
``tiltstream export``), else ``TimeStamp``, else ``DateTime`` (1 s resolution), as seconds since the first
frame; the dose from ``ExposureDose``, else from successive ``PriorRecordDose``; the exposure from
``ExposureTime``; the pixel size from ``PixelSpacing`` (A). The tilt-axis angle is taken from the title line
``Tilt axis angle = ...``. Frames are put into acquisition order by time.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tiltstream.errors import UserError
from tiltstream.recon.imported_series import ImportedSeries
from tiltstream.recon.read_mrc import SUFFIXES, read_mrc_file

TIME_KEYS = ("TimeSinceStart", "TimeStamp", "DateTime")  # in order of preference
DATETIME_FORMATS = ("%d-%b-%y %H:%M:%S", "%d-%b-%Y %H:%M:%S", "%Y-%b-%d %H:%M:%S")
TILT_AXIS_TITLE = re.compile(r"Tilt\s*axis\s*angle\s*=\s*([-+]?\d+(?:\.\d*)?)", re.IGNORECASE)


@dataclass(frozen=True)
class _Section:
    """One ``[ZValue]`` section of one file: where its frame lies and what its mdoc says."""

    stack: Path
    mdoc: Path
    file_order: int
    z: int
    values: dict[str, Any]


def mdoc_beside(stack: Path) -> Path | None:
    """``STACK.mrc.mdoc`` or ``STACK.mdoc`` next to a stack, or None."""
    for candidate in (stack.with_name(stack.name + ".mdoc"), stack.with_suffix(".mdoc")):
        if candidate.is_file():
            return candidate
    return None


def _stack_of(mdoc: Path, image_file: Any) -> Path:
    """The stack an ``.mdoc`` describes: ``X.mrc`` for ``X.mrc.mdoc``, ``X.mrc``/``X.st`` for ``X.mdoc``,
    else its ``ImageFile`` beside it."""
    base = mdoc.with_suffix("")
    candidates = [base] if base.suffix.lower() in SUFFIXES else [base.with_suffix(s) for s in (".mrc", ".st")]
    if image_file:
        candidates.append(mdoc.parent / Path(str(image_file)).name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise UserError(f"{str(mdoc)!r}: its image stack is missing (looked for "
                    f"{', '.join(c.name for c in candidates)} beside it)")


def _pairs(source: Path) -> list[tuple[Path, Path]]:
    """(stack, mdoc) pairs of a source: an ``.mdoc``, a stack with one beside it, or a folder of them."""
    if source.is_dir():
        stacks = sorted(p for p in source.iterdir() if p.suffix.lower() in SUFFIXES)
        if not stacks:
            raise UserError(f"folder {str(source)!r} holds no {'/'.join(SUFFIXES)} stacks to import")
        pairs = []
        for stack in stacks:
            mdoc = mdoc_beside(stack)
            if mdoc is None:
                raise UserError(f"{str(stack)!r} has no .mdoc beside it; a multi-file SerialEM series needs "
                                "one per stack for its tilt angle and time")
            pairs.append((stack, mdoc))
        return pairs
    if source.suffix.lower() == ".mdoc":
        sections, _ = _read_mdoc(source)
        return [(_stack_of(source, sections[0].get("ImageFile") if sections else None), source)]
    mdoc = mdoc_beside(source)
    if mdoc is None:
        raise UserError(f"{str(source)!r} has no .mdoc beside it")
    return [(source, mdoc)]


def _read_mdoc(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """An ``.mdoc``'s sections (each its global keys overlaid by its own; unset keys left out) and its title
    lines, through ``mdocfile``'s model (its DataFrame view lets unset global keys hide section values)."""
    from mdocfile.data_models import Mdoc

    log = logging.getLogger("mdocfile")
    level = log.level
    log.setLevel(logging.ERROR)  # "Unknown fields will be preserved": expected (e.g. tiltstream's own keys)
    try:
        mdoc = Mdoc.from_file(path)
    except Exception as exc:  # a malformed file is the user's to fix, in one line
        raise UserError(f"cannot read {str(path)!r} as a SerialEM .mdoc: {exc}") from None
    finally:
        log.setLevel(level)
    shared = {k: v for k, v in mdoc.global_data.model_dump().items() if v is not None}
    sections = [{**shared, **{k: v for k, v in section.model_dump().items() if v is not None}}
                for section in mdoc.section_data]
    return sections, list(mdoc.titles)


def _sections(stack: Path, mdoc: Path, file_order: int, count: int) -> tuple[list[_Section], list[str]]:
    rows, titles = _read_mdoc(mdoc)
    sections = [_Section(stack, mdoc, file_order, int(values["ZValue"]), values)
                for values in rows if values.get("ZValue") is not None]  # [FrameSet]/[MontSection]: no tilt
    if not sections:
        raise UserError(f"{str(mdoc)!r} has no [ZValue] sections; a tilt series mdoc lists one per frame")
    if len(sections) != count or sorted(s.z for s in sections) != list(range(count)):
        raise UserError(f"{str(mdoc)!r} lists {len(sections)} [ZValue] sections but {str(stack)!r} holds "
                        f"{count} frames")
    return sections, titles


def _number(section: _Section, key: str) -> float | None:
    value = section.values.get(key)
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UserError(f"{str(section.mdoc)!r} [ZValue = {section.z}]: {key} = {value!r} is not a number") from None


def _datetime(section: _Section) -> float:
    text = " ".join(str(section.values["DateTime"]).split())
    for fmt in DATETIME_FORMATS:
        try:
            return dt.datetime.strptime(text, fmt).timestamp()
        except ValueError:
            pass
    raise UserError(f"{str(section.mdoc)!r} [ZValue = {section.z}]: DateTime {text!r} is not a SerialEM date "
                    "(dd-Mon-yy HH:MM:SS)")


def _times(sections: list[_Section]) -> tuple[np.ndarray | None, str | None]:
    """Seconds of each section (tiltstream's TimeSinceStart as is; the others since the first frame)."""
    for key in TIME_KEYS:
        if all(s.values.get(key) is not None for s in sections):
            if key == "DateTime":
                stamps = np.array([_datetime(s) for s in sections])
            else:
                stamps = np.array([_number(s, key) for s in sections])
            if key != "TimeSinceStart":
                stamps = stamps - stamps.min()
            return stamps, key
    return None, None


def _doses(sections: list[_Section]) -> tuple[np.ndarray | None, str | None]:
    """Dose per frame in acquisition order: ExposureDose, else differences of PriorRecordDose."""
    if all(s.values.get("ExposureDose") is not None for s in sections):
        return np.array([_number(s, "ExposureDose") for s in sections]), "ExposureDose (e/A^2)"
    prior = [_number(s, "PriorRecordDose") for s in sections]
    if len(sections) > 1 and all(p is not None for p in prior):
        steps = np.diff(np.asarray(prior, dtype=np.float64))
        return (np.append(steps, steps[-1]),
                "differences of successive PriorRecordDose (e/A^2); the last frame repeats the one before")
    return None, None


def _tilt_axis(titles: list[str]) -> float | None:
    for title in titles:
        match = TILT_AXIS_TITLE.search(str(title))
        if match:
            return float(match.group(1))
    return None


def read_serialem(source: Path | str) -> ImportedSeries:
    """A SerialEM tilt series as an :class:`ImportedSeries`, frames in acquisition (time) order.

    Parameters
    ----------
    source
        An ``.mdoc``; a stack (``.mrc``/``.st``/...) with ``STACK.mrc.mdoc`` or ``STACK.mdoc`` beside it; or
        a folder holding one stack + ``.mdoc`` per tilt (each file's sections become frames).
    """
    source = Path(source)
    if not source.exists():
        raise UserError(f"{str(source)!r} does not exist")
    sections, stacks, titles = [], {}, []
    for order, (stack_path, mdoc) in enumerate(_pairs(source)):
        stacks[stack_path] = read_mrc_file(stack_path)
        found, file_titles = _sections(stack_path, mdoc, order, len(stacks[stack_path].data))
        sections += found
        titles += [t for t in file_titles if t not in titles]
    times, time_key = _times(sections)
    order = sorted(range(len(sections)), key=lambda i: (0.0 if times is None else times[i],
                                                         sections[i].file_order, sections[i].z))
    sections = [sections[i] for i in order]
    mdocs = sorted({s.mdoc for s in sections})
    where = f"{mdocs[0]} [ZValue] sections" if len(mdocs) == 1 else \
        f"the {len(mdocs)} .mdoc files in {mdocs[0].parent} ([ZValue] sections)"
    missing = [f"{s.mdoc.name} [ZValue = {s.z}]" for s in sections if s.values.get("TiltAngle") is None]
    if missing:
        raise UserError(f"{str(source)!r}: no TiltAngle in {', '.join(missing[:3])}; every section needs one")
    provenance = {"frames": f"{where}: data block of each section's stack, sorted by "
                            f"{time_key or 'file and ZValue (no times recorded)'}",
                  "angles_deg": f"{where} TiltAngle"}
    if time_key is not None:
        provenance["times_s"] = f"{where} {time_key}" + ("" if time_key == "TimeSinceStart" else
                                                          ", seconds since the first frame")
    doses, dose_key = _doses(sections)
    if dose_key is not None:
        provenance["dose_e_per_A2"] = f"{where} {dose_key}"
    exposure = None
    if all(s.values.get("ExposureTime") is not None for s in sections):
        exposure = np.array([_number(s, "ExposureTime") for s in sections])
        provenance["exposure_s"] = f"{where} ExposureTime"
    pixel_A = _number(sections[0], "PixelSpacing")
    pixel_nm = None if pixel_A is None or pixel_A == 1.0 else pixel_A / 10.0
    if pixel_nm is not None:
        provenance["pixel_size_nm"] = f"{sections[0].mdoc} PixelSpacing (A)"
    elif stacks[sections[0].stack].voxel_size_nm is not None:
        pixel_nm = stacks[sections[0].stack].voxel_size_nm
        provenance["pixel_size_nm"] = f"{sections[0].stack} MRC header voxel size (A)"
    tilt_axis = _tilt_axis(titles)
    if tilt_axis is not None:
        provenance["tilt_axis_deg"] = f"{where}: title line 'Tilt axis angle = ...'"
    frames = np.stack([stacks[s.stack].data[s.z].astype(np.float32) for s in sections])
    details = {"frame_origins": [f"{s.stack.name} z={s.z}" for s in sections], "mdoc_titles": titles}
    if doses is not None and not np.any(doses):
        details["dose_note"] = "the dose is 0 in every section: not recorded"
    return ImportedSeries(frames=frames, angles_deg=np.array([float(s.values["TiltAngle"]) for s in sections]),
                          times_s=times[order] if times is not None else None, dose_e_per_A2=doses,
                          exposure_s=exposure, pixel_size_nm=pixel_nm, tilt_axis_deg=tilt_axis,
                          provenance=provenance, details=details)
