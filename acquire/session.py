"""Recorded session on disk (format version 1): crash-safe writer, torn-line-tolerant reader.

Layout and records: docs/design.md 5 (``session.json``, ``frames.jsonl``, ``frames/NNNNNN.tif``, and for
simulated sessions the ground truth). A frame file is durable before its record is appended, so every
record points to a complete file; a torn last line is ignored on read and cut off on resume.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import tifffile

from tiltstream.atomic_files import fsync_dir, write_atomic, write_text_atomic
from tiltstream.errors import UserError

FORMAT_VERSION = 1
SETTINGS_FILE = "session.json"
RECORDS_FILE = "frames.jsonl"
FRAMES_DIR = "frames"
GROUND_TRUTH_FILE = "ground_truth.tif"
GROUND_TRUTH_TIMES_FILE = "ground_truth_times.csv"

log = logging.getLogger(__name__)


class StagePosition(pydantic.BaseModel):
    """Stage position in metres (x, y, z), as the bridge reports it."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")
    x: float = 0.0
    y: float = 0.0
    z: float = 0.0


class TrackingRecord(pydantic.BaseModel):
    """Tracking and focus of one frame (the ``tracking`` field, present only when tracking was on).

    The stage position in effect is the record's own ``stage``.
    """

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")
    mode: str = pydantic.Field(description="previous (nearest recorded frame) or model (live reprojection)")
    reference: int | None = pydantic.Field(None, description="index of the frame measured against "
                                                             "(None: the first frame or the model)")
    shift_px: tuple[float, float] | None = pydantic.Field(
        description="specimen position (x, y) relative to the first tracked frame, pixels; shift by minus it to "
        "align (None: lost)")
    shift_nm: tuple[float, float] | None = pydantic.Field(description="the same in nanometres")
    peak_quality: float = pydantic.Field(description="normalised cross-correlation peak, -1..1")
    lost: bool = pydantic.Field(False, description="peak below the threshold: the shift is not trusted")
    image_shift_m: tuple[float, float] = pydantic.Field(description="image shift (x, y) during the frame, m")
    defocus_m: float | None = pydantic.Field(None, description="probe defocus during the frame, m (None: focus off)")


class FrameRecord(pydantic.BaseModel):
    """One line of ``frames.jsonl``: everything known about one acquired frame."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")
    index: int = pydantic.Field(ge=0, description="frame index in the tilt scheme (GRS index)")
    file: str = pydantic.Field(description="frame file, relative to the session directory")
    target_deg: float = pydantic.Field(description="commanded tilt angle, degrees")
    angle_deg: float = pydantic.Field(description="tilt angle reported by the stage, degrees")
    time_s: float = pydantic.Field(description="exposure midpoint, seconds since session start")
    exposure_s: float = pydantic.Field(ge=0, description="exposure (frame) time, seconds")
    dose_e_per_A2: float = pydantic.Field(ge=0, description="electron dose of this frame, e/A^2")
    temperature_C: float | None = pydantic.Field(default=None, description="specimen temperature, Celsius")
    stage: StagePosition = pydantic.Field(default_factory=StagePosition)
    shape: tuple[int, int] = pydantic.Field(description="frame shape (ny, nx), pixels")
    dtype: str = pydantic.Field(description="numpy dtype name of the frame file")
    tracking: TrackingRecord | None = pydantic.Field(default=None, description="tracking and focus "
                                                     "(None: tracking off, or a session older than tracking)")


class SessionSettings(pydantic.BaseModel):
    """``session.json``: how the session was acquired. ``scheme``/``microscope``/``detector`` are free-form."""

    model_config = pydantic.ConfigDict(extra="allow")
    format_version: int = FORMAT_VERSION
    scheme: dict[str, Any] = pydantic.Field(default_factory=dict)
    microscope: dict[str, Any] = pydantic.Field(default_factory=dict)
    detector: dict[str, Any] = pydantic.Field(default_factory=dict)
    pixel_size_nm: float | None = None
    created: str = pydantic.Field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat())

    @pydantic.field_validator("format_version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != FORMAT_VERSION:
            raise ValueError(f"this tiltstream reads session format {FORMAT_VERSION} only")
        return value


def frame_file_name(index: int) -> str:
    """Relative path of frame ``index``'s file, e.g. ``frames/000012.tif``."""
    return f"{FRAMES_DIR}/{index:06d}.tif"


