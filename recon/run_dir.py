"""A run directory, live or offline: run description, method state, training log, time scale, held-out rule.

:class:`RunDir` is the one reader and writer of ``run.json`` (a :class:`RunDescription`; every change
through :meth:`RunDir.update`); a reconstructor's ``save`` writes its own state file at
:meth:`RunDir.state_path`. :func:`open_reconstructor` opens any run at a state of :data:`CHECKPOINTS`;
:func:`keep_if_best`, :func:`forget_stale_best`, :func:`keep_refit` and :func:`forget_refit` keep the
best and refit states true to the last one; :func:`recorded_time_scale_s` gives a new run's time scale.
Layout and rules: docs/design.md 9.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic

from tiltstream.atomic_files import write_atomic, write_json_atomic
from tiltstream.config import describe_validation_error
from tiltstream.errors import UserError
from tiltstream.recon.precision import Speed

if TYPE_CHECKING:
    from tiltstream.acquire.session import Session

RUN_FILE = "run.json"
DEFAULT_METHOD = "dipster"  # the method of a run directory whose run.json does not name one
LOG_FILE = "train_log.csv"
LOG_COLUMNS = ("step", "elapsed_s", "loss", "lr", "heldout_rmse_percent", "heldout_ssim")
BEST_DIR = "best"
REFIT_DIR = "refit"
CHECKPOINTS = ("auto", "refit", "best", "last")
"""Which state of a run to open: ``last`` (the latest checkpoint), ``best`` (the lowest held-out error;
an error when the run keeps none), ``refit`` (the best trained on with its held-out frames; an error
when the run keeps none), ``auto`` (refit, else best, else last: the first the run keeps)."""


def derive_time_scale_s(expected_frames: int | None, time0_s: float, time1_s: float | None) -> float:
    """The time scale, seconds: expected frames x the first frame interval (``time1_s - time0_s``).

    With one expected frame (or no second frame time) it is ``max(time0_s, 1)`` seconds.

    Raises
    ------
    UserError
        When the number of frames is unknown (give ``--time-scale-s`` or ``--expected-frames``).
    """
    if expected_frames is None:
        raise UserError("the time scale is unknown: give --time-scale-s SECONDS or --expected-frames N "
                        "(or a session whose session.json has a scheme count)")
    if time1_s is None or expected_frames < 2:
        return max(float(time0_s), 1.0)
    interval = float(time1_s) - float(time0_s)
    if not interval > 0:
        raise UserError(f"the first two frames are {interval} s apart; frame times must increase "
                        "(or give --time-scale-s)")
    return expected_frames * interval


def session_expected_frames(settings_scheme: dict, override: int | None = None) -> int | None:
    """Frames expected in a session: ``override``, else its scheme's ``count`` (None when endless)."""
    if override is not None:
        return int(override)
    count = settings_scheme.get("count")
    return None if count is None else int(count)


def session_time_scale_s(settings_scheme: dict, times_s: Sequence[float],
                         expected_frames: int | None = None) -> float:
    """The time scale of a recorded session, seconds: the live rule (:func:`derive_time_scale_s` of the
    expected frames and the first interval), with the recorded frame count standing in for the
    expected frames of an endless scheme.

    Parameters
    ----------
    settings_scheme
        ``session.json``'s ``scheme`` (its ``count``, when the scheme has one).
    times_s
        Frame times in index order, seconds since the session start (at least one).
    expected_frames
        Overrides the scheme's count.
    """
    expected = session_expected_frames(settings_scheme, expected_frames)
    if expected is None:
        expected = len(times_s)
    return derive_time_scale_s(expected, times_s[0], times_s[1] if len(times_s) > 1 else None)


def recorded_time_scale_s(session: Session, expected_frames: int | None = None) -> float:
    """:func:`session_time_scale_s` of a read session (its scheme, its frames' times in index order),
    seconds: the time scale ``recon train`` and ``tiltstream live`` give a new run of it."""
    times_s = [r.time_s for r in sorted(session.records, key=lambda r: r.index)]
    return session_time_scale_s(session.settings.scheme, times_s, expected_frames)


def heldout_positions(count: int, fraction: float) -> list[int]:
    """Positions (0-based, in acquisition order) of the frames to hold out, evenly spread.

    Position ``p`` is held out when ``floor((p + 1) * fraction) > floor(p * fraction)``; the first
    frame is never held out. ``fraction`` is in ``[0, 0.5]``.
    """
    if not 0.0 <= fraction <= 0.5:
        raise UserError(f"holdout fraction {fraction} is outside 0..0.5")
    return [p for p in range(1, count) if math.floor((p + 1) * fraction) > math.floor(p * fraction)]


