"""``tiltstream recon train`` and ``tiltstream recon volumes``: offline DIP-STER on a recorded session.

``recon train --session S --out RUN`` trains (or resumes) a run directory (:mod:`recon.run_dir`);
``recon volumes --run RUN --out volumes.tif`` writes the volume-time series it has learnt, in data
units. Heavy modules (torch) are imported inside the commands, so ``tiltstream --help`` stays fast.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
import time
from pathlib import Path
from typing import Literal

import pydantic

from acquire.config import add_model_arguments, describe_validation_error, load_settings, overrides_from_args, read_toml
from acquire.errors import UserError
from recon.presets import preset


class ReconTrainSettings(pydantic.BaseModel):
    """Settings of ``tiltstream recon train`` (defaults also in ``config/recon.toml``)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    preset: Literal["paper", "fast"] = pydantic.Field(
        default="fast", description="DIP-STER hyperparameters: paper (the paper's network) or fast "
        "(tuned for time-to-quality on a CPU); ignored when resuming (the run keeps its own)")
    steps: int | None = pydantic.Field(
        default=None, ge=0, description="training steps to run in this invocation, steps "
        "(default 2000 when --minutes is not given either)")
    minutes: float | None = pydantic.Field(
        default=None, gt=0, description="wall-clock training budget of this invocation, minutes")
    device: Literal["auto", "cpu", "cuda"] = pydantic.Field(
        default="auto", description="where to train: auto picks CUDA when available")
    seed: int = pydantic.Field(default=0, ge=0, description="seed of the initial weights and the sampler")
    holdout: float = pydantic.Field(
        default=0.0, ge=0.0, le=0.5, description="fraction of frames held out of training to track "
        "reprojection error and SSIM without ground truth (0 to 0.5, evenly spread)")
    patience: int = pydantic.Field(
        default=0, ge=0, description="stop when the held-out error has not improved by 0.5 % for this "
        "many evaluations (0: never stop early; needs --holdout)")
    eval_every: int = pydantic.Field(
        default=250, ge=1, description="steps between log rows, held-out evaluations and checkpoints")
    threads: int | None = pydantic.Field(
        default=None, ge=1, description="CPU threads for torch (1 is often fastest on a shared machine); "
        "default: torch's choice")
    preprocess: str = pydantic.Field(
        default="none", description="preprocessing of the frames before a new run trains on them "
        "(recon/preprocess.py): none; paper (the paper's pipeline for experimental data: median "
        "background, 0.9 x Otsu mask, normalisation, cross-correlation alignment, centring); or a TOML "
        "file of PreprocessConfig fields. What it did is recorded in run.json")


DEFAULT_STEPS = 2000


def _preprocess_config(value: str) -> object | None:
    """The PreprocessConfig named by ``--preprocess`` (None for ``none``); UserError for a bad value."""
    from recon.preprocess import PreprocessConfig

    if value == "none":
        return None
    if value == "paper":
        return PreprocessConfig()
    if not Path(value).is_file():
        raise UserError(f"invalid preprocess = {value!r}: allowed are none, paper, or a TOML file of "
                        "preprocessing settings")
    try:
        return PreprocessConfig.model_validate(read_toml(Path(value)))
    except pydantic.ValidationError as exc:
        raise UserError(f"{value}: {describe_validation_error(exc)}") from None


