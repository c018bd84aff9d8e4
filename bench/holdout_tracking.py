"""Benchmark: does the held-out reprojection error track the SSIM against ground truth during training?

For each phantom a seeded synthetic session (Poisson noise at 40 e/A^2) is written; a fraction of its
frames, evenly spread (``tiltstream.recon.run_dir.heldout_positions``, as ``recon train --holdout``), is held out
of DIP-STER training. Every ``--eval-every`` steps the trainer's held-out reprojection error
(``Trainer.heldout_metrics``: RMSE percent and SSIM of reprojection vs frame) and the mean SSIM of all
volumes against the ground truth are recorded. Reported per phantom: the Spearman rank correlation
between held-out RMSE and ground-truth SSIM over the evaluations, and, for patience-based stopping
(``tiltstream.recon.run_dir.PlateauStopper``: no 0.5 % held-out improvement for P evaluations) keeping the
checkpoint of the best held-out error, the step it stops at and the ground-truth SSIM of the kept
checkpoint against the best SSIM seen. Writes ``docs/benchmarks/holdout_tracking.png`` and prints a Markdown table.

Example::

    OMP_NUM_THREADS=1 python bench/holdout_tracking.py --size 32 --count 60 --steps 4000 --eval-every 250
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tiltstream.acquire.session import read_ground_truth  # noqa: E402
from tiltstream.recon import metrics  # noqa: E402

PATIENCES = (2, 4, 8)  # evaluations without a 0.5 % held-out improvement before stopping


def session_for(work: Path, phantom: str, size: int, count: int, seed: int) -> Path:
    """A cached synthetic session of ``phantom`` (same layout as ``bench/recon_quality.py``)."""
    from tiltstream.simulator.tiltseries import write_synthetic_session

    path = work / f"{phantom}_{size}_{count}_s{seed}"
    if not (path / "ground_truth.tif").is_file():
        write_synthetic_session(path, phantom, size, count, seed=seed)
    return path


def track(session_path: Path, preset_name: str, holdout: float, steps: int, eval_every: int,
          seed: int) -> list[dict]:
    """Train with held-out frames; one record per evaluation (steps, held-out RMSE/SSIM, truth SSIM)."""
    from tiltstream.recon.frame_feed import add_recorded_frame
    from tiltstream.recon.presets import preset
    from tiltstream.recon.run_dir import heldout_positions, recorded_time_scale_s
    from tiltstream.recon.session_frames import load_session_frames
    from tiltstream.recon.trainer import Trainer

    session, frames = load_session_frames(session_path)
    truth, times_s = read_ground_truth(session_path)
    records = sorted(session.records, key=lambda r: r.time_s)
    held = set(heldout_positions(len(records), holdout))
    trainer = Trainer(preset(preset_name), frames.shape[1:], recorded_time_scale_s(session), seed=seed)
    by_index = {r.index: f for r, f in zip(session.records, frames)}
    for position, record in enumerate(records):
        add_recorded_frame(trainer, record, by_index[record.index], held_out=position in held)
    curve = []
    while trainer.steps_done < steps:
        trainer.train_steps(eval_every)
        held_metrics = trainer.heldout_metrics()
        ssim = float(np.mean([metrics.ssim(trainer.volume(t), truth[i]) for i, t in enumerate(times_s)]))
        curve.append({"steps": trainer.steps_done, **held_metrics, "truth_ssim": ssim})
        print(f"  {session_path.name}: {trainer.steps_done} steps, held-out RMSE "
              f"{held_metrics['heldout_rmse_percent']:.2f} %, truth SSIM {ssim:.4f}", file=sys.stderr, flush=True)
    return curve


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (no ties expected in float series)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def stop_with_patience(curve: list[dict], patience: int) -> tuple[int, float]:
    """Step at which :class:`PlateauStopper` stops (or the last), and the truth SSIM at the best held-out error."""
    from tiltstream.recon.run_dir import PlateauStopper

    stopper = PlateauStopper(patience)
    best_rmse, kept_ssim, stop_step = np.inf, float("nan"), curve[-1]["steps"]
    for point in curve:
        if point["heldout_rmse_percent"] < best_rmse:
            best_rmse, kept_ssim = point["heldout_rmse_percent"], point["truth_ssim"]
        if stopper.update(point["heldout_rmse_percent"]):
            stop_step = point["steps"]
            break
    return stop_step, kept_ssim


def plot(curves: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.4), squeeze=False)
    for ax, (phantom, curve) in zip(axes[0], curves.items()):
        steps = [p["steps"] for p in curve]
        ax.plot(steps, [p["truth_ssim"] for p in curve], "b-o", ms=3, label="SSIM vs ground truth")
        ax.set(xlabel="training steps", ylabel="mean SSIM vs ground truth", title=phantom)
        ax.tick_params(axis="y", colors="b")
        twin = ax.twinx()
        twin.plot(steps, [p["heldout_rmse_percent"] for p in curve], "r-s", ms=3, label="held-out RMSE")
        twin.set_ylabel("held-out reprojection RMSE (%)", color="r")
        twin.tick_params(axis="y", colors="r")
        best = int(np.argmin([p["heldout_rmse_percent"] for p in curve]))
        ax.axvline(steps[best], color="gray", ls="--", lw=1)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phantoms", default="nanorod,nanoshell,nanostar,nanocube", help="comma-separated")
    parser.add_argument("--size", type=int, default=32, help="volume edge, voxels")
    parser.add_argument("--count", type=int, default=60, help="frames (= time steps)")
    parser.add_argument("--steps", type=int, default=4000, help="training steps per phantom")
    parser.add_argument("--eval-every", type=int, default=250, help="steps between evaluations")
    parser.add_argument("--holdout", type=float, default=0.1, help="fraction of frames held out")
    parser.add_argument("--preset", default="fast", help="DIP-STER preset")
    parser.add_argument("--seed", type=int, default=0, help="seed of phantoms, noise and training")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tiltstream_bench"), help="session cache dir")
    parser.add_argument("--png", type=Path, default=ROOT / "docs" / "benchmarks" / "holdout_tracking.png", help="plot path")
    parser.add_argument("--json", type=Path, default=None, help="also write the curves here")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    curves = {}
    for phantom in args.phantoms.split(","):
        path = session_for(args.work, phantom, args.size, args.count, args.seed)
        curves[phantom] = track(path, args.preset, args.holdout, args.steps, args.eval_every, args.seed)
    if args.json:
        args.json.write_text(json.dumps(curves))
    plot(curves, args.png)
    print(f"{args.size}^3 x {args.count}, preset {args.preset}, holdout {args.holdout}, {args.steps} steps, "
          f"evaluations every {args.eval_every}, seed {args.seed}")
    print("| phantom | Spearman(held-out RMSE, truth SSIM) | best truth SSIM (step) | "
          + " | ".join(f"patience {p}: stop step, kept SSIM" for p in PATIENCES) + " |")
    print("|---|---|---|" + "---|" * len(PATIENCES))
    for phantom, curve in curves.items():
        rmse = np.array([p["heldout_rmse_percent"] for p in curve])
        ssim = np.array([p["truth_ssim"] for p in curve])
        best = int(np.argmax(ssim))
        cells = [f"{s}, {k:.3f}" for s, k in (stop_with_patience(curve, p) for p in PATIENCES)]
        print(f"| {phantom} | {spearman(rmse, -ssim):.2f} | {ssim[best]:.3f} ({curve[best]['steps']}) | "
              + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
