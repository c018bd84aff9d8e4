"""A run directory, live or offline: run description, method state, training log, time scale, held-out rule.

Layout (one format for ``tiltstream live`` and ``recon train``)::

    RUN/
      run.json          ``method`` (``dipster``, ``sirt``: the :mod:`tiltstream.recon.reconstructor` class that
                        reads the state), session path, settings, held-out frame indices, time scale
      checkpoint.pt     DIP-STER state (:meth:`tiltstream.recon.trainer.Trainer.save`: model, optimiser, scheduler,
                        sampler, frames and their metadata); SIRT keeps ``sirt_state.npz`` instead
      train_log.csv     step, elapsed_s, loss, lr, heldout_rmse_percent, heldout_ssim (one row per log
                        interval; the held-out columns are empty when no frame is held out)
      best/             with held-out frames: the state of the lowest held-out reprojection error so far
                        among states holding the same frames as the last one (itself a run directory:
                        ``run.json`` naming the method, the method's state file); run.json's ``best``
                        records its ``step``, ``heldout_rmse_percent`` and ``n_frames``
      refit/            ``recon train --refit`` at the end of an invocation: the best state with its
                        held-out frames folded in and trained on (a run directory as ``best/``);
                        run.json's ``refit`` records ``from_step``, ``steps`` and ``n_frames``

Any run is opened with :func:`open_reconstructor`, at its last state, its best or its refit
(:data:`CHECKPOINTS`).
A run directory that exists is resumed from its last state: steps and elapsed time continue and log rows
are appended. A run without ``run.json`` but with a ``checkpoint.pt`` (a live run of before this
format) is read as ``dipster``.

The best state (:func:`keep_if_best`) is written after the last state's evaluation when its held-out
error is below the recorded best's over the same frames (any improvement, unlike
:class:`PlateauStopper`'s 0.5 %); when the frames change (a live run's next frame, a resumed run whose
session grew) the old best no longer describes the same data and :func:`forget_stale_best` drops it
before the last state with the new frames is saved. So a recorded best always holds every frame the
last state holds. run.json's record is written after ``best/`` and removed before it, so a recorded
best always exists on disk. The refit state is derived from the best at the end of a ``recon train``
invocation (:func:`keep_refit`); any further training drops it first (:func:`forget_refit`), so a
recorded refit always continues the recorded best.

The time scale of a new run (seconds per unit of the network's time coordinate) is
:func:`derive_time_scale_s` of the session's expected frames (:func:`session_expected_frames`) and its
first frame interval, for live and offline runs alike (:func:`session_time_scale_s`).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tiltstream.atomic_files import write_atomic, write_json_atomic
from tiltstream.errors import UserError
from tiltstream.recon.precision import Speed

if TYPE_CHECKING:
    from tiltstream.acquire.session import Session

RUN_FILE = "run.json"
CHECKPOINT_FILE = "checkpoint.pt"
DEFAULT_METHOD = "dipster"  # the method of a run directory whose run.json does not name one
LOG_FILE = "train_log.csv"
LOG_COLUMNS = ("step", "elapsed_s", "loss", "lr", "heldout_rmse_percent", "heldout_ssim")
BEST_DIR = "best"
BEST_KEY = "best"  # run.json's record of the best state
REFIT_DIR = "refit"
REFIT_KEY = "refit"  # run.json's record of the refit state
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


class RunDir:
    """Paths and small files of one run directory."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def log(self) -> Path:
        return self.path / LOG_FILE

    @property
    def best(self) -> Path:
        """The best state's directory."""
        return self.path / BEST_DIR

    def _kept_record(self, key: str, directory: Path) -> dict[str, Any] | None:
        """run.json's record ``key`` of a kept state, or None when there is none or ``directory`` is gone."""
        if not (self.path / RUN_FILE).is_file():
            return None
        record = self.read_description().get(key)
        return record if record and directory.is_dir() else None

    def best_record(self) -> dict[str, Any] | None:
        """run.json's record of the best state (``step``, ``heldout_rmse_percent``, ``n_frames``), or None
        when the run keeps none."""
        return self._kept_record(BEST_KEY, self.best)

    @property
    def refit(self) -> Path:
        """The refit state's directory."""
        return self.path / REFIT_DIR

    def refit_record(self) -> dict[str, Any] | None:
        """run.json's record of the refit state (``from_step``, ``steps``, ``n_frames``), or None when
        the run keeps none."""
        return self._kept_record(REFIT_KEY, self.refit)

    def exists(self) -> bool:
        """True when a run was started here: its run.json exists, or a DIP-STER checkpoint alone (a live
        run of before run.json)."""
        return (self.path / RUN_FILE).is_file() or self.checkpoint.is_file()

    def method(self) -> str:
        """The reconstruction method recorded in run.json (``dipster`` when it names none)."""
        if not (self.path / RUN_FILE).is_file():
            return DEFAULT_METHOD
        return str(self.read_description().get("method", DEFAULT_METHOD))

    def create(self, description: dict[str, Any]) -> None:
        """Start a new run: the directory (new or empty), run.json and the log header."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"run directory {str(self.path)!r} is a file; choose a directory")
        if self.path.is_dir() and any(self.path.iterdir()):
            raise UserError(f"{str(self.path)!r} is not empty and holds no run to resume; choose a new "
                            "or empty directory")
        self.path.mkdir(parents=True, exist_ok=True)
        self.write_description(description)
        with open(self.log, "w", newline="") as handle:
            csv.writer(handle).writerow(LOG_COLUMNS)

    def read_description(self) -> dict[str, Any]:
        """run.json as a dict."""
        try:
            return json.loads((self.path / RUN_FILE).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"{self.path / RUN_FILE}: not readable ({exc}); is {str(self.path)!r} a run?") from None

    def record_method(self, method: str) -> None:
        """Make run.json name ``method`` (created with only that key when missing; written only on change)."""
        path = self.path / RUN_FILE
        description = self.read_description() if path.is_file() else {}
        if description.get("method") != method:
            description["method"] = method
            self.write_description(description)

    def write_description(self, description: dict[str, Any]) -> None:
        """Write run.json atomically."""
        write_json_atomic(self.path / RUN_FILE, description)

    def merge_description(self, changes: dict[str, Any]) -> None:
        """Set ``changes`` in run.json (a key set to None is removed), keeping its other keys; atomic."""
        path = self.path / RUN_FILE
        description = self.read_description() if path.is_file() else {}
        for key, value in changes.items():
            if value is None:
                description.pop(key, None)
            else:
                description[key] = value
        self.write_description(description)

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


def keep_if_best(run: RunDir, description: dict[str, Any], reconstructor: Any, heldout_rmse_percent: float) -> bool:
    """Save ``reconstructor`` as the run's best state when its held-out error is the lowest so far.

    It is the best when no best is recorded, when the recorded one holds another number of frames, or
    when ``heldout_rmse_percent`` is below the recorded error. The state goes to ``best/`` (atomically,
    by the reconstructor's own :meth:`save`), then ``description[BEST_KEY]`` is set and merged into
    run.json (keys written there by others, e.g. a method's settings, are kept).

    Parameters
    ----------
    run
        The run directory.
    description
        run.json's content, kept by the caller (updated in place).
    reconstructor
        A :class:`tiltstream.recon.reconstructor.Reconstructor` just evaluated.
    heldout_rmse_percent
        Its held-out reprojection error, percent.

    Returns
    -------
    bool
        True when it was saved as the best.
    """
    record = description.get(BEST_KEY)
    if (record and record.get("n_frames") == reconstructor.n_frames and run.best.is_dir()
            and not heldout_rmse_percent < float(record["heldout_rmse_percent"])):
        return False
    reconstructor.save(run.best)
    description[BEST_KEY] = {"step": int(reconstructor.steps_done),
                             "heldout_rmse_percent": float(heldout_rmse_percent),
                             "n_frames": int(reconstructor.n_frames)}
    run.merge_description({BEST_KEY: description[BEST_KEY]})
    return True


def forget_stale_best(run: RunDir, description: dict[str, Any], n_frames: int) -> None:
    """Drop the best state when it holds another number of frames than ``n_frames`` (the state about to
    be saved as the last): run.json's record first, then ``best/``."""
    record = description.get(BEST_KEY)
    if record is not None and record.get("n_frames") == n_frames:
        return
    if record is not None:
        del description[BEST_KEY]
        run.merge_description({BEST_KEY: None})
    if run.best.is_dir():
        shutil.rmtree(run.best)


def keep_refit(run: RunDir, description: dict[str, Any], reconstructor: Any, from_step: int) -> None:
    """Save ``reconstructor`` (the best state of step ``from_step`` trained on with its held-out frames
    folded in) as the run's refit state: ``refit/`` first, then run.json's record."""
    reconstructor.save(run.refit)
    description[REFIT_KEY] = {"from_step": int(from_step), "steps": int(reconstructor.steps_done - from_step),
                              "n_frames": int(reconstructor.n_frames)}
    run.merge_description({REFIT_KEY: description[REFIT_KEY]})


def forget_refit(run: RunDir, description: dict[str, Any]) -> None:
    """Drop the refit state before the run trains on (it would no longer continue the best): run.json's
    record first, then ``refit/``."""
    if description.pop(REFIT_KEY, None) is not None:
        run.merge_description({REFIT_KEY: None})
    if run.refit.is_dir():
        shutil.rmtree(run.refit)


def _chosen_state(run: RunDir, checkpoint: str) -> tuple[str, dict[str, Any] | None]:
    """Which state ``checkpoint`` opens (``refit``, ``best`` or ``last``) and its run.json record."""
    if checkpoint in ("auto", "refit"):
        record = run.refit_record()
        if record is not None or checkpoint == "refit":
            return "refit", record
    if checkpoint in ("auto", "best"):
        record = run.best_record()
        if record is not None or checkpoint == "best":
            return "best", record
    return "last", None


def state_in_words(kind: str, record: dict[str, Any] | None) -> str:
    """A kept state (``refit``, ``best`` or ``last``) and its run.json record in words: "last state",
    "best state (step S, held-out error E %)" or "refit state (best step S + R steps on every frame)"."""
    if record is None:
        return "last state"
    if kind == "refit":
        return f"refit state (best step {record['from_step']} + {record['steps']} steps on every frame)"
    return f"best state (step {record['step']}, held-out error {record['heldout_rmse_percent']:.2f} %)"


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
        How a DIP-STER run computes from here on (precision, compilation); SIRT has no network to
        speed up and ignores it.

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
        raise UserError(f"{str(run_dir)!r} is not a trained run (no run.json and checkpoint.pt there)")
    kind, record = _chosen_state(run, checkpoint)
    if kind == "best" and record is None:
        raise UserError(f"run {str(run_dir)!r} keeps no best state (it has no held-out frames, or no "
                        "evaluation since its frames last changed); use --checkpoint last")
    if kind == "refit" and record is None:
        raise UserError(f"run {str(run_dir)!r} keeps no refit state (recon train --refit keeps one when "
                        "frames are held out; a live run keeps none); use --checkpoint best or last")
    state = {"refit": run.refit, "best": run.best, "last": run.path}[kind]
    method = run.method()
    options = speed.trainer_kwargs() if method == "dipster" else {}
    return reconstructor_class(method).load(state, device=device, **options), state_in_words(kind, record)
