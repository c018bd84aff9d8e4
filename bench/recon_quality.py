"""Benchmark: DIP-STER (paper and fast presets, same wall-clock budget) vs moving-window SIRT, per time step.

For each phantom a seeded synthetic session is written (``tiltstream.simulator.tiltseries.write_synthetic_session``,
Poisson noise at 40 e/A^2), then:

- moving-window SIRT (window 30, 30 iterations, the paper's baseline), non-negative (ASTRA's
  ``MinConstraint = 0``, the strong baseline), timed;
- DIP-STER with each preset, trained for ``--minutes`` of wall clock with ``recon train``'s time scale
  (``tiltstream.recon.run_dir.recorded_time_scale_s``); every ``--eval-every`` steps the clock is paused and all
  volumes are compared with the ground truth (time-to-SSIM curve).

Per time step: RMSE (percent) and SSIM (inside the Otsu masks, ``tiltstream.recon.metrics``), surface/volume
error (nanoshell) and alloying error (nanorod); plus time to reach a mean SSIM of 0.9 and 0.95. When
every time step is evaluated (no ``--eval-times``), each evaluation also measures the specimen's physical
property, and the table gives the median of the evaluations in the last quarter of the training time
beside the final state's (a single evaluation of the nanorod's alloying error moves by 3-5 points).
With ``--holdout FRACTION`` each DIP-STER run trains as ``recon train`` does by default: that fraction of
the frames held out (``tiltstream.recon.run_dir.heldout_positions``), their reprojection error checked every
``--heldout-every`` steps (clock paused). For each ``--patience`` P (``tiltstream.recon.run_dir.PlateauStopper``:
P checks without a 0.5 % improvement; 0 never stops) the bench notes where ``recon train`` would stop
and writes the state of the lowest held-out error until then to a checkpoint (as ``recon train``'s
``best/``). The run still trains for the whole budget; the table gets a row for each distinct kept
state, chosen without ground truth, beside the run's last state.
Writes PNG plots (like the paper's Fig. 3 c-e, h-j) and a section of ``quality.md`` between markers,
leaving other sections alone, both into ``--docs`` (default ``docs/benchmarks/``).

Example (the default is 64^3 x 100 frames, 5 minutes per DIP-STER preset)::

    python bench/recon_quality.py --size 32 --count 60 --minutes 2 --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pydantic

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tiltstream.acquire.session import read_ground_truth, read_session  # noqa: E402
from bench.doc_sections import replace_section  # noqa: E402
from tiltstream.recon import metrics  # noqa: E402
from tiltstream.recon.presets import DipsterConfig, preset  # noqa: E402
from tiltstream.recon.train_cli import ReconTrainSettings  # noqa: E402



def session_for(work: Path, phantom: str, size: int, count: int, seed: int, device: str = "cpu") -> Path:
    """A cached synthetic session of ``phantom`` (generated on ``device``)."""
    from tiltstream.simulator.tiltseries import write_synthetic_session

    path = work / f"{phantom}_{size}_{count}_s{seed}"
    if not (path / "ground_truth.tif").is_file():
        write_synthetic_session(path, phantom, size, count, seed=seed, device=device)
    return path


def device_words(device) -> str:
    """The device a table was measured on, in words: the GPU's name, or the CPU and its torch threads."""
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    return f"CPU (torch threads {torch.get_num_threads()})"


PROPERTY = {"nanoshell": ("surface_to_volume", "surface_to_volume_ref"),
            "nanostar": ("redistribution_nm3", "redistribution_ref_nm3"),
            "nanorod": ("alloying_degree", "alloying_degree_ref"),
            "nanocube": ("alloying_degree", "alloying_degree_ref")}  # (reconstruction, ground truth) keys of
# the physical property each specimen's table and plot follow


BUDGET_CHUNK_STEPS = 50  # steps between reads of the training clock: a run overshoots its budget by < one chunk


