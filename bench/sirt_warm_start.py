"""Moving-window SIRT: cold start (the paper's) vs warm start from the previous window, at equal iterations.

A dynamic specimen (a shrinking, drifting soft-edged blob and a growing satellite, ``SIZE^3`` x
``STEPS``), one frame per step at the GRS angle of that step (+-70 deg), optionally with Gaussian noise
(sigma = ``NOISE`` x the frames' maximum). Prints mean/max RMSE (percent of the range, inside the Otsu
masks) and mean SSIM against the ground truth, for cold/warm start, with and without non-negativity.

Usage: ``python bench/sirt_warm_start.py [--size 32] [--steps 60] [--noise 0 0.05] [--device auto]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tiltstream.recon.metrics import rmse_percent, ssim
from tiltstream.recon.projector import project_volume
from tiltstream.recon.sirt import moving_window_sirt

GOLDEN = (1 + 5**0.5) / 2


def specimen(size: int, steps: int) -> np.ndarray:
    """Ground truth (steps, size, size, size) float32."""
    z, y, x = np.mgrid[:size, :size, :size] - (size - 1) / 2.0
    s = size / 32.0
    volumes = []
    for t in range(steps):
        f = t / steps
        main = 1 / (1 + np.exp(np.sqrt((x - (2 - 4 * f) * s) ** 2 + z**2 + (y / 1.3) ** 2) - (9 - 4 * f) * s))
        satellite = 0.6 / (1 + np.exp(np.sqrt((x + 7 * s) ** 2 + (z - 6 * s) ** 2 + y**2) - (3 + 2 * f) * s))
        volumes.append(main + satellite)
    return np.asarray(volumes, dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32, help="volume edge, voxels")
    parser.add_argument("--steps", type=int, default=60, help="time steps = frames")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.05],
                        help="Gaussian noise levels, fraction of the frames' maximum")
    parser.add_argument("--window", type=int, default=30, help="SIRT window, frames")
    parser.add_argument("--iterations", type=int, default=30, help="SIRT iterations per window")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = parser.parse_args()
    truth = specimen(args.size, args.steps)
    angles = np.array([((i * GOLDEN * 140.0) % 140.0) - 70.0 for i in range(args.steps)])
    clean = np.stack([project_volume(v, a) for v, a in zip(truth, angles)])
    rng = np.random.default_rng(0)
    print(f"{args.size}^3 x {args.steps} steps, window {args.window}, {args.iterations} iterations")
    for noise in args.noise:
        frames = clean + (noise * clean.max() * rng.standard_normal(clean.shape)).astype(np.float32)
        for warm in (False, True):
            for nonneg in (False, True):
                start = time.perf_counter()
                rec = moving_window_sirt(frames, angles, truth.shape[1:], args.window, args.iterations,
                                         warm_start=warm, nonnegative=nonneg, device=args.device)
                took = time.perf_counter() - start
                rmse = [rmse_percent(r, g) for r, g in zip(rec, truth)]
                sim = [ssim(r, g) for r, g in zip(rec, truth)]
                print(f"noise {noise:4.2f}  {'warm' if warm else 'cold'}  nonneg {str(nonneg):5s}  "
                      f"RMSE mean {np.mean(rmse):6.2f} % max {np.max(rmse):6.2f} %  SSIM mean {np.mean(sim):.3f}"
                      f"  ({took:.1f} s)")


if __name__ == "__main__":
    main()