class PlateauStopper:
    """Stop when the held-out error has not improved for ``patience`` evaluations.

    An evaluation improves when its error is below ``(1 - min_rel_improvement)`` times the best so far.
    ``patience`` 0 never stops.
    """

    def __init__(self, patience: int, min_rel_improvement: float = 0.005) -> None:
        self.patience = int(patience)
        self.min_rel_improvement = float(min_rel_improvement)
        self.best = math.inf
        self.since_best = 0

    def update(self, error: float) -> bool:
        """Record one evaluation; True when training should stop."""
        if error < self.best * (1.0 - self.min_rel_improvement):
            self.best, self.since_best = error, 0
        else:
            self.since_best += 1
        return self.patience > 0 and self.since_best >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best if math.isfinite(self.best) else None, "since_best": self.since_best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = math.inf if state.get("best") is None else float(state["best"])
        self.since_best = int(state.get("since_best", 0))


class BestRecord(pydantic.BaseModel):
    """run.json's ``best``: the state of least held-out error kept in ``best/``."""

    step: int
    heldout_rmse_percent: float
    n_frames: int


class RefitRecord(pydantic.BaseModel):
    """run.json's ``refit``: the best state of step ``from_step`` trained ``steps`` more on every frame."""

    from_step: int
    steps: int
    n_frames: int


class SirtSettings(pydantic.BaseModel):
    """run.json's ``sirt``: the settings a SIRT reconstruction is rebuilt with (frames ``(ny, nx)``, pixels;
    window width, frames; iterations per window; non-negativity)."""

    frame_shape: list[int]
    window: int
    iterations: int
    nonnegative: bool


KEPT_STATES = ("best", "refit")  # run.json's records of kept states: absent from the file when None


class RunDescription(pydantic.BaseModel):
    """run.json: what a run is (every field optional; a field never set is not written).

    Keys other than these (written by an older tiltstream) are kept as they are.
    """

    model_config = pydantic.ConfigDict(extra="allow", validate_assignment=True)
    method: str = pydantic.Field(default=DEFAULT_METHOD, description="the Reconstructor class that reads the "
                                 "state (tiltstream.recon.reconstructor.METHODS)")
    source: str | None = pydantic.Field(default=None, description="live for a tiltstream live run")
    session: str | None = pydantic.Field(default=None, description="the session directory, absolute")
    created: str | None = pydantic.Field(default=None, description="ISO 8601 time the run was created, UTC")
    preset: str | None = None
    config: dict[str, Any] | None = pydantic.Field(default=None, description="DIP-STER's DipsterConfig")
    seed: int | None = None
    device: str | None = None
    frame_shape: list[int] | None = pydantic.Field(default=None, description="(ny, nx) of trained frames, px")
    session_frame_shape: list[int] | None = pydantic.Field(default=None, description="(ny, nx) of the session's "
                                                           "frames before preprocessing, px")
    time_scale_s: float | None = pydantic.Field(default=None, description="seconds per unit of network time")
    holdout: float | None = pydantic.Field(default=None, description="fraction of frames held out")
    heldout_indices: list[int] | None = None
    preprocess: dict[str, Any] | None = pydantic.Field(default=None, description="what preprocessing did")
    ranks: int | None = pydantic.Field(default=None, description="data-parallel ranks of the last invocation")
    stopper: dict[str, Any] | None = pydantic.Field(default=None, description="PlateauStopper state")
    sirt: SirtSettings | None = None
    best: BestRecord | None = None
    refit: RefitRecord | None = None

    def to_json(self) -> dict[str, Any]:
        """The fields set (a kept-state record only when there is one), as JSON values."""
        data = self.model_dump(mode="json", exclude_unset=True)
        return {k: v for k, v in data.items() if not (k in KEPT_STATES and v is None)}