class HeldOutStopping:
    """``recon train``'s held-out stopping beside a bench run, for several patiences at once.

    Every ``every`` steps :meth:`check` measures the held-out reprojection error. For each patience P
    (``tiltstream.recon.run_dir.PlateauStopper(P)``; 0 never stops) it notes the check where ``recon train`` would
    stop, and the state of the lowest error up to then, written (once per step, however many patiences
    keep it) with :meth:`Trainer.save` into ``directory`` as ``tiltstream.recon.run_dir.keep_if_best`` writes
    ``best/``.

    Attributes
    ----------
    kept
        Per patience: ``steps``, ``train_s``, ``heldout_rmse_percent`` and ``path`` of its kept state.
    stop
        Per patience: ``steps`` and ``train_s`` of the check at which it stops (absent: never).
    checks
        Every check's ``steps``, ``train_s`` and ``heldout_rmse_percent``, in order (the plot's held-out curve).
    """

    def __init__(self, patiences: list[int], every: int, directory: Path) -> None:
        from tiltstream.recon.run_dir import PlateauStopper

        self.stoppers = {int(p): PlateauStopper(p) for p in patiences}
        self.every, self.directory = int(every), Path(directory)
        self.kept: dict[int, dict] = {}
        self.stop: dict[int, dict] = {}
        self.checks: list[dict] = []

    def steps_to_check(self, steps_done: int) -> int:
        """Steps from ``steps_done`` to the next check (1..every)."""
        return self.every - steps_done % self.every

    def check(self, trainer, train_s: float) -> None:
        """Evaluate the held-out frames of ``trainer`` after ``train_s`` seconds of training."""
        error = trainer.heldout_metrics()["heldout_rmse_percent"]
        point = {"steps": trainer.steps_done, "train_s": train_s, "heldout_rmse_percent": error}
        self.checks.append(point)
        before = {k["path"] for k in self.kept.values()}
        for patience, stopper in self.stoppers.items():
            if patience in self.stop:
                continue
            if patience not in self.kept or error < self.kept[patience]["heldout_rmse_percent"]:
                path = self.directory / f"kept_step{trainer.steps_done}.pt"
                if not path.is_file():
                    trainer.save(path)
                self.kept[patience] = {**point, "path": path}
            if stopper.update(error):
                self.stop[patience] = point
        for stale in before - {k["path"] for k in self.kept.values()}:  # no patience keeps it any more
            stale.unlink()


def mean_ssim(volumes: np.ndarray, truth: np.ndarray, workers: int = 1) -> tuple[float, float]:
    """Mean and minimum SSIM over the time steps, in ``workers`` processes when > 1 (large volumes)."""
    values = metrics.ssim_series(volumes, truth, workers)
    return float(values.mean()), float(values.min())


