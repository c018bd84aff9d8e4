"""Time phantom generation (default 128^3 x 100 steps, the paper's size): median wall time of several runs.

Usage: python bench/phantom_speed.py [--size 128] [--steps 100] [--runs 3] [--device auto|cpu|cuda] [--threads N]
       [--phantoms nanoshell,nanorod,nanostar,nanocube]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tiltstream.simulator.phantoms import PHANTOMS, make_phantom
from tiltstream.recon.device import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="grid edge, voxels")
    parser.add_argument("--steps", type=int, default=100, help="time steps")
    parser.add_argument("--runs", type=int, default=3, help="runs per phantom (median reported)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--phantoms", default=",".join(PHANTOMS), help="comma-separated phantom names")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(f"device {device}, torch threads {torch.get_num_threads()}, {args.size}^3 x {args.steps}, "
          f"median of {args.runs}")
    for name in args.phantoms.split(","):
        times = []
        for run in range(args.runs):
            start = time.perf_counter()
            make_phantom(name, args.size, args.steps, seed=run, device=device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        print(f"{name:10s} median {statistics.median(times):7.2f} s  "
              f"({1e3 * statistics.median(times) / args.steps:6.1f} ms/step; runs "
              + ", ".join(f"{t:.2f}" for t in times) + ")", flush=True)


if __name__ == "__main__":
    main()