def _parse_records(text: str, source: Path) -> tuple[list[FrameRecord], int]:
    """Parse ``frames.jsonl`` text; returns records and the byte length of the intact part.

    Only the last line may be torn (no newline, or not valid); a bad line elsewhere is corruption.
    """
    records: list[FrameRecord] = []
    good_bytes = 0
    lines = text.split("\n")
    for number, line in enumerate(lines):
        is_last = number == len(lines) - 1
        if is_last and line == "":
            break
        try:
            if is_last:  # no trailing newline: the append did not finish
                raise ValueError("torn line")
            record = FrameRecord.model_validate_json(line)
        except (ValueError, pydantic.ValidationError):
            if is_last or all(rest.strip() == "" for rest in lines[number + 1:]):
                break
            raise UserError(f"{source}: line {number + 1} is not a valid frame record; "
                            "the session is corrupt beyond a torn last line") from None
        records.append(record)
        good_bytes += len(line.encode("utf-8")) + 1
    return records, good_bytes


@dataclass(frozen=True)
class Session:
    """A recorded session read from disk: settings and the intact frame records, in file order."""

    path: Path
    settings: SessionSettings
    records: tuple[FrameRecord, ...]

    @property
    def angles_deg(self) -> np.ndarray:
        """Reported stage angles of the frames, degrees, shape (n,)."""
        return np.array([r.angle_deg for r in self.records], dtype=np.float64)

    @property
    def times_s(self) -> np.ndarray:
        """Exposure midpoints, seconds since session start, shape (n,)."""
        return np.array([r.time_s for r in self.records], dtype=np.float64)

    def load_frame(self, record: FrameRecord) -> np.ndarray:
        """The frame of ``record`` as stored (its own dtype), shape ``record.shape``."""
        frame = tifffile.imread(self.path / record.file)
        if frame.shape != tuple(record.shape):
            raise UserError(f"{self.path / record.file}: shape {frame.shape} differs from its record "
                            f"{tuple(record.shape)}")
        return frame

    def load_frames(self) -> np.ndarray:
        """All frames as float32, shape (n, ny, nx)."""
        if not self.records:
            return np.zeros((0, 0, 0), dtype=np.float32)
        return np.stack([self.load_frame(r).astype(np.float32) for r in self.records])


def read_session(path: Path | str) -> Session:
    """Read a session directory, ignoring a torn last record.

    Raises
    ------
    UserError
        The directory or its ``session.json`` is missing or unreadable, or records are corrupt.
    """
    path = Path(path)
    settings_path = path / SETTINGS_FILE
    if not settings_path.is_file():
        raise UserError(f"{str(path)!r} is not a session: no {SETTINGS_FILE} there")
    try:
        settings = SessionSettings.model_validate_json(settings_path.read_text())
    except pydantic.ValidationError as exc:
        raise UserError(f"{settings_path}: invalid settings: {exc.errors()[0]['msg']}") from None
    records_path = path / RECORDS_FILE
    text = records_path.read_text(encoding="utf-8") if records_path.exists() else ""
    records, good_bytes = _parse_records(text, records_path)
    if good_bytes != len(text.encode("utf-8")):
        _note_torn_record(records_path, len(records))
    return Session(path=path, settings=settings, records=tuple(records))


_torn_noted: set[Path] = set()  # sessions whose torn last record this process has reported


def _note_torn_record(records_path: Path, intact: int) -> None:
    """Say once per process and session that an incomplete last record was left out (a crash mid-append)."""
    key = records_path.resolve()
    if key not in _torn_noted:
        _torn_noted.add(key)
        log.warning("%s: the last record is incomplete (still being written, or cut off by a crash) and was "
                    "left out; %d complete records read (acquire --resume overwrites a cut-off one)", records_path, intact)


