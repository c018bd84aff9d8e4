"""A DIP-STER run directory: checkpoint, run description, training log, held-out choice and stopping rule.

Layout::

    RUN/
      run.json          session path, settings, DIP-STER config, held-out frame indices, time scale
      checkpoint.pt     :meth:`recon.trainer.Trainer.save` (model, optimiser, scheduler, sampler, frames)
      train_log.csv     step, elapsed_s, loss, lr, heldout_rmse_percent, heldout_ssim (one row per log
                        interval; the held-out columns are empty when no frame is held out)

A run directory that exists is resumed: the checkpoint is loaded, steps and elapsed time continue and
log rows are appended.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

from acquire.errors import UserError

RUN_FILE = "run.json"
CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "train_log.csv"
LOG_COLUMNS = ("step", "elapsed_s", "loss", "lr", "heldout_rmse_percent", "heldout_ssim")


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

    def exists(self) -> bool:
        """True when a run was started here (its run.json and checkpoint exist)."""
        return (self.path / RUN_FILE).is_file() and self.checkpoint.is_file()

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

    def write_description(self, description: dict[str, Any]) -> None:
        """Write run.json atomically."""
        tmp = self.path / (RUN_FILE + ".tmp")
        tmp.write_text(json.dumps(description, indent=2) + "\n")
        os.replace(tmp, self.path / RUN_FILE)

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
        tmp = self.path / (LOG_FILE + ".tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.log)

    def last_elapsed_s(self) -> float:
        """Training seconds recorded so far (0 for a new run)."""
        rows = self.read_log()
        return float(rows[-1]["elapsed_s"]) if rows else 0.0