class ReconVolumesSettings(pydantic.BaseModel):
    """Settings of ``tiltstream recon volumes`` (a ``--config`` TOML may set them too)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    times: str = pydantic.Field(
        default="all", description="all or at-frames: one volume per acquired frame time, seconds (the "
        "two are the same: every frame, training and held-out, in time order); or T1,T2,... in seconds "
        "since the session start")
    format: Literal["tif", "mrc"] | None = pydantic.Field(
        default=None, description="file format (default: from the file name, tif unless .mrc)")
    device: Literal["auto", "cpu", "cuda"] = pydantic.Field(
        default="auto", description="where to evaluate the network: auto picks CUDA when available")


class _Progress:
    """One line on stderr, rewritten with ``\\r``: steps, rate, loss, learning rate, ETA."""

    def __init__(self, total_steps: int | None, budget_s: float | None) -> None:
        self.total_steps, self.budget_s = total_steps, budget_s
        self.start = time.perf_counter()

    def show(self, done: int, loss: float, lr: float, extra: str = "") -> None:
        elapsed = time.perf_counter() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        if self.total_steps is not None and rate > 0:
            eta = (self.total_steps - done) / rate
        else:
            eta = max(0.0, (self.budget_s or 0.0) - elapsed)
        if self.budget_s is not None:
            eta = min(eta, max(0.0, self.budget_s - elapsed))
        of = f"/{self.total_steps}" if self.total_steps is not None else ""
        print(f"\rstep {done}{of}  {rate:.1f} steps/s  loss {loss:.3e}  lr {lr:.2e}{extra}  "
              f"ETA {eta:.0f} s   ", end="", file=sys.stderr, flush=True)


def run_train(args: argparse.Namespace) -> int:
    """Train or resume the run directory ``args.out`` on session ``args.session``."""
    settings = load_settings(ReconTrainSettings, name="recon", config_file=args.config,
                             overrides=overrides_from_args(args, ReconTrainSettings))
    if settings.patience and not settings.holdout:
        raise UserError("--patience needs held-out frames: give --holdout FRACTION (e.g. 0.1)")
    session_path = Path(args.session)
    from recon.session_frames import load_session_frames

    session, frames = load_session_frames(session_path)

    import torch

    from recon.run_dir import PlateauStopper, RunDir, heldout_positions
    from recon.trainer import Trainer

    if settings.threads:
        torch.set_num_threads(settings.threads)
    from recon.device import resolve_device

    device = str(resolve_device(settings.device))
    run = RunDir(args.out)
    records = session.records
    if run.exists():
        description = run.read_description()
        session_shape = description.get("session_frame_shape", description["frame_shape"])
        if session_shape != list(frames.shape[1:]):
            raise UserError(f"run {str(run.path)!r} was trained on frames {session_shape}; "
                            f"session {str(session_path)!r} has {list(frames.shape[1:])}")
        trainer = Trainer.load(run.checkpoint, device=device)
        grown = [r.index for r in records if r.index not in set(trainer.indices)]
        if description.get("preprocess") and grown:
            raise UserError(f"run {str(run.path)!r} was preprocessed (aligned) as a whole; the session has "
                            f"{len(grown)} new frame(s) it cannot take consistently: start a new run")
        run.truncate_log(trainer.steps_done)
        held = set(description["heldout_indices"])
        stopper = PlateauStopper(settings.patience)
        stopper.load_state_dict(description.get("stopper", {}))
        resumed = f"resumed at step {trainer.steps_done}"
    else:
        raw_shape = list(frames.shape[1:])
        preprocess_config = _preprocess_config(settings.preprocess)
        report = None
        if preprocess_config is not None:
            from recon.preprocess import apply

            frames, report = apply(frames, session.angles_deg, preprocess_config)
        config = preset(settings.preset)
        time_scale_s = float(max(r.time_s for r in records)) or 1.0
        trainer = Trainer(config, frames.shape[1:], time_scale_s, device=device, seed=settings.seed)
        held = {records[p].index for p in heldout_positions(len(records), settings.holdout)}
        description = {
            "session": str(session_path.resolve()), "created": dt.datetime.now(dt.timezone.utc).isoformat(),
            "preset": settings.preset, "config": config.model_dump(mode="json"), "seed": settings.seed,
            "frame_shape": list(frames.shape[1:]), "time_scale_s": time_scale_s,
            "heldout_indices": sorted(held), "device": device,
            "session_frame_shape": raw_shape, "preprocess": report,
        }
        run.create(description)
        stopper = PlateauStopper(settings.patience)
        resumed = "new run"
    known = set(trainer.indices)
    added = 0
    for record, frame in zip(records, frames):
        if record.index not in known:  # a session that grew since the last invocation
            trainer.add_frame(record.index, frame, record.angle_deg, record.time_s,
                              held_out=record.index in held)
            added += 1
    print(f"recon train: {resumed}; {trainer.n_train_frames} training + "
          f"{trainer.n_frames - trainer.n_train_frames} held-out frames ({added} new), "
          f"{frames.shape[1]}x{frames.shape[2]} px, preset {description['preset']}, device {device}",
          file=sys.stderr)

    total = settings.steps if settings.steps is not None else (None if settings.minutes else DEFAULT_STEPS)
    budget_s = settings.minutes * 60.0 if settings.minutes else None
    progress = _Progress(total, budget_s)
    elapsed0 = run.last_elapsed_s()
    start = time.perf_counter()
    done, stop_reason = 0, "steps done"
    while True:
        if total is not None and done >= total:
            break
        if budget_s is not None and time.perf_counter() - start >= budget_s:
            stop_reason = "time budget spent"
            break
        chunk = settings.eval_every - trainer.steps_done % settings.eval_every
        if total is not None:
            chunk = min(chunk, total - done)
        loss = trainer.train_steps(chunk)
        done += chunk
        row = {"step": trainer.steps_done, "elapsed_s": round(elapsed0 + time.perf_counter() - start, 3),
               "loss": loss, "lr": trainer.learning_rate}
        extra, stop = "", False
        if trainer.steps_done % settings.eval_every == 0:
            metrics = trainer.heldout_metrics()
            if metrics is not None:
                row.update(metrics)
                extra = f"  held-out {metrics['heldout_rmse_percent']:.2f} % SSIM {metrics['heldout_ssim']:.4f}"
                stop = stopper.update(metrics["heldout_rmse_percent"])
        trainer.save(run.checkpoint)
        description["stopper"] = stopper.state_dict()
        run.write_description(description)
        run.append_log(row)
        progress.show(done, loss, trainer.learning_rate, extra)
        if stop:
            stop_reason = f"held-out error has not improved for {settings.patience} evaluations"
            break
    trainer.save(run.checkpoint)
    print(f"\nrecon train: {stop_reason}; {done} steps this run, {trainer.steps_done} in total; "
          f"checkpoint {run.checkpoint}", file=sys.stderr)
    return 0


def parse_times(text: str) -> str | list[float]:
    """``all`` / ``at-frames`` or a comma-separated list of seconds; UserError otherwise."""
    if text in ("all", "at-frames"):
        return text
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--times {text!r} is not all, at-frames or a comma-separated list of seconds") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise UserError(f"--times {text!r} must list at least one finite time in seconds")
    return values


def run_volumes(args: argparse.Namespace) -> int:
    """Write the volume-time series of a trained run."""
    import numpy as np

    from recon.run_dir import RunDir
    from recon.trainer import Trainer
    from recon.volume_io import write_volumes

    settings = load_settings(ReconVolumesSettings, config_file=args.config,
                             overrides=overrides_from_args(args, ReconVolumesSettings))
    times = parse_times(settings.times)
    run = RunDir(args.run_dir)
    if not run.exists():
        raise UserError(f"{str(args.run_dir)!r} is not a trained run (no run.json and checkpoint.pt there)")
    from recon.device import resolve_device

    trainer = Trainer.load(run.checkpoint, device=resolve_device(settings.device))
    times_s = sorted(trainer.times_s) if isinstance(times, str) else times
    volumes = np.empty((len(times_s), trainer.slice_shape[0], *trainer.frame_shape), dtype=np.float32)
    for k, time_s in enumerate(times_s):
        volumes[k] = trainer.volume(time_s)
        print(f"\rvolume {k + 1}/{len(times_s)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    path = write_volumes(args.out, volumes, np.asarray(times_s, dtype=np.float64), format=settings.format)
    print(f"recon volumes: wrote {len(times_s)} volumes {volumes.shape[1:]} (Z, Y, X) to {path}",
          file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``volumes`` to the ``recon`` group."""
    train = subparsers.add_parser(
        "train", help="train (or resume) a DIP-STER reconstruction of a recorded session",
        description="Train a DIP-STER network on a recorded session and keep it in a run directory "
        "(checkpoint, run.json, train_log.csv). An existing run directory is resumed: steps, loss "
        "and log continue, and frames the session gained since are added.")
    train.add_argument("--session", required=True, metavar="DIR", help="recorded session directory")
    train.add_argument("--out", required=True, metavar="RUN", help="run directory (created, or resumed)")
    train.add_argument("--config", metavar="FILE", help="TOML file with recon train settings")
    add_model_arguments(train, ReconTrainSettings)
    train.set_defaults(run=run_train)

    volumes = subparsers.add_parser(
        "volumes", help="write the volume-time series of a trained DIP-STER run",
        description="Query a trained run for volumes (T, Z, Y, X) float32 in data units (their "
        "projections equal the frames) and write them with a times CSV (<stem>_times.csv).")
    volumes.add_argument("--run", dest="run_dir", required=True, metavar="RUN", help="run directory of recon train")
    volumes.add_argument("--out", required=True, metavar="FILE", help="output volume file (.tif or .mrc)")
    volumes.add_argument("--config", metavar="FILE", help="TOML file with recon volumes settings")
    add_model_arguments(volumes, ReconVolumesSettings)
    volumes.set_defaults(run=run_volumes)

