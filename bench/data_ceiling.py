"""Benchmark: what a session's frames can give a reconstruction, measured without a network's limits.

Two ceilings for one ground-truth volume of a cached synthetic session (``bench/recon_quality.py``'s
cache, 64^3 x 100 by default):

- **Blurred ground truth.** The volume under a Gaussian blur of ``sigma`` voxels, compared with itself
  sharp: what a given spatial resolution costs the in-mask SSIM, the in-mask RMSE and the specimen's
  property (the nanoshell's surface/volume error; for the alloying specimens the intensity spread
  inside the particle mask as a fraction of the truth's, the quantity Eq. 10's alloying degree is made of),
  and the whole series under that blur measured as ``bench/recon_quality.py`` measures a reconstruction
  (its headline property error: S/V, redistribution, alloying points after step 4).
- **A static series.** The volume projected at all the session's tilt angles, with Poisson noise at the
  session's own level (estimated from its frames against the projected ground truth), reconstructed
  by non-negative SIRT (ASTRA's ``MinConstraint = 0``) for a range of iterations, and optionally by
  DIP-STER's ``fast`` preset: 100 frames of one unchanging state, which holds more of that state than a
  dynamic series, where each state is seen in one frame.

Example::

    python bench/data_ceiling.py --phantom nanoshell --step 99 --dip-steps 8000

Prints markdown tables; results are in docs/benchmarks/quality.md, "What the frames hold".
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tiltstream.acquire.session import read_ground_truth, read_session  # noqa: E402
from bench.recon_quality import property_rows, property_summary, session_for  # noqa: E402
from tiltstream.recon import metrics  # noqa: E402
from tiltstream.recon.projector import ParallelProjector  # noqa: E402
from tiltstream.recon.sirt import sirt  # noqa: E402


HEADLINE = {"nanoshell": "mean S/V error (%)", "nanostar": "total redistribution error (%)",
            "nanorod": "alloying error after step 4 (points)", "nanocube": "alloying error after step 4 (points)"}
# what bench/recon_quality.py's property_summary gives as a series' headline error, in words


def counts_per_unit(frames: np.ndarray, expected: np.ndarray) -> float:
    """Detector counts per unit of projected intensity, from frames and their noise-free expectation.

    Poisson noise on ``N * expected`` counts, divided by ``N``, has variance ``expected / N``; so
    ``N = sum(expected) / sum((frames - expected)^2)``.

    Parameters
    ----------
    frames, expected
        Measured and noise-free frames of one shape, in the same (projected intensity) units.
    """
    frames = np.asarray(frames, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if frames.shape != expected.shape:
        raise ValueError(f"frames {frames.shape} and expected {expected.shape} differ in shape")
    residual = float(((frames - expected) ** 2).sum())
    if residual <= 0:
        raise ValueError("the frames equal their expectation: no noise to measure")
    return float(expected.clip(min=0).sum() / residual)


def property_of(phantom: str, volume: np.ndarray, truth: np.ndarray, particle: np.ndarray) -> str:
    """The specimen's property of ``volume`` against ``truth``, in words: the surface/volume error (%)
    of a nanoshell, otherwise the intensity spread inside ``particle`` as a fraction of the truth's."""
    if phantom == "nanoshell":
        err = 100.0 * (metrics.surface_to_volume(volume) / metrics.surface_to_volume(truth) - 1.0)
        return f"S/V {err:+.1f} %"
    frac = metrics.intensity_spread(volume, particle) / metrics.intensity_spread(truth, particle)
    return f"spread {frac:.3f}"


