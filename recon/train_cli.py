"""``tiltstream recon train`` and ``tiltstream recon volumes``: offline DIP-STER on a recorded session.

``recon train --session S --out RUN`` trains (or resumes) a run directory (:mod:`tiltstream.recon.run_dir`);
``recon volumes --run RUN --out volumes.tif`` writes the volume-time series it has learnt, in data
units. Heavy modules (torch) are imported inside the commands, so ``tiltstream --help`` stays fast.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Literal

import pydantic

from tiltstream.command import register_command
from tiltstream.config import describe_validation_error, overrides_from_args, read_toml
from tiltstream.errors import UserError
from tiltstream.progress import ProgressLine, stderr_progress
from tiltstream.recon.presets import REAL_DATA_UPDATE
from tiltstream.recon.train_options import (CompileOption, DeviceOption, HoldoutOption, PrecisionOption,
                                            PresetOption, SeedOption, ThreadsOption)
from tiltstream.recon.run_dir import RunDir, state_in_words


class ReconTrainSettings(pydantic.BaseModel):
    """Settings of ``tiltstream recon train`` (defaults also in ``config/recon.toml``)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    preset: PresetOption
    steps: int | None = pydantic.Field(
        default=None, ge=0, description="training steps to run in this invocation, steps "
        "(default 2000 when --minutes is not given either)")
    minutes: float | None = pydantic.Field(
        default=None, gt=0, description="wall-clock training budget of this invocation, minutes (with held-out "
        "frames, --refit's steps come after it)")
    device: DeviceOption
    precision: PrecisionOption
    compile: CompileOption
    seed: SeedOption
    holdout: HoldoutOption = 0.1
    refit: float = pydantic.Field(
        default=0.2, ge=0.0, le=1.0, description="at the end, fold the held-out frames into the best "
        "state and train this fraction of its steps more on every frame (refit/, the state recon volumes "
        "reads by default; docs/benchmarks/stopping.md 'Refit'); 0: keep the best state as it is")
    patience: int = pydantic.Field(
        default=16, ge=0, description="stop when the held-out error has not improved by 0.5 % for this "
        "many evaluations (0: never stop early; no effect without held-out frames; 16 at --eval-every 250 "
        "waits 4000 steps: docs/benchmarks/stopping.md)")
    eval_every: int = pydantic.Field(
        default=250, ge=1, description="steps between log rows, held-out evaluations and checkpoints")
    threads: ThreadsOption
    preprocess: str = pydantic.Field(
        default="none", description="preprocessing of the frames before a new run trains on them "
        "(recon/preprocess.py): none; paper (the paper's pipeline for experimental data: median "
        "background, 0.9 x Otsu mask, normalisation, cross-correlation alignment, centring); real (straight "
        "after recon import: background, frames larger than 128 px resized to it, the tilt axis and projection "
        "matching as recon align does (not again on a session recon align wrote), normalisation (no mask), "
        "and in the loss the paper's TV weight for real data and a light time prior: README 'Real data'); "
        "or a TOML file of PreprocessConfig fields. What it did is recorded in run.json")
    workers: int = pydantic.Field(
        default=1, ge=1, description="local data-parallel ranks to start (torch.distributed launcher, "
        "gloo on CPU, NCCL on CUDA); each rank trains on its own batch, so the effective batch is "
        "workers x the preset's batch. Ignored under torchrun, which starts the ranks itself. More than the "
        "machine's CPUs (GPUs on CUDA) is refused unless --force-workers")
    force_workers: bool = pydantic.Field(
        default=False, description="start --workers ranks even when they outnumber the CPUs (GPUs on CUDA)")
    peer_timeout_s: float = pydantic.Field(
        default=120.0, gt=0, description="with several ranks: seconds a rank waits for the others "
        "before it gives up with one line (a dead or hung peer)")


DEFAULT_STEPS = 2000