def run_dipster(name: str, frames: np.ndarray, session, truth: np.ndarray, minutes: float,
                eval_every: int, seed: int, speed: dict, eval_times: int = 0,
                config: DipsterConfig | None = None, workers: int = 1,
                phantom: str | None = None, holdout: float = 0.0,
                stopping: HeldOutStopping | None = None) -> tuple[np.ndarray, list[dict], int]:
    """Train one preset for ``minutes``; returns final volumes, the SSIM curve and steps done.

    Evaluations come every ``eval_every`` steps and once more where the budget ends (the clock is read
    every :data:`BUDGET_CHUNK_STEPS` steps, so the last state is within a chunk of the budget).

    ``speed`` holds the Trainer's ``device``, ``precision`` and ``compile_model``. The curve's SSIM is
    over all time steps, or over ``eval_times`` evenly spread ones when > 0 (large volumes); the
    returned volumes are always all of them. On CUDA the clock is synchronised before it is read.
    ``config`` is the preset ``name`` with ``--set`` overrides applied (default: the preset as it is).
    ``workers`` processes compute each evaluation's SSIMs. With ``phantom`` and every time step
    evaluated, each curve point also holds the headline error of the specimen's physical property
    (:func:`property_summary`), for :func:`late_median`. ``holdout`` is the fraction of frames held out
    of training, evenly spread in acquisition order as ``recon train --holdout``; ``stopping`` (needs
    held-out frames) checks them between chunks.
    """
    import torch

    from tiltstream.recon.frame_feed import add_recorded_frame
    from tiltstream.recon.run_dir import heldout_positions, recorded_time_scale_s
    from tiltstream.recon.trainer import Trainer

    times = session.times_s
    config = config or preset(name)
    trainer = Trainer(config, frames.shape[1:], recorded_time_scale_s(session), seed=seed, **speed)
    order = sorted(range(len(session.records)), key=lambda i: session.records[i].time_s)
    held = {order[p] for p in heldout_positions(len(order), holdout)}
    for i, (record, frame) in enumerate(zip(session.records, frames)):
        add_recorded_frame(trainer, record, frame, held_out=i in held)
    probe = (np.linspace(0, len(times) - 1, eval_times).round().astype(int) if eval_times
             else np.arange(len(times)))
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    curve, train_s, budget_s = [], 0.0, minutes * 60.0
    while train_s < budget_s:
        boundary = trainer.steps_done + eval_every
        while trainer.steps_done < boundary and train_s < budget_s:  # the budget ends mid-chunk if it must
            chunk = min(BUDGET_CHUNK_STEPS, boundary - trainer.steps_done)
            if stopping:
                chunk = min(chunk, stopping.steps_to_check(trainer.steps_done))
            sync()
            start = time.perf_counter()
            trainer.train_steps(chunk)
            sync()
            train_s += time.perf_counter() - start
            if stopping and (trainer.steps_done % stopping.every == 0 or train_s >= budget_s):
                stopping.check(trainer, train_s)
        volumes = np.stack([trainer.volume(times[i]) for i in probe])
        mean, worst = mean_ssim(volumes, truth[probe], workers)
        curve.append({"steps": trainer.steps_done, "train_s": train_s, "ssim_mean": mean, "ssim_min": worst})
        if phantom and not eval_times:
            curve[-1]["property"] = property_summary(phantom, property_rows(phantom, volumes, truth))[1]
        print(f"  {name}: {trainer.steps_done} steps, {train_s:.0f} s, SSIM mean {mean:.4f} min {worst:.4f}",
              file=sys.stderr, flush=True)
    if eval_times:
        volumes = np.stack([trainer.volume(t) for t in times])
    return volumes, curve, trainer.steps_done


def first_time(curve: list[dict], threshold: float) -> float | None:
    """Training seconds of the first evaluation whose mean SSIM reaches ``threshold``."""
    for point in curve:
        if point["ssim_mean"] >= threshold:
            return point["train_s"]
    return None