def quality_row(label: str, phantom: str, volume: np.ndarray, truth: np.ndarray, particle: np.ndarray) -> str:
    """One markdown row: label, in-mask SSIM, in-mask RMSE (%), property."""
    return (f"| {label} | {metrics.ssim(volume, truth):.4f} | {metrics.rmse_percent(volume, truth):.1f} | "
            f"{property_of(phantom, volume, truth, particle)} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phantom", default="nanoshell", choices=["nanoshell", "nanorod", "nanocube", "nanostar"])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step", type=int, default=-1, help="time step of the ground truth held still (-1: the last)")
    parser.add_argument("--blur", type=float, nargs="*", default=[0.3, 0.4, 0.5, 0.6, 0.7],
                        help="Gaussian blurs of the ground truth, voxels (sigma)")
    parser.add_argument("--iterations", type=int, nargs="*", default=[30, 100, 300, 1000, 3000],
                        help="SIRT iteration counts at which the static reconstruction is measured")
    parser.add_argument("--dip-steps", type=int, default=0,
                        help="also train DIP-STER's fast preset on the static series for this many steps "
                             "(measured every 1000; 0 = no)")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"],
                        help="DIP-STER's precision (the 64^3 quality runs use bf16 on the CPU)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tiltstream_bench"), help="session cache dir")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    path = session_for(args.work, args.phantom, args.size, args.count, args.seed)
    session = read_session(path)
    frames = session.load_frames().astype(np.float64)
    series, _ = read_ground_truth(path)
    series = np.asarray(series, dtype=np.float32)
    series64 = series.astype(np.float64)  # the blurs and comparisons work in float64
    step = args.step % len(series)
    truth = series64[step]
    particle = metrics.particle_mask(series[0])
    angles = np.array([r.angle_deg for r in session.records])
    volume_shape = series.shape[1:]

    own = np.stack([ParallelProjector([a], volume_shape)(series[i])[0] for i, a in enumerate(angles)])
    n_counts = counts_per_unit(frames, own)
    print(f"{args.phantom} {args.size}^3 x {args.count}, seed {args.seed}, time step {step}; "
          f"{n_counts:.1f} counts per unit of projected intensity (from the session's frames); "
          f"torch threads {torch.get_num_threads()}\n")

    print(f"| ground truth blurred by (voxels) | in-mask SSIM | in-mask RMSE % | property | the whole series "
          f"blurred: {HEADLINE[args.phantom]} |\n|---|---|---|---|---|")
    for sigma in args.blur:
        blurred = np.stack([ndimage.gaussian_filter(v, sigma) for v in series64])
        headline = property_summary(args.phantom, property_rows(args.phantom, blurred, series))[1]
        print(quality_row(f"{sigma:g}", args.phantom, blurred[step], truth, particle) + f" {headline:+.1f} |")

    clean = np.asarray(ParallelProjector(angles, volume_shape)(series[step]), dtype=np.float64)
    static = (np.random.default_rng(args.seed).poisson(clean.clip(min=0) * n_counts) / n_counts).astype(np.float32)
    if args.iterations:
        print(f"\n| static series, non-negative SIRT, iterations | in-mask SSIM | in-mask RMSE % | property |\n"
              f"|---|---|---|---|")
    volume, done = None, 0
    for iterations in sorted(args.iterations):
        volume = sirt(static, angles, volume_shape, iterations=iterations - done, x0=volume, nonnegative=True)
        done = iterations
        print(quality_row(str(iterations), args.phantom, volume, truth, particle), flush=True)

    if args.dip_steps:
        from tiltstream.recon.frame_feed import add_recorded_frame
        from tiltstream.recon.presets import preset
        from tiltstream.recon.run_dir import recorded_time_scale_s
        from tiltstream.recon.trainer import Trainer

        trainer = Trainer(preset("fast"), static.shape[1:], recorded_time_scale_s(session), seed=args.seed,
                          precision=args.precision)
        for record, frame in zip(session.records, static):
            add_recorded_frame(trainer, record, frame)
        print(f"\n| static series, DIP-STER fast ({args.precision}), steps (training s) | in-mask SSIM | "
              f"in-mask RMSE % | property |\n|---|---|---|---|")
        done, train_s = 0, 0.0
        for target in range(1000, args.dip_steps + 1, 1000):
            start = time.perf_counter()
            trainer.train_steps(target - done)
            train_s += time.perf_counter() - start
            done = target
            volume = trainer.volume(float(session.times_s[step]))
            print(quality_row(f"{target} ({train_s:.0f})", args.phantom, volume, truth, particle), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