class RunDir:
    """Paths and files of one run directory: the one reader and writer of its run.json."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @property
    def log(self) -> Path:
        return self.path / LOG_FILE

    @property
    def best(self) -> Path:
        """The best state's directory."""
        return self.path / BEST_DIR

    @property
    def refit(self) -> Path:
        """The refit state's directory."""
        return self.path / REFIT_DIR

    def state_path(self, name: str) -> Path:
        """Where a reconstructor keeps its state file ``name`` (its ``STATE_FILE``)."""
        return self.path / name

    def has_state(self) -> bool:
        """True when the recorded method's state file is here (a run stopped before its first checkpoint
        has run.json only)."""
        return (self.path / _state_file(self.method())).is_file()

    def best_record(self) -> BestRecord | None:
        """run.json's record of the best state, or None when the run keeps none (or ``best/`` is gone)."""
        record = self.read().best
        return record if record is not None and self.best.is_dir() else None

    def refit_record(self) -> RefitRecord | None:
        """run.json's record of the refit state, or None when the run keeps none (or ``refit/`` is gone)."""
        record = self.read().refit
        return record if record is not None and self.refit.is_dir() else None

    def exists(self) -> bool:
        """True when a run was started here: its run.json exists, or the default method's state alone (a
        live run of before run.json)."""
        return (self.path / RUN_FILE).is_file() or (self.path / _state_file(DEFAULT_METHOD)).is_file()

    def method(self) -> str:
        """The reconstruction method recorded in run.json (``dipster`` when it names none)."""
        return self.read().method

    def create(self, description: RunDescription) -> None:
        """Start a new run: the directory (new or empty), run.json and the log header."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"run directory {str(self.path)!r} is a file; choose a directory")
        if self.path.is_dir() and any(self.path.iterdir()):
            raise UserError(f"{str(self.path)!r} is not empty and holds no run to resume; choose a new "
                            "or empty directory")
        self.path.mkdir(parents=True, exist_ok=True)
        self.write(description)
        self.start_log()

    def start_log(self) -> None:
        """Write the log's header when there is no log yet."""
        if not self.log.is_file():
            with open(self.log, "w", newline="") as handle:
                csv.writer(handle).writerow(LOG_COLUMNS)

    def read(self) -> RunDescription:
        """run.json (an empty description, method ``dipster``, when there is none).

        Raises
        ------
        UserError
            run.json cannot be read or is not a run description.
        """
        path = self.path / RUN_FILE
        if not path.is_file():
            return RunDescription()
        try:
            return RunDescription.model_validate_json(path.read_bytes())
        except (OSError, pydantic.ValidationError) as exc:
            reason = describe_validation_error(exc) if isinstance(exc, pydantic.ValidationError) else exc
            raise UserError(f"{path}: not readable ({reason}); is {str(self.path)!r} a run?") from None

    def write(self, description: RunDescription) -> None:
        """Replace run.json by ``description``, atomically."""
        write_json_atomic(self.path / RUN_FILE, description.to_json())

    def update(self, **changes: Any) -> RunDescription:
        """Set ``changes`` (fields of :class:`RunDescription`; a kept-state record set to None is dropped)
        in run.json, keeping its other fields; written (atomically) only when it changes. Returns the
        description as written."""
        description = self.read()
        before = description.to_json()
        for key, value in changes.items():
            setattr(description, key, value)
        if description.to_json() != before or not (self.path / RUN_FILE).is_file():
            self.write(description)
        return description

    def append_log(self, row: dict[str, Any]) -> None:
        """Append one row (missing columns empty) and flush it to disk."""
        with open(self.log, "a", newline="") as handle:
            csv.writer(handle).writerow(["" if row.get(c) is None else row[c] for c in LOG_COLUMNS])
            handle.flush()
            os.fsync(handle.fileno())

    def read_log(self) -> list[dict[str, str]]:
        """All log rows, as strings."""
        if not self.log.is_file():
            return []
        with open(self.log, newline="") as handle:
            return list(csv.DictReader(handle))

    def truncate_log(self, max_step: int) -> None:
        """Drop log rows after ``max_step`` (written after the last checkpoint of a run that crashed)."""
        rows = [r for r in self.read_log() if int(r["step"]) <= max_step]

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS)
                writer.writeheader()
                writer.writerows(rows)

        write_atomic(self.log, write)

    def last_elapsed_s(self) -> float:
        """Training seconds recorded so far (0 for a new run)."""
        rows = self.read_log()
        return float(rows[-1]["elapsed_s"]) if rows else 0.0


def _state_file(method: str) -> str:
    """The state file of ``method``'s reconstructor class (its ``STATE_FILE``)."""
    from tiltstream.recon.reconstructor import reconstructor_class

    return reconstructor_class(method).STATE_FILE


def keep_if_best(run: RunDir, reconstructor: Any, heldout_rmse_percent: float) -> bool:
    """Save ``reconstructor`` as the run's best state when its held-out error is the lowest so far.

    It is the best when no best is recorded, when the recorded one holds another number of frames, or
    when ``heldout_rmse_percent`` is below the recorded error. The state goes to ``best/`` (atomically,
    by the reconstructor's own :meth:`save`), then run.json's ``best`` is set.

    Parameters
    ----------
    run
        The run directory.
    reconstructor
        A :class:`tiltstream.recon.reconstructor.Reconstructor` just evaluated.
    heldout_rmse_percent
        Its held-out reprojection error, percent.

    Returns
    -------
    bool
        True when it was saved as the best.
    """
    record = run.best_record()
    if (record is not None and record.n_frames == reconstructor.n_frames
            and not heldout_rmse_percent < record.heldout_rmse_percent):
        return False
    reconstructor.save(run.best)
    run.update(best=BestRecord(step=int(reconstructor.steps_done), heldout_rmse_percent=float(heldout_rmse_percent),
                               n_frames=int(reconstructor.n_frames)))
    return True