def property_summary(phantom: str, rows: list[dict]) -> tuple[str, float]:
    """The physical property of one method's rows, in words, and its headline error: the nanoshell's mean
    signed S/V error (%), the nanostar's total redistribution error (%), the alloying error after step 4
    (points) of the nanorod and nanocube (with, for comparison with rows measured before 2026-12-05,
    the same error with the reconstruction's own first volume as Eq. 10's ``sigma_0``)."""
    if phantom == "nanoshell":
        rec = np.array([r["surface_to_volume"] for r in rows])
        ref = np.array([r["surface_to_volume_ref"] for r in rows])
        err = 100.0 * (rec - ref) / ref
        return f"S/V error {err.mean():+.1f} +- {err.std():.1f} %", float(err.mean())
    if phantom == "nanostar":
        rec = np.array([r["redistribution_nm3"] for r in rows[1:]], dtype=float)
        ref = np.array([r["redistribution_ref_nm3"] for r in rows[1:]], dtype=float)
        cum_rec, cum_ref = np.cumsum(rec), np.cumsum(ref)
        corr = float(np.corrcoef(rec, ref)[0, 1]) if rec.std() > 0 and ref.std() > 0 else float("nan")
        total = 100.0 * (cum_rec[-1] - cum_ref[-1]) / cum_ref[-1]
        return (f"volume redistribution: total {cum_rec[-1]:.0f} vs {cum_ref[-1]:.0f} voxels ({total:+.0f} %), "
                f"per-step correlation {corr:.2f}"), float(total)
    rec = np.array([r["alloying_degree"] for r in rows])
    ref = np.array([r["alloying_degree_ref"] for r in rows])
    err = 100.0 * np.abs(rec - ref)
    # the reading used until 2026-12-05 (the reconstruction's own first volume as sigma_0), for old rows
    own_start = 100.0 * np.abs(rec - rec[0] - ref)
    return (f"alloying error mean {np.nanmean(err):.1f} %, after step 4 {np.nanmean(err[4:]):.1f} % (points); "
            f"against its own first volume {np.nanmean(own_start[4:]):.1f}", float(np.nanmean(err[4:])))


def property_rows(phantom: str, volumes: np.ndarray, truth: np.ndarray) -> list[dict]:
    """The rows :func:`property_summary` reads, without the SSIMs of :func:`tiltstream.recon.metrics.metrics_table`
    (cheap enough for every evaluation of a run)."""
    if phantom == "nanoshell":
        return [{"surface_to_volume": metrics.surface_to_volume(v),
                 "surface_to_volume_ref": metrics.surface_to_volume(t)} for v, t in zip(volumes, truth)]
    if phantom == "nanostar":
        rec, ref = metrics.volume_redistribution(volumes), metrics.volume_redistribution(truth)
        return [{}] + [{"redistribution_nm3": a, "redistribution_ref_nm3": b} for a, b in zip(rec, ref)]
    ref, rec = metrics.alloying_against_reference(volumes, truth)
    return [{"alloying_degree": a, "alloying_degree_ref": b} for a, b in zip(rec, ref)]


LATE_FRACTION = 0.25  # the evaluations in this last fraction of a run's training time give its late median


def late_median(curve: list[dict]) -> tuple[float, int] | None:
    """Median of the property's headline error over the evaluations in the last :data:`LATE_FRACTION` of
    the training time, and their number; None when the curve carries no property (``--eval-times``)."""
    end_s = curve[-1]["train_s"]
    late = [p["property"] for p in curve if "property" in p and p["train_s"] >= (1.0 - LATE_FRACTION) * end_s]
    return (float(np.median(late)), len(late)) if late else None


def summarise(phantom: str, rows: list[dict]) -> dict:
    """Means over time of one method's metrics table, and the physical-property error."""
    rmse = np.array([r["rmse_percent"] for r in rows])
    ssim = np.array([r["ssim"] for r in rows])
    paper = np.array([r["ssim_paper"] for r in rows])
    paper_rmse = np.array([r["rmse_paper"] for r in rows])
    out = {"rmse_mean": rmse.mean(), "rmse_max": rmse.max(), "ssim_mean": ssim.mean(), "ssim_min": ssim.min(),
           "paper_mean": paper.mean(), "paper_min": paper.min(), "paper_rmse_mean": paper_rmse.mean(),
           "paper_rmse_max": paper_rmse.max()}
    out["property"] = property_summary(phantom, rows)[0]
    return out