def _preprocess_config(value: str) -> object | None:
    """The PreprocessConfig named by ``--preprocess`` (None for ``none``); UserError for a bad value."""
    from tiltstream.recon.preprocess import PreprocessConfig

    if value == "none":
        return None
    if value == "paper":
        return PreprocessConfig()
    if value == "real":
        from tiltstream.recon.preprocess import real_data_config

        return real_data_config()
    if not Path(value).is_file():
        raise UserError(f"invalid preprocess = {value!r}: allowed are none, paper, real, or a TOML file of "
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
    checkpoint: Literal["auto", "refit", "best", "last"] = pydantic.Field(
        default="auto", description="which state of the run: refit (the best state trained on with its "
        "held-out frames, kept by recon train --refit), best (lowest held-out reprojection error, kept "
        "when frames are held out), last (the latest checkpoint), auto (the first of refit, best, last "
        "that the run keeps)")


def run_train(settings: ReconTrainSettings, args: argparse.Namespace) -> int:
    """Train or resume the run directory ``args.out`` on session ``args.session`` (:mod:`tiltstream.recon.training`),
    in this process, as one rank under torchrun, or as ``--workers N`` local ranks."""
    given = overrides_from_args(args, ReconTrainSettings)
    for option in ("patience", "refit"):
        if given.get(option) and not settings.holdout:
            raise UserError(f"--{option} needs held-out frames: give --holdout FRACTION (e.g. 0.1)")
    preprocess_config = _preprocess_config(settings.preprocess)
    if settings.workers > 1 and "WORLD_SIZE" not in os.environ:
        from tiltstream.recon.device import local_ranks_allowed, resolve_device
        from tiltstream.recon.distributed import launch_local
        from tiltstream.recon.session_frames import load_session_frames

        allowed, what = local_ranks_allowed(resolve_device(settings.device))
        if settings.workers > allowed and not settings.force_workers:
            raise UserError(f"--workers {settings.workers} is more than this machine's {allowed} {what}: each "
                            f"rank wants one; give at most {allowed}, or add --force-workers")

        load_session_frames(Path(args.session))  # a bad session: one line here, not one per rank
        return launch_local(settings.workers, ["-m", "tiltstream", *sys.argv[1:]], "tiltstream recon train")

    import torch

    from tiltstream.recon import distributed
    from tiltstream.recon.device import resolve_device
    from tiltstream.recon.precision import Speed
    from tiltstream.recon.trainer import Trainer
    from tiltstream.recon.training import Budget, NewRunSettings, train_session

    world = distributed.world_from_env()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    elif world.distributed:  # share the cores among the local ranks
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world.local_size))
    world = distributed.start(world, resolve_device(settings.device), settings.peer_timeout_s)
    total = settings.steps if settings.steps is not None else (None if settings.minutes else DEFAULT_STEPS)
    budget = Budget(steps=total, seconds=settings.minutes * 60.0 if settings.minutes else None,
                    eval_every=settings.eval_every, patience=settings.patience, refit=settings.refit)
    new = NewRunSettings(preset=settings.preset, seed=settings.seed, holdout=settings.holdout,
                         preprocess=preprocess_config,
                         config_update=REAL_DATA_UPDATE if settings.preprocess == "real" else {})
    progress = ProgressLine() if world.is_main else None
    try:
        outcome = train_session(Path(args.session), Path(args.out), new, budget, str(world.device), world,
                                progress, say=lambda line: print(line, file=sys.stderr),
                                speed=Speed(settings.precision, settings.compile))
    except distributed.PeerLost as exc:
        print(f"tiltstream recon train: {exc}; stopping (the run directory keeps its last checkpoint)",
              file=sys.stderr)
        return 1
    distributed.stop(world)
    if world.is_main:
        out = RunDir(args.out)
        best, refit = out.best_record(), out.refit_record()
        kept = [f"; {state_in_words(kind, record)} in {directory}"
                for kind, record, directory in (("best", best, out.best), ("refit", refit, out.refit)) if record]
        print(f"recon train: {outcome.stop_reason}; {outcome.steps_run} steps this run, {outcome.steps_total} "
              f"in total; checkpoint {out.state_path(Trainer.STATE_FILE)}" + "".join(kept), file=sys.stderr)
        if not outcome.levelled_off and best is not None and settings.patience > 0:
            ended = "budget" if outcome.budget_spent else "steps"
            print(f"recon train: the {ended} ran out before the held-out error levelled off (--patience "
                  f"{settings.patience} not reached; its least at step {best.step} of {outcome.steps_total}): "
                  "run the same command again to train on, or give a longer --refit (e.g. 0.4; "
                  "docs/benchmarks/stopping.md 'How long a refit')", file=sys.stderr)
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


