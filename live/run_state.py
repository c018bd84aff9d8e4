"""The live process's run directory: the same format as ``recon train`` (:mod:`tiltstream.recon.run_dir`), plus endpoints.

``RUN/`` holds ``run.json`` (method, session, settings, time scale, held-out frames), the
reconstructor's state (:meth:`tiltstream.recon.reconstructor.Reconstructor.save`, its ``STATE_FILE``;
per-frame metadata such as dose and temperature inside it), ``train_log.csv`` (one row per log
interval, with the held-out reprojection error when frames are held out), ``best/`` (DIP-STER with held-out frames: the state of the lowest held-out error since the frames
last changed, :func:`tiltstream.recon.run_dir.keep_if_best`), ``endpoints.json`` (the bound status and request
endpoints, for clients that start later) and at the end ``volumes.tif`` + ``volumes_times.csv`` (of the
state ``recon volumes`` reads by default: ``best/`` when kept, else the last). ``recon volumes``,
``recon metrics`` and a resumed ``recon train`` read it like any run directory.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from tiltstream.atomic_files import write_json_atomic
from tiltstream.errors import UserError
from tiltstream.live.settings import LiveSettings
from tiltstream.recon.precision import Speed
from tiltstream.recon.reconstructor import Reconstructor
from tiltstream.recon.run_dir import (RunDescription, RunDir, forget_refit, forget_stale_best, keep_if_best,
                                      open_reconstructor, open_state)

log = logging.getLogger(__name__)

ENDPOINTS_FILE = "endpoints.json"
VOLUMES_FILE = "volumes.tif"


def new_reconstructor(settings: LiveSettings, frame_shape: tuple[int, int], time_scale_s: float | None,
                      device: str) -> Reconstructor:
    """A fresh reconstructor of ``settings.method`` for frames ``(ny, nx)`` (the one method-specific place)."""
    if settings.method == "sirt":
        from tiltstream.recon.sirt_reconstructor import SirtReconstructor

        return SirtReconstructor(frame_shape, window=settings.sirt_window, iterations=settings.sirt_iterations,
                                 nonnegative=True, device=device)
    from tiltstream.recon.presets import preset
    from tiltstream.recon.trainer import Trainer

    config = preset(settings.preset)
    if config.network == "kplanes" and settings.holdout == 0:
        log.warning("preset %s with --holdout 0: the K-planes field can fit the shot noise of a small "
                    "low-dose session and get worse with time (docs/benchmarks/kplanes.md, "
                    "'A factorised field'); --holdout 0.1 keeps the state of least held-out error in "
                    "%s/best", settings.preset, settings.out)
    return Trainer(config, frame_shape, time_scale_s, device=device, seed=settings.seed,
                   **speed_of(settings).trainer_kwargs())


def speed_of(settings: LiveSettings) -> Speed:
    """How the live process computes DIP-STER (``--precision``, ``--compile``; not saved in the run)."""
    return Speed(settings.precision, settings.compile)


class RunState:
    """Opens, creates and checkpoints the run directory ``settings.out``.

    Parameters
    ----------
    settings
        :class:`tiltstream.live.settings.LiveSettings`.
    device
        Where a loaded or new reconstructor computes (``"cpu"``, ``"cuda"``).
    """

    def __init__(self, settings: LiveSettings, device: str) -> None:
        self.settings = settings
        self.device = device
        self.run = RunDir(settings.out)
        if self.run.path.exists() and not self.run.path.is_dir():
            raise UserError(f"run directory {str(self.run.path)!r} is a file; choose a directory")
        self.run.path.mkdir(parents=True, exist_ok=True)
        self.elapsed0_s = 0.0  # training seconds logged before this process (a resumed run)
        self.last_checkpoint = time.monotonic()
        self.last_log = 0.0
        self.logged_step = 0  # the step of the last train_log.csv row
        self.heldout_step: list[int] = []  # steps of the held-out evaluations logged
        self.heldout_rmse_percent: list[float] = []  # their held-out reprojection error, percent

    @property
    def path(self) -> Path:
        return self.run.path

    def resume(self) -> Reconstructor | None:
        """The reconstructor saved here (None for a new run); the log is cut back to its last step.

        Raises
        ------
        UserError
            The run was made with another method than ``--method``.
        """
        if not self.run.exists():
            return None
        method = self.run.method()
        if method != self.settings.method:
            raise UserError(f"run directory {str(self.path)!r} holds a {method} reconstruction; give "
                            f"--method {method} or choose another --out")
        if not self.run.has_state():
            return None  # run.json written, no state yet: a run stopped before its first checkpoint
        reconstructor = open_reconstructor(self.path, device=self.device, speed=speed_of(self.settings))
        forget_refit(self.run)  # recon train's refit would not continue what trains now
        self.run.truncate_log(reconstructor.steps_done)
        self.elapsed0_s = self.run.last_elapsed_s()
        self.logged_step = reconstructor.steps_done
        rows = [r for r in self.run.read_log() if r.get("heldout_rmse_percent")]
        self.heldout_step = [int(r["step"]) for r in rows]
        self.heldout_rmse_percent = [float(r["heldout_rmse_percent"]) for r in rows]
        return reconstructor

    def start(self, reconstructor: Reconstructor, session: str, time_scale_s: float | None) -> None:
        """Record a new run in run.json and start its log."""
        s = self.settings
        description = RunDescription(
            method=reconstructor.method, source="live",
            session=str(Path(s.session).resolve()) if s.session is not None else session,
            created=dt.datetime.now(dt.timezone.utc).isoformat(), seed=s.seed, device=self.device,
            time_scale_s=time_scale_s, holdout=s.holdout, heldout_indices=[], preprocess=None,
            frame_shape=list(reconstructor.frame_shape))
        if reconstructor.method == "dipster":
            description.preset, description.config = s.preset, reconstructor.config.model_dump(mode="json")
        self.run.write(description)
        self.run.start_log()

    def log_due(self, reconstructor: Reconstructor) -> bool:
        """Whether a train_log.csv row is due: ``log_interval_s`` passed and steps were trained since the last."""
        return (time.monotonic() - self.last_log >= self.settings.log_interval_s
                and reconstructor.steps_done > self.logged_step)

    def log_row(self, reconstructor: Reconstructor, loss: float | None, train_s: float) -> None:
        """Append one train_log.csv row at the reconstructor's step, with the held-out reprojection error
        (also kept in :attr:`heldout_step` / :attr:`heldout_rmse_percent`) when frames are held out; a
        DIP-STER state that lowers it is saved as the run's best.

        Parameters
        ----------
        loss
            Mean loss of the last chunk (None when unknown).
        train_s
            Seconds this process has trained (added to what the log held when it resumed).
        """
        heldout = reconstructor.heldout_metrics() if reconstructor.n_frames else None
        if heldout is not None:
            self.heldout_step.append(reconstructor.steps_done)
            self.heldout_rmse_percent.append(heldout["heldout_rmse_percent"])
            if reconstructor.method == "dipster":  # SIRT recomputes its windows from the frames: last is best
                keep_if_best(self.run, reconstructor, heldout["heldout_rmse_percent"])
        row: dict[str, Any] = {"step": reconstructor.steps_done, "elapsed_s": round(self.elapsed0_s + train_s, 3),
                               "loss": loss, "lr": getattr(reconstructor, "learning_rate", None), **(heldout or {})}
        self.run.append_log(row)
        self.last_log = time.monotonic()
        self.logged_step = reconstructor.steps_done

    def checkpoint(self, reconstructor: Reconstructor) -> None:
        """Save the reconstructor's state (atomically) and keep run.json's held-out list in step; a best
        state of fewer frames is dropped first."""
        held = sorted(r["index"] for r in reconstructor.frame_records if r["held_out"])
        if self.run.read().heldout_indices is not None:  # a run started here or by recon train
            self.run.update(heldout_indices=held)
        forget_stale_best(self.run, reconstructor.n_frames)
        reconstructor.save(self.path)
        self.last_checkpoint = time.monotonic()

    def write_endpoints(self, status: str, request: str) -> None:
        """endpoints.json: the bound status and request ("volume") endpoints and this process's id."""
        write_json_atomic(self.path / ENDPOINTS_FILE, {"status": status, "volume": request, "pid": os.getpid()},
                          indent=None)

    def write_volumes(self, reconstructor: Reconstructor, count: int) -> tuple[Path, str]:
        """The volume-time series at the frame times (or ``count`` evenly spaced), via tiltstream.recon.volume_io, of
        the state ``recon volumes`` reads by default: the best by held-out error when the run keeps one of
        all its frames (call after :meth:`checkpoint`, which drops a best of fewer; a live run keeps no
        refit), else ``reconstructor``.

        Returns
        -------
        path, state
            The file written, and which state it holds in words (:func:`tiltstream.recon.run_dir.state_in_words`).
        """
        from tiltstream.recon.run_voxel import run_voxel_size_nm
        from tiltstream.recon.volume_io import write_volumes

        state = "last state"
        if self.run.best_record() is not None:  # else the last state: the one in memory, not read again
            reconstructor, state = open_state(self.path, device=self.device, checkpoint="auto",
                                              speed=speed_of(self.settings))
        times = np.sort(np.asarray([r["time_s"] for r in reconstructor.frame_records]))
        if count:
            times = np.linspace(times[0], times[-1], count)
        volumes = np.stack([reconstructor.volume(float(t)) for t in times])
        path = self.path / VOLUMES_FILE
        write_volumes(path, volumes, times, voxel_size_nm=run_voxel_size_nm(self.run.read()))
        return path, state