class SessionWriter:
    """Appends frames to a session directory, crash-safely. One writer per session at a time.

    Use :meth:`create` for a new session and :meth:`resume` to continue one.
    """

    def __init__(self, path: Path, settings: SessionSettings, records: list[FrameRecord]) -> None:
        self.path = path
        self.settings = settings
        self._records = records

    @classmethod
    def create(cls, path: Path | str, settings: SessionSettings) -> SessionWriter:
        """Start a new session; refuses a directory that already holds one (use resume)."""
        path = Path(path)
        if (path / SETTINGS_FILE).exists():
            raise UserError(f"session {str(path)!r} already exists; use --resume to continue it "
                            "or choose another directory")
        if path.exists() and any(path.iterdir()):
            raise UserError(f"{str(path)!r} is not empty; a new session needs an empty or new directory")
        (path / FRAMES_DIR).mkdir(parents=True, exist_ok=True)
        write_text_atomic(path / SETTINGS_FILE, settings.model_dump_json(indent=2) + "\n")
        (path / RECORDS_FILE).touch()
        fsync_dir(path)
        return cls(path, settings, [])

    @classmethod
    def resume(cls, path: Path | str) -> SessionWriter:
        """Reopen a session for appending; a torn last record is cut off so it is overwritten."""
        session = read_session(path)
        records_path = session.path / RECORDS_FILE
        raw = records_path.read_bytes() if records_path.exists() else b""
        _, good_bytes = _parse_records(raw.decode("utf-8", errors="replace"), records_path)
        if good_bytes != len(raw):
            with open(records_path, "rb+") as handle:
                handle.truncate(good_bytes)
                os.fsync(handle.fileno())
        (session.path / FRAMES_DIR).mkdir(exist_ok=True)
        return cls(session.path, session.settings, list(session.records))

    @property
    def records(self) -> tuple[FrameRecord, ...]:
        """The records written so far (including those found on resume)."""
        return tuple(self._records)

    @property
    def next_index(self) -> int:
        """The frame index that continues the session without gap or duplicate."""
        return self._records[-1].index + 1 if self._records else int(self.settings.scheme.get("start_index", 0))

    def append(self, frame: np.ndarray, **fields: Any) -> FrameRecord:
        """Write ``frame`` durably, then its record; returns the record.

        Parameters
        ----------
        frame
            2-D array (ny, nx), stored in its own dtype.
        **fields
            The :class:`FrameRecord` fields other than ``file``, ``shape`` and ``dtype``.
        """
        frame = np.ascontiguousarray(frame)
        if frame.ndim != 2:
            raise UserError(f"a frame must be 2-D (ny, nx); got shape {frame.shape}")
        record = FrameRecord(file=frame_file_name(int(fields["index"])), shape=frame.shape,
                             dtype=frame.dtype.name, **fields)
        if record.index != self.next_index:
            raise UserError(f"frame index {record.index} does not continue the session "
                            f"(next is {self.next_index})")
        write_atomic(self.path / record.file, lambda tmp: tifffile.imwrite(tmp, frame, photometric="minisblack"))
        line = record.model_dump_json(exclude={"tracking"} if record.tracking is None else None) + "\n"
        with open(self.path / RECORDS_FILE, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        self._records.append(record)
        return record


def write_ground_truth(path: Path | str, volumes: np.ndarray, times_s: np.ndarray) -> None:
    """Store a simulated session's ground truth: volumes (T, Z, Y, X) float32 and their times (T,), s."""
    path = Path(path)
    volumes = np.asarray(volumes, dtype=np.float32)
    times_s = np.asarray(times_s, dtype=np.float64)
    if volumes.ndim != 4 or len(times_s) != volumes.shape[0]:
        raise UserError(f"ground truth must be (T, Z, Y, X) with T times; got {volumes.shape} and "
                        f"{len(times_s)} times")
    write_atomic(path / GROUND_TRUTH_FILE, lambda tmp: tifffile.imwrite(tmp, volumes, photometric="minisblack"))
    with open(path / GROUND_TRUTH_TIMES_FILE, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "time_s"])
        for index, time_s in enumerate(times_s):
            writer.writerow([index, repr(float(time_s))])


def read_ground_truth(path: Path | str) -> tuple[np.ndarray, np.ndarray] | None:
    """The ground truth of a simulated session, ``(volumes (T, Z, Y, X), times_s (T,))``, or None."""
    path = Path(path)
    if not (path / GROUND_TRUTH_FILE).is_file():
        return None
    volumes = tifffile.imread(path / GROUND_TRUTH_FILE).astype(np.float32)
    with open(path / GROUND_TRUTH_TIMES_FILE, newline="") as handle:
        times_s = np.array([float(row["time_s"]) for row in csv.DictReader(handle)])
    if volumes.ndim == 3:  # a single time step
        volumes = volumes[None]
    return volumes, times_s
