"""Offline DIP-STER training of a recorded session into a run directory, in one process or N data-parallel ranks.

:func:`train_session` is what ``tiltstream recon train`` runs: start or resume a run, add the frames
the session gained, train in chunks of ``eval_every`` steps while rank 0 evaluates the held-out frames,
saves and decides when to stop; :func:`refit_best` folds the held-out frames into the best state.
The flow and the ranks' roles: docs/architecture.md, "Offline training and data-parallel ranks".
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tiltstream.errors import UserError
from tiltstream.progress import ProgressLine
from tiltstream.recon.distributed import World, peer_failures
from tiltstream.recon.frame_feed import add_recorded_frame
from tiltstream.recon.precision import Speed
from tiltstream.recon.run_dir import (PlateauStopper, RunDescription, RunDir, forget_refit, forget_stale_best,
                                      heldout_positions, keep_if_best, keep_refit, open_reconstructor,
                                      recorded_time_scale_s)
from tiltstream.recon.trainer import Trainer

CONTINUE, BUDGET_SPENT, PLATEAU = 0, 1, 2  # rank 0's decision after a chunk
PROGRESS_STEPS = 25  # most steps between progress updates inside an evaluation chunk


@dataclass(frozen=True)
class NewRunSettings:
    """What a new run is made of (a resumed run keeps its own).

    Attributes
    ----------
    preset
        DIP-STER preset name (:func:`tiltstream.recon.presets.preset`).
    seed
        Seed of the initial weights and the sampler.
    holdout
        Fraction of frames held out of training, 0 to 0.5.
    preprocess
        A :class:`tiltstream.recon.preprocess.PreprocessConfig`, or None for none.
    config_update
        :class:`tiltstream.recon.presets.DipsterConfig` fields that replace the preset's (e.g.
        :data:`tiltstream.recon.presets.REAL_DATA_UPDATE` for ``--preprocess real``).
    """

    preset: str = "fast"
    seed: int = 0
    holdout: float = 0.0
    preprocess: Any = None
    config_update: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Budget:
    """How long one invocation trains and how often it evaluates.

    Attributes
    ----------
    steps
        Steps to run, or None for a time budget only.
    seconds
        Wall-clock budget, seconds, or None (checked after each chunk, so it may run over by one chunk).
    eval_every
        Steps between log rows, held-out evaluations and checkpoints.
    patience
        Stop after this many evaluations without a 0.5 % held-out improvement (0: never).
    refit
        At the end, train the best state on with its held-out frames for this fraction of its steps
        (0: no refit state).
    """

    steps: int | None
    seconds: float | None
    eval_every: int = 250
    patience: int = 0
    refit: float = 0.0


@dataclass
class TrainOutcome:
    """What an invocation did: ``stop_reason``, ``steps_run`` now and ``steps_total`` in the run;
    ``budget_spent`` when the time budget (not the steps or the held-out patience) ended it, ``levelled_off``
    when the held-out patience did."""

    stop_reason: str
    steps_run: int
    steps_total: int
    budget_spent: bool = False
    levelled_off: bool = False


def prepare_run(session_path: Path, run: RunDir, new: NewRunSettings, device: str, ranks: int = 1,
                speed: Speed = Speed(), say: Callable[[str], None] = print) -> tuple[Trainer, str]:
    """Create or resume the run in ``run`` and add every session frame it lacks (``speed``: the
    trainer's precision and compilation, default fp32 eager; ``say``: where the preprocessing's progress
    lines go).

    Returns
    -------
    trainer, message
        The :class:`tiltstream.recon.trainer.Trainer` (saved in ``run``) and a one-line summary.

    Raises
    ------
    UserError
        A bad session, a run of another frame shape or method, or new frames for a preprocessed run.
    """
    from tiltstream.recon.session_frames import load_session_frames

    session, frames = load_session_frames(session_path)
    records = session.records
    if run.exists():
        description = run.read()
        if description.method != Trainer.method:
            raise UserError(f"run {str(run.path)!r} is a {description.method} run; recon train continues "
                            "DIP-STER runs")
        trainer = open_reconstructor(run.path, device=device, speed=speed)
        session_shape = description.session_frame_shape or list(trainer.frame_shape)
        if list(session_shape) != list(frames.shape[1:]):
            raise UserError(f"run {str(run.path)!r} was trained on frames {list(session_shape)}; "
                            f"session {str(session_path)!r} has {list(frames.shape[1:])}")
        known = set(trainer.indices)
        grown = [r.index for r in records if r.index not in known]
        if description.preprocess and grown:
            raise UserError(f"run {str(run.path)!r} was preprocessed (aligned) as a whole; the session has "
                            f"{len(grown)} new frame(s) it cannot take consistently: start a new run")
        run.truncate_log(trainer.steps_done)
        held = {r["index"] for r in trainer.frame_records if r["held_out"]}
        held |= set(description.heldout_indices or [])
        status = f"resumed at step {trainer.steps_done}"
    else:
        from tiltstream.recon.presets import preset

        raw_shape = list(frames.shape[1:])
        report = None
        if new.preprocess is not None:
            from tiltstream.recon.preprocess import apply, recorded_shifts_px

            frames, report = apply(frames, session.angles_deg, new.preprocess, recorded_shifts_px(session.records),
                                   session_extra=session.settings.model_extra, log=say)
        config = preset(new.preset)
        if new.config_update:
            config = type(config).model_validate({**config.model_dump(), **new.config_update})
        time_scale_s = recorded_time_scale_s(session)
        trainer = Trainer(config, frames.shape[1:], time_scale_s, device=device, seed=new.seed,
                          **speed.trainer_kwargs())
        held = {records[p].index for p in heldout_positions(len(records), new.holdout)}
        run.create(RunDescription(
            method=trainer.method, session=str(Path(session_path).resolve()),
            created=dt.datetime.now(dt.timezone.utc).isoformat(),
            preset=new.preset, config=config.model_dump(mode="json"), seed=new.seed,
            frame_shape=list(frames.shape[1:]), time_scale_s=time_scale_s,
            heldout_indices=sorted(held), device=device,
            session_frame_shape=raw_shape, preprocess=report))
        status = "new run"
    added = 0
    known = set(trainer.indices)
    for record, frame in zip(records, frames):
        if record.index not in known:  # a new run, or a session that grew since the last invocation
            add_recorded_frame(trainer, record, frame, held_out=record.index in held)
            added += 1
    forget_stale_best(run, trainer.n_frames)  # the session grew: the best saw fewer frames
    forget_refit(run)  # the run trains on: its refit state would not continue the best
    trainer.save(run.path)  # the state every rank starts from (and a new run is resumable at once)
    description = run.update(heldout_indices=sorted(held), ranks=int(ranks))
    ny, nx = trainer.frame_shape
    message = (f"{status}; {trainer.n_train_frames} training + {trainer.n_frames - trainer.n_train_frames} "
               f"held-out frames ({added} new), {ny}x{nx} px, preset {description.preset or '?'}, "
               f"device {device}" + (f", {ranks} ranks" if ranks > 1 else ""))
    return trainer, message


def _progress_text(done: int, total: int | None, elapsed_s: float, budget_s: float | None, loss: float,
                   lr: float, extra: str) -> str:
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    eta = (total - done) / rate if total is not None and rate > 0 else max(0.0, (budget_s or 0.0) - elapsed_s)
    if budget_s is not None:
        eta = min(eta, max(0.0, budget_s - elapsed_s))
    of = f"/{total}" if total is not None else ""
    return f"step {done}{of}  {rate:.1f} steps/s  loss {loss:.3e}  lr {lr:.2e}{extra}  ETA {eta:.0f} s"


def _train_chunk(trainer: Trainer, steps: int, show: Callable[[int, float], None] | None) -> float:
    """Train ``steps`` steps in growing parts (1, 2, 4, ... up to :data:`PROGRESS_STEPS`) so progress shows
    from the first step on, even where a step takes seconds; returns their mean loss, as one
    ``trainer.train(steps=steps)`` does (the parts depend on ``steps`` only, so every rank runs the same)."""
    done, part = 0, 1
    while done < steps:
        n = min(part, steps - done)
        loss = trainer.train(steps=n)
        done += n
        if show is not None and done < steps:
            show(done, loss)
        part = min(2 * part, PROGRESS_STEPS)
    return float(np.mean(trainer.loss_history[-steps:]))


def train_loop(trainer: Trainer, run: RunDir, budget: Budget, world: World, stopper: PlateauStopper,
               progress: ProgressLine | None = None) -> TrainOutcome:
    """Train ``trainer`` for ``budget``; rank 0 checkpoints into ``run`` and logs after every chunk.

    Every rank runs the same chunks (so the collectives match); only rank 0 writes and decides stops.
    """
    total = budget.steps
    elapsed0 = run.last_elapsed_s() if world.is_main else 0.0
    start = time.perf_counter()
    done, stop_reason = 0, "steps done"
    while total is None or done < total:
        chunk = budget.eval_every - trainer.steps_done % budget.eval_every
        if total is not None:
            chunk = min(chunk, total - done)
        def show(steps: int, loss: float) -> None:
            progress.update(_progress_text(done + steps, total, time.perf_counter() - start, budget.seconds,
                                           loss, trainer.learning_rate, ""))

        loss = _train_chunk(trainer, chunk, show if progress is not None else None)
        done += chunk
        decision = CONTINUE
        if world.is_main:
            elapsed = time.perf_counter() - start
            row = {"step": trainer.steps_done, "elapsed_s": round(elapsed0 + elapsed, 3), "loss": loss,
                   "lr": trainer.learning_rate}
            extra = ""
            metrics = trainer.heldout_metrics() if trainer.steps_done % budget.eval_every == 0 else None
            if metrics is not None:
                row.update(metrics)
                extra = (f"  held-out {metrics['heldout_rmse_percent']:.2f} % "
                         f"SSIM {metrics['heldout_ssim']:.4f}")
                if stopper.update(metrics["heldout_rmse_percent"]):
                    decision = PLATEAU
            trainer.save(run.path)
            if metrics is not None:
                keep_if_best(run, trainer, metrics["heldout_rmse_percent"])
            run.update(stopper=stopper.state_dict())
            run.append_log(row)
            if decision == CONTINUE and budget.seconds is not None and elapsed >= budget.seconds:
                decision = BUDGET_SPENT
            if progress is not None:
                progress.update(_progress_text(done, total, elapsed, budget.seconds, loss, trainer.learning_rate,
                                               extra), final=decision != CONTINUE or done == total)
        decision = world.rank0_decides(decision)
        if decision == BUDGET_SPENT:
            stop_reason = "time budget spent"
            break
        if decision == PLATEAU:
            stop_reason = f"held-out error has not improved for {budget.patience} evaluations"
            break
    return TrainOutcome(stop_reason, done, trainer.steps_done, budget_spent=decision == BUDGET_SPENT,
                        levelled_off=decision == PLATEAU)


def refit_best(run: RunDir, budget: Budget, world: World, device: str, speed: Speed,
               progress: ProgressLine | None = None) -> None:
    """Fold the held-out frames into the run's best state and train ``budget.refit`` x its steps more.

    Held-out stopping chose the best state on 90 % of the frames (at the default holdout); the tenth
    it never saw still carries data, and a short training on every frame uses it without the long
    run that held-out stopping avoided (docs/benchmarks/stopping.md, "Refit"). Every rank trains the
    same steps; rank 0 keeps the result as ``refit/`` (:func:`tiltstream.recon.run_dir.keep_refit`). Nothing is
    trained when the run keeps no best state or its share of steps rounds to 0.
    """
    world.barrier()  # rank 0 has written the last best state and its record
    record = run.best_record()
    steps = round(budget.refit * record.step) if record is not None else 0
    if steps <= 0:
        return
    trainer = Trainer.load(run.best, device=device, **speed.trainer_kwargs())
    if world.distributed:
        trainer.data_parallel(world.rank, world.size)
    trainer.fold_in_held_out()
    done = 0
    while done < steps:
        chunk = min(budget.eval_every, steps - done)
        loss = trainer.train(steps=chunk)
        done += chunk
        if progress is not None:
            progress.update(f"refit: {done}/{steps} steps on every frame from the best state (step "
                            f"{record.step}), loss {loss:.4g}", final=done == steps)
    if world.is_main:
        keep_refit(run, trainer, record.step)


def train_session(session_path: Path, run_dir: Path, new: NewRunSettings, budget: Budget, device: str,
                  world: World, progress: ProgressLine | None = None,
                  say: Callable[[str], None] = print, speed: Speed = Speed()) -> TrainOutcome:
    """Train (or resume) run directory ``run_dir`` on the session at ``session_path``.

    Parameters
    ----------
    session_path, run_dir
        The recorded session and the run directory (created, or resumed).
    new
        Settings of a new run (ignored when resuming).
    budget
        Steps or seconds of this invocation, evaluation interval, patience.
    device
        This rank's device (``world.device`` under torchrun).
    world
        This process's rank; its process group is started when ``world.distributed``.
    progress
        Rank 0's progress line (None: no progress).
    say
        Called with one-line messages on rank 0 (the start summary).
    speed
        The trainer's precision and compilation (default fp32, eager).
    """
    run = RunDir(run_dir)
    if world.is_main:
        trainer, message = prepare_run(Path(session_path), run, new, device, world.size, speed, say)
        say(f"recon train: {message}")
    world.barrier()
    with peer_failures(world):
        if not world.is_main:
            trainer = Trainer.load(run.path, device=device, **speed.trainer_kwargs())
        if world.distributed:
            trainer.data_parallel(world.rank, world.size)
        stopper = PlateauStopper(budget.patience)
        stopper.load_state_dict(run.read().stopper or {})
        outcome = train_loop(trainer, run, budget, world, stopper, progress)
        if world.is_main:
            trainer.save(run.path)
        if budget.refit > 0:
            refit_best(run, budget, world, device, speed, progress)
    return outcome