def forget_stale_best(run: RunDir, n_frames: int) -> None:
    """Drop the best state when it holds another number of frames than ``n_frames`` (the state about to
    be saved as the last): run.json's record first, then ``best/``."""
    record = run.read().best
    if record is not None and record.n_frames == n_frames:
        return
    if record is not None:
        run.update(best=None)
    if run.best.is_dir():
        shutil.rmtree(run.best)


def keep_refit(run: RunDir, reconstructor: Any, from_step: int) -> None:
    """Save ``reconstructor`` (the best state of step ``from_step`` trained on with its held-out frames
    folded in) as the run's refit state: ``refit/`` first, then run.json's record."""
    reconstructor.save(run.refit)
    run.update(refit=RefitRecord(from_step=int(from_step), steps=int(reconstructor.steps_done - from_step),
                                 n_frames=int(reconstructor.n_frames)))


def forget_refit(run: RunDir) -> None:
    """Drop the refit state before the run trains on (it would no longer continue the best): run.json's
    record first, then ``refit/``."""
    if run.read().refit is not None:
        run.update(refit=None)
    if run.refit.is_dir():
        shutil.rmtree(run.refit)


def _chosen_state(run: RunDir, checkpoint: str) -> tuple[str, BestRecord | RefitRecord | None]:
    """Which state ``checkpoint`` opens (``refit``, ``best`` or ``last``) and its run.json record."""
    if checkpoint in ("auto", REFIT_DIR):
        record = run.refit_record()
        if record is not None or checkpoint == REFIT_DIR:
            return REFIT_DIR, record
    if checkpoint in ("auto", BEST_DIR):
        record = run.best_record()
        if record is not None or checkpoint == BEST_DIR:
            return BEST_DIR, record
    return "last", None


def state_in_words(kind: str, record: BestRecord | RefitRecord | None) -> str:
    """A kept state (``refit``, ``best`` or ``last``) and its run.json record in words: "last state",
    "best state (step S, held-out error E %)" or "refit state (best step S + R steps on every frame)"."""
    if record is None:
        return "last state"
    if isinstance(record, RefitRecord):
        return f"refit state (best step {record.from_step} + {record.steps} steps on every frame)"
    return f"best state (step {record.step}, held-out error {record.heldout_rmse_percent:.2f} %)"


def open_reconstructor(run_dir: str | Path, device: str = "cpu", checkpoint: str = "last",
                       speed: Speed = Speed()) -> Any:
    """The reconstruction in ``run_dir``: :func:`open_state` without the words."""
    return open_state(run_dir, device, checkpoint, speed)[0]


def open_state(run_dir: str | Path, device: str = "cpu", checkpoint: str = "last",
               speed: Speed = Speed()) -> tuple[Any, str]:
    """The reconstruction in ``run_dir`` (live or offline), loaded by the class of its recorded method,
    and which state it is in words (:func:`state_in_words`), from one choice of state.

    Parameters
    ----------
    run_dir
        A run directory.
    device
        Where the loaded state computes.
    checkpoint
        One of :data:`CHECKPOINTS`: ``last`` (what training resumes from), ``best``, ``refit`` or ``auto``.
    speed
        How the loaded state computes from here on (precision, compilation; a method without a network
        ignores it).

    Returns
    -------
    tiltstream.recon.reconstructor.Reconstructor, str

    Raises
    ------
    UserError
        No run there, an unknown method or checkpoint, ``best`` or ``refit`` of a run that keeps none,
        or unreadable state.
    """
    from tiltstream.recon.reconstructor import reconstructor_class

    if checkpoint not in CHECKPOINTS:
        raise UserError(f"checkpoint {checkpoint!r} is not one of {', '.join(CHECKPOINTS)}")
    run = RunDir(run_dir)
    if not run.exists():
        raise UserError(f"{str(run_dir)!r} is not a trained run (no {RUN_FILE} and "
                        f"{_state_file(DEFAULT_METHOD)} there)")
    kind, record = _chosen_state(run, checkpoint)
    if kind == BEST_DIR and record is None:
        raise UserError(f"run {str(run_dir)!r} keeps no best state (it has no held-out frames, or no "
                        "evaluation since its frames last changed); use --checkpoint last")
    if kind == REFIT_DIR and record is None:
        raise UserError(f"run {str(run_dir)!r} keeps no refit state (recon train --refit keeps one when "
                        "frames are held out; a live run keeps none); use --checkpoint best or last")
    state = {REFIT_DIR: run.refit, BEST_DIR: run.best, "last": run.path}[kind]
    reconstructor = reconstructor_class(run.method()).load(state, device=device, **speed.trainer_kwargs())
    return reconstructor, state_in_words(kind, record)