def run_volumes(settings: ReconVolumesSettings, args: argparse.Namespace) -> int:
    """Write the volume-time series of a trained run (any method, live or offline); under torchrun each
    rank computes every N-th time point and rank 0 writes the file."""
    import numpy as np

    from tiltstream.recon import distributed
    from tiltstream.recon.device import resolve_device
    from tiltstream.recon.run_dir import RunDir, open_state
    from tiltstream.recon.run_voxel import run_voxel_size_nm
    from tiltstream.recon.volume_io import write_volumes

    times = parse_times(settings.times)
    world = distributed.start(distributed.world_from_env(), resolve_device(settings.device))
    reconstructor, state = open_state(args.run_dir, device=str(world.device), checkpoint=settings.checkpoint)
    if isinstance(times, str):
        times_s = sorted(r["time_s"] for r in reconstructor.frame_records)
    else:
        times_s = times
    if not times_s:
        raise UserError(f"run {str(args.run_dir)!r} holds no frames: no volume to write")
    report = stderr_progress("recon volumes: volume", "volumes") if world.is_main else None
    try:
        results = distributed.split_across_ranks(world, len(times_s), lambda k: reconstructor.volume(times_s[k]),
                                                 report)
    except distributed.PeerLost as exc:
        print(f"tiltstream recon volumes: {exc}; no file written", file=sys.stderr)
        return 1
    if results is None:
        return 0
    volumes = np.stack(results).astype(np.float32)
    voxel_nm = run_voxel_size_nm(RunDir(args.run_dir).read())
    path = write_volumes(args.out, volumes, np.asarray(times_s, dtype=np.float64), format=settings.format,
                         voxel_size_nm=voxel_nm)
    print(f"recon volumes: wrote {len(times_s)} volumes {volumes.shape[1:]} (Z, Y, X) of the "
          f"{state} to {path}"
          + (f" ({world.size} ranks)" if world.distributed else ""), file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``volumes`` to the ``recon`` group."""
    register_command(
        subparsers, "train", settings=ReconTrainSettings, run=run_train, config_name="recon",
        arguments=_train_arguments, logs=False,
        help="train (or resume) a DIP-STER reconstruction of a recorded session",
        description="Train a DIP-STER network on a recorded session and keep it in a run directory "
        "(checkpoint, run.json, train_log.csv). An existing run directory is resumed: steps, loss "
        "and log continue, and frames the session gained since are added.")
    register_command(
        subparsers, "volumes", settings=ReconVolumesSettings, run=run_volumes, arguments=_volumes_arguments,
        logs=False, help="write the volume-time series of a trained run (live or offline)",
        description="Query a trained run for volumes (T, Z, Y, X) float32 in data units (their "
        "projections equal the frames) and write them with a times CSV (<stem>_times.csv). A run with "
        "held-out frames is read at its best state by held-out error unless --checkpoint last.")


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--session", required=True, metavar="DIR", help="recorded session directory")
    parser.add_argument("--out", required=True, metavar="RUN", help="run directory (created, or resumed)")


def _volumes_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", "--run-dir", dest="run_dir", required=True, metavar="RUN",
                        help="run directory of recon train or tiltstream live (under torchrun write "
                        "--run-dir: torchrun reads --run as its own --run-path)")
    parser.add_argument("--out", required=True, metavar="FILE", help="output volume file (.tif or .mrc)")
