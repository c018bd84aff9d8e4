"""Where one DIP-STER training step's time goes, by operator (torch.profiler), at a given size.

A trainer with the preset is filled with random frames (the cost does not depend on the data), warmed
up, then ``--steps`` steps are profiled on the CPU (or CUDA); the table gives the operators' self time,
largest first, and the share of the whole (backward operators carry their own names, e.g.
``convolution_backward``). Run it alone: on a 2-core machine any other busy process changes the split.

Usage::

    python bench/step_profile.py --size 128 --frames 100 --preset fast --threads 2 --steps 20
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="frame edge = volume edge, pixels")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--precision", default="fp32", help="fp32, tf32 or bf16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rows", type=int, default=20, help="operators listed")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from torch.profiler import ProfilerActivity, profile

    from tiltstream.recon.presets import preset
    from tiltstream.recon.trainer import Trainer

    torch.set_num_threads(args.threads)
    trainer = Trainer(preset(args.preset), (args.size, args.size), float(args.frames), device=args.device,
                      precision=args.precision)
    rng = np.random.default_rng(0)
    for i in range(args.frames):
        trainer.add_frame(i, rng.random((args.size, args.size), dtype=np.float32) + 0.5,
                          -70.0 + 140.0 * i / args.frames, float(i))
    trainer.train_steps(args.warmup)
    start = time.perf_counter()
    trainer.train_steps(args.steps)
    plain_s = (time.perf_counter() - start) / args.steps
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        trainer.train_steps(args.steps)
    print(f"{args.preset} {args.precision}, {args.size}^2 frames x {args.frames}, {args.threads} threads, "
          f"{trainer.device}: {plain_s * 1000:.0f} ms per step unprofiled ({1 / plain_s:.2f} steps/s)")
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print("| operator | self CPU ms per step | share |")
    print("|---|---|---|")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:args.rows]:
        print(f"| {e.key} | {e.self_cpu_time_total / 1000 / args.steps:.1f} | {e.self_cpu_time_total / total:.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