def plot(phantom: str, tables: dict[str, list[dict]], curves: dict[str, list[dict]], path: Path,
         kept: dict[str, tuple[float, HeldOutStopping]] | None = None) -> None:
    """The paper's Fig. 3-like panels; with ``kept`` (row name: the training seconds of its state and
    its run's held-out stopping) the time-to-quality panel also marks each kept state at its row's mean
    SSIM and draws the held-out error on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    for method, rows in tables.items():
        t = [r["time_s"] for r in rows]
        axes[0].plot(t, [r["rmse_percent"] for r in rows], label=method)
        axes[1].plot(t, [r["ssim"] for r in rows], label=method)
        axes[2].plot(t[1:], [r[PROPERTY[phantom][0]] for r in rows[1:]], label=method)
    rows = next(iter(tables.values()))
    axes[2].plot([r["time_s"] for r in rows[1:]], [r[PROPERTY[phantom][1]] for r in rows[1:]], "k--",
                 label="ground truth")
    for method, curve in curves.items():
        axes[3].plot([p["train_s"] for p in curve], [p["ssim_mean"] for p in curve], "o-", label=method)
    drawn = set()
    for method, (train_s, stopping) in (kept or {}).items():
        ssim_mean = float(np.mean([r["ssim"] for r in tables[method]]))
        axes[3].plot([train_s], [ssim_mean], "*", ms=12, label=method)
        if id(stopping) not in drawn:
            drawn.add(id(stopping))
            twin = axes[3].twinx()
            twin.plot([c["train_s"] for c in stopping.checks],
                      [c["heldout_rmse_percent"] for c in stopping.checks], "r:", lw=1)
            twin.set_ylabel("held-out reprojection RMSE (%), dotted", color="r", fontsize=7)
    axes[0].set(xlabel="time (s)", ylabel="RMSE (%)", title=f"{phantom}: RMSE")
    axes[1].set(xlabel="time (s)", ylabel="SSIM", title="SSIM")
    words = PROPERTY[phantom][0].replace("_nm3", " (voxels)").replace("_", " ")
    axes[2].set(xlabel="time (s)", ylabel=words, title=words)
    axes[3].set(xlabel="training time (s)", ylabel="mean SSIM", title="time to quality")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_section(doc: Path, text: str, tag: str) -> None:
    """Replace this benchmark's section ``tag`` of ``doc`` (between markers), keeping the rest."""
    start, end = f"<!-- recon_quality:{tag}:start -->", f"<!-- recon_quality:{tag}:end -->"
    replace_section(doc, start, end, f"{start}\n{text}\n{end}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phantoms", default="nanorod,nanoshell", help="comma-separated phantom names")
    parser.add_argument("--size", type=int, default=64, help="volume edge, voxels")
    parser.add_argument("--count", type=int, default=100, help="frames (= time steps)")
    parser.add_argument("--minutes", type=float, default=5.0, help="wall-clock training budget per preset, min")
    parser.add_argument("--eval-every", default="500",
                        help="steps between quality evaluations: one number, or one per preset (comma-separated)")
    parser.add_argument("--presets", default="fast,paper", help="DIP-STER presets to run")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0, help="seed of phantoms, noise and training")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tiltstream_bench"), help="session cache dir")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks",
                        help="where the PNGs and quality.md go")
    parser.add_argument("--device", default="cpu", help="auto, cpu or cuda: DIP-STER, SIRT and the phantoms")
    parser.add_argument("--precision", default="fp32", help="DIP-STER network precision: fp32, tf32 or bf16")
    parser.add_argument("--compile", action="store_true", help="torch.compile the DIP-STER training forward")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a field of the presets (tiltstream.recon.presets.DipsterConfig), e.g. "
                             "rows_per_frame=8 or ema_decay=0.99; repeatable")
    parser.add_argument("--no-sirt", action="store_true", help="DIP-STER only (no SIRT baseline, no "
                        "comparison line): for speed runs")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes computing the metrics (the curve's SSIMs and the final tables; "
                             "large volumes)")
    parser.add_argument("--eval-times", type=int, default=0,
                        help="time steps in each SSIM evaluation of the curve (0 = all; the final tables "
                             "always use all)")
    train_defaults = {name: field.default for name, field in ReconTrainSettings.model_fields.items()}
    parser.add_argument("--holdout", type=float, default=0.0,
                        help="fraction of frames held out of DIP-STER training, 0 to 0.5 (recon train's "
                             f"default: {train_defaults['holdout']}); adds a row for the state of the lowest "
                             "held-out error")
    parser.add_argument("--patience", default=f"{train_defaults['patience']},0",
                        help="with --holdout: held-out checks without a 0.5 %% improvement at which recon "
                             f"train stops (its default: {train_defaults['patience']}; 0: never, the whole "
                             "budget), comma-separated; a row for each distinct state they keep")
    parser.add_argument("--heldout-every", type=int, default=train_defaults["eval_every"],
                        help="with --holdout: steps between held-out checks (recon train's --eval-every, "
                             "default %(default)s)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.holdout <= 0.5:
        parser.error(f"--holdout {args.holdout}: give a fraction from 0 to 0.5")
    try:
        patiences = [int(v) for v in args.patience.split(",")]
    except ValueError:
        patiences = [-1]
    if min(patiences) < 0 or args.heldout_every < 1:
        parser.error(f"--patience {args.patience} / --heldout-every {args.heldout_every}: give patiences "
                     ">= 0 (comma-separated) and a check interval >= 1 step")

    import torch

    from tiltstream.recon.device import resolve_device
    from tiltstream.recon.sirt import moving_window_sirt

    device = resolve_device(args.device)
    overrides = {}
    for item in args.set:
        field, _, value = item.partition("=")
        if field not in DipsterConfig.model_fields or not value:
            parser.error(f"--set {item!r}: give FIELD=VALUE with FIELD one of {', '.join(DipsterConfig.model_fields)}")
        try:
            overrides[field] = json.loads(value)
        except json.JSONDecodeError:
            overrides[field] = value  # a bare word: a string setting such as loss=l1
    presets = args.presets.split(",")
    configs = {}
    for name in presets:  # validated here: model_copy(update=...) would not check the overrides
        try:
            configs[name] = DipsterConfig.model_validate({**preset(name).model_dump(), **overrides})
        except pydantic.ValidationError as err:
            first = err.errors()[0]
            parser.error(f"--set on preset {name}: {'.'.join(map(str, first['loc'])) or 'settings'}: "
                         f"{first['msg']}")
        except ValueError as err:
            parser.error(f"--presets: {err}")
    eval_every = [int(v) for v in args.eval_every.split(",")]
    if len(eval_every) == 1:
        eval_every *= len(presets)
    if len(eval_every) != len(presets):
        parser.error(f"--eval-every has {len(eval_every)} values for {len(presets)} presets")
    speed = {"device": device, "precision": args.precision, "compile_model": args.compile}
    if args.threads:
        torch.set_num_threads(args.threads)
    args.docs.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    tag = f"{args.size}x{args.count}_{args.minutes:g}min"  # one section and set of plots per budget
    lines = [f"## Reconstruction quality at {args.size}^3 x {args.count}, {args.minutes:g} minutes of training: "
             "DIP-STER vs moving-window SIRT (`bench/recon_quality.py`)", "",
             f"Command: `python bench/recon_quality.py --phantoms {args.phantoms} --size {args.size} "
             f"--count {args.count} --minutes {args.minutes} --eval-every {args.eval_every} --presets "
             f"{args.presets}" + (f" --threads {args.threads}" if args.threads else "")
             + (f" --device {args.device}" if device.type == "cuda" else "")
             + (f" --precision {args.precision}" if args.precision != "fp32" else "")
             + (" --compile" if args.compile else "")
             + (f" --eval-times {args.eval_times}" if args.eval_times else "")
             + "".join(f" --set {item}" for item in args.set)
             + (" --no-sirt" if args.no_sirt else "")
             + (f" --holdout {args.holdout:g} --patience {args.patience} --heldout-every {args.heldout_every}"
                if args.holdout else "") + "`; "
             f"seed {args.seed}, Poisson noise at 40 e/A^2, {device_words(device)}, "
             f"{time.strftime('%Y-%m-%d')}. Metrics inside Otsu masks "
             "(`tiltstream.recon.metrics`); means over the time steps. DIP-STER time = training wall clock with "
             "evaluations" + (" and held-out checks" if args.holdout else "") + " paused; SIRT (window 30, 30 iterations, clamped to >= 0) time = its whole run. "
             "SSIM: the local SSIM map averaged inside the union of both Otsu masks (strict; the time-to-SSIM "
             "columns use it); paper SSIM: the paper's measurement (`tiltstream.recon.metrics.ssim_paper`: the "
             "reconstruction masked by its Otsu mask, SSIM averaged over the whole volume, background "
             "included), which the paper's figures (> 0.95 nanoshell, > 0.9 nanorod) refer to. RMSE: root mean "
             "square inside the Otsu masks, percent of the reference's range; paper RMSE: the paper's Eq. 8 "
             "(`tiltstream.recon.metrics.rmse_paper`: the mean absolute difference over the whole volume, the "
             "reconstruction masked by its Otsu mask), which the paper's < 8 % refers to. Physical property: "
             "of the final state, then the median of its headline error (S/V or redistribution error, %; "
             "alloying error after step 4, points) over the evaluations in the last quarter of the training "
             "time (one evaluation of the alloying error moves by 3-5 points).", ""]
    for phantom in args.phantoms.split(","):
        session_path = session_for(args.work, phantom, args.size, args.count, args.seed, str(device))
        session = read_session(session_path)
        frames = session.load_frames()
        truth, times_s = read_ground_truth(session_path)
        print(f"{phantom}: {truth.shape}", file=sys.stderr)
        tables: dict[str, list[dict]] = {}
        if not args.no_sirt:
            start = time.perf_counter()
            sirt = moving_window_sirt(frames, session.angles_deg, truth.shape[1:], window=30, iterations=30,
                                      nonnegative=True, device=device)
            sirt_s = time.perf_counter() - start
            tables["SIRT w30 >= 0"] = metrics.metrics_table(sirt, truth, times_s, workers=args.workers)
        curves: dict[str, list[dict]] = {}
        steps: dict[str, int] = {}
        curves_until: dict[str, list[dict]] = {}  # a kept row's: its run's curve up to the kept step
        kept: dict[str, tuple[dict, list[int], HeldOutStopping]] = {}  # a kept row's state, its patiences
        for name, every in zip(presets, eval_every):
            stopping = None
            if args.holdout:
                directory = args.work / f"kept_{phantom}_{tag}_s{args.seed}_{name}"
                directory.mkdir(parents=True, exist_ok=True)
                stopping = HeldOutStopping(patiences, args.heldout_every, directory)
            label = f"DIP-STER {name}" + (f", {args.holdout:.0%} held out" if stopping else "")
            volumes, curve, steps[label] = run_dipster(name, frames, session, truth, args.minutes,
                                                       every, args.seed, speed, args.eval_times,
                                                       configs[name], args.workers, phantom, args.holdout,
                                                       stopping)
            tables[label] = metrics.metrics_table(volumes, truth, times_s, workers=args.workers)
            curves[label] = curve
            if stopping:
                from tiltstream.recon.trainer import Trainer

                by_step: dict[int, list[int]] = {}
                for patience, record in stopping.kept.items():
                    by_step.setdefault(record["steps"], []).append(patience)
                for kept_steps, by in sorted(by_step.items()):
                    record = stopping.kept[by[0]]
                    best = Trainer.load(record["path"], device=device, precision=args.precision)
                    label = f"DIP-STER {name}, kept by held-out error at step {kept_steps}"
                    kept[label], steps[label] = (record, by, stopping), kept_steps
                    curves_until[label] = [p for p in curve if p["steps"] <= kept_steps]
                    tables[label] = metrics.metrics_table(np.stack([best.volume(t) for t in session.times_s]),
                                                          truth, times_s, workers=args.workers)
                for path in directory.glob("kept_step*.pt"):
                    path.unlink()
                directory.rmdir()
        png = args.docs / f"recon_quality_{phantom}_{tag}.png"
        plot(phantom, tables, curves, png, {m: (k[0]["train_s"], k[2]) for m, k in kept.items()})
        lines += [f"### {phantom} {args.size}^3 x {args.count} frames", "",
                  "| method | steps | steps/s | RMSE mean (%) | RMSE max (%) | paper RMSE mean (max) (%) | "
                  "SSIM mean | SSIM min | "
                  "paper SSIM mean (min) | time to SSIM 0.9 (s) | time to SSIM 0.95 (s) | physical property |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for method, rows in tables.items():
            s = summarise(phantom, rows)
            if method.startswith("SIRT"):
                n_steps, rate = "-", "-"
                t90 = f"{sirt_s:.0f}" if s["ssim_mean"] >= 0.9 else "never"
                t95 = f"{sirt_s:.0f}" if s["ssim_mean"] >= 0.95 else "never"
            else:
                curve = curves_until[method] if method in kept else curves[method]
                never = "not by the kept step" if method in kept else "not within budget"
                n_steps = str(steps[method])
                t90, t95 = (first_time(curve, th) for th in (0.9, 0.95))
                t90 = never if t90 is None else f"{t90:.0f}"
                t95 = never if t95 is None else f"{t95:.0f}"
                late = None if method in kept else late_median(curve)
                if method not in kept:
                    rate = f"{curve[-1]['steps'] / curve[-1]['train_s']:.1f}"
                else:
                    record, by, stopping = kept[method]
                    rate = f"{record['steps'] / record['train_s']:.1f}"
                    stops = ["patience 0 (the whole budget)" if patience == 0 else
                             f"patience {patience} (never stops)" if patience not in stopping.stop else
                             f"patience {patience} (stops at step {stopping.stop[patience]['steps']}, "
                             f"{stopping.stop[patience]['train_s']:.0f} s)" for patience in by]
                    s["property"] += (f"; kept at step {record['steps']} ({record['train_s']:.0f} s, held-out "
                                      f"error {record['heldout_rmse_percent']:.2f} %) by " + ", ".join(stops))
                if late is not None:  # signed errors keep their sign
                    value = f"{late[0]:+.1f}" if phantom in ("nanoshell", "nanostar") else f"{late[0]:.1f}"
                    s["property"] += (f"; median of the {late[1]} evaluation(s) in the last quarter of the "
                                      f"training time: {value}")
            lines.append(f"| {method} | {n_steps} | {rate} | {s['rmse_mean']:.2f} | {s['rmse_max']:.2f} | "
                         f"{s['paper_rmse_mean']:.2f} ({s['paper_rmse_max']:.2f}) | "
                         f"{s['ssim_mean']:.4f} | {s['ssim_min']:.4f} | {s['paper_mean']:.3f} ({s['paper_min']:.3f}) | "
                         f"{t90} | {t95} | {s['property']} |")
        if not args.no_sirt:
            for key, words in (("ssim", "SSIM"), ("ssim_paper", "paper SSIM")):
                wins = {m: float(np.mean([a[key] > b[key] for a, b in zip(rows, tables["SIRT w30 >= 0"])]))
                        for m, rows in tables.items() if not m.startswith("SIRT")}
                lines += ["", f"DIP-STER {words} above SIRT's at: " + ", ".join(f"{m} {w:.0%} of time steps"
                                                                               for m, w in wins.items())]
            lines += ["", f"(SIRT took {sirt_s:.0f} s)."]
        lines += ["", f"![{phantom}]({png.name})", ""]
    write_section(args.docs / "quality.md", "\n".join(lines), tag)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
