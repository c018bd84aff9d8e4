"""DIP-STER training speed: steps/s of each preset x precision (x torch.compile, x unfused Adam), one process, one device.

For each combination a trainer with the preset is filled with random frames of the given size (the
rate does not depend on the data) and warmed up (``--warmup`` steps: cuDNN autotuning, compilation); then
``--repeats`` rounds each time one block of ``--steps`` steps of every combination of the preset, in turn
(so that a noisy machine slows them alike); the table gives the median rate and its ratio to the same
preset's first row, measured in this process. On CUDA the clock is read
after ``torch.cuda.synchronize``.

Usage::

    python bench/train_speed.py --device cuda --size 128 --presets fast,paper --precisions fp32,tf32,bf16 --compiled bf16
    python bench/train_speed.py --device cpu --size 64 --presets fast --precisions fp32,bf16 --threads 1
    python bench/train_speed.py --device cpu --size 64 --frames 60 --presets fast --precisions bf16 --unfused bf16 --threads 1
    python bench/train_speed.py --device cpu --size 128 --presets fast --precisions fp32,bf16 --nchw fp32,bf16 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def warmed_trainer(preset_name: str, rows_per_frame: int | None, size: int, frames: int, device, precision: str,
                   compile_model: bool, warmup: int, fused_adam: bool = True, nchw: bool = False):
    """A trainer of the combination filled with random frames and warmed up, and the warm-up's wall time in
    seconds (``nchw``: the network in the contiguous memory format, the CPU trainer's before it went
    channels-last)."""
    import numpy as np
    import torch

    from tiltstream.recon.presets import preset
    from tiltstream.recon.trainer import Trainer

    config = preset(preset_name)
    if rows_per_frame:
        config = config.model_copy(update={"rows_per_frame": rows_per_frame})
    trainer = Trainer(config, (size, size), float(frames), device=device, precision=precision,
                      compile_model=compile_model)
    if not fused_adam:  # PyTorch's default loop over the parameters, the trainer's optimizer before 2026-12-04
        trainer.optimizer.param_groups[0]["fused"] = False
    if nchw:
        trainer.model.to(memory_format=torch.contiguous_format)
        trainer.weights.query_model.to(memory_format=torch.contiguous_format)
    rng = np.random.default_rng(0)
    for i in range(frames):
        trainer.add_frame(i, rng.random((size, size), dtype=np.float32) + 0.5, -70.0 + 140.0 * i / frames,
                          float(i))
    start = time.perf_counter()
    trainer.train_steps(warmup)
    _sync(trainer)
    return trainer, time.perf_counter() - start


def _sync(trainer) -> None:
    import torch

    if trainer.device.type == "cuda":
        torch.cuda.synchronize()


def block_rate(trainer, steps: int) -> float:
    """Steps/s of one block of ``steps`` steps."""
    _sync(trainer)
    start = time.perf_counter()
    trainer.train_steps(steps)
    _sync(trainer)
    return steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--size", type=int, default=128, help="frame edge = volume edge, pixels")
    parser.add_argument("--frames", type=int, default=100, help="frames in the trainer")
    parser.add_argument("--presets", default="fast,paper", help="comma-separated presets")
    parser.add_argument("--precisions", default="fp32,tf32,bf16", help="comma-separated: fp32, tf32, bf16")
    parser.add_argument("--compiled", default="", help="comma-separated precisions also timed with torch.compile")
    parser.add_argument("--unfused", default="", help="comma-separated precisions also timed with "
                        "PyTorch's unfused Adam (the trainer's is fused)")
    parser.add_argument("--nchw", default="", help="comma-separated precisions also timed with the network in "
                        "the contiguous (NCHW) memory format (the CPU trainer's is channels-last)")
    parser.add_argument("--rows", default="", help="comma-separated rows_per_frame values also timed "
                        "(fp32 eager) besides the presets' own")
    parser.add_argument("--warmup", type=int, default=30, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=100, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)

    import torch

    from tiltstream.errors import UserError
    from tiltstream.recon.device import resolve_device
    from tiltstream.recon.presets import preset

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"CPU, {torch.get_num_threads()} torch threads")
    print(f"{where}, torch {torch.__version__}, {args.size}^2 frames x {args.frames}, median of {args.repeats} x "
          f"{args.steps} steps after {args.warmup} warm-up steps\n")
    print("| preset | rows/frame | precision | compiled | Adam | network memory format | steps/s | vs first row | "
          "warm-up (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.presets.split(","):
        base = None
        own_rows = preset(name).rows_per_frame
        runs = [(own_rows, p, False, True, False) for p in args.precisions.split(",")]
        runs += [(own_rows, p, True, True, False) for p in args.compiled.split(",") if p]
        runs += [(own_rows, p, False, False, False) for p in args.unfused.split(",") if p]
        runs += [(own_rows, p, False, True, True) for p in args.nchw.split(",") if p]
        runs += [(int(r), "fp32", False, True, False) for r in args.rows.split(",") if r]
        runs = [r for r in runs if r[1] != "tf32" or device.type == "cuda"]
        trainers = [warmed_trainer(name, rows, args.size, args.frames, device, precision, compiled, args.warmup,
                                   fused, nchw) for rows, precision, compiled, fused, nchw in runs]
        rates: list[list[float]] = [[] for _ in runs]
        for _ in range(args.repeats):  # round by round, so that every combination sees the same machine
            for (trainer, _), own in zip(trainers, rates):
                own.append(block_rate(trainer, args.steps))
        for (rows, precision, compiled, fused, nchw), (_, warm_s), own in zip(runs, trainers, rates):
            rate = statistics.median(own)
            base = base or rate
            print(f"| {name} | {rows} | {precision} | {'yes' if compiled else 'no'} | "
                  f"{'fused' if fused else 'unfused'} | {'NCHW' if nchw else 'trainer'} | {rate:.1f} | "
                  f"{rate / base:.2f} | {warm_s:.1f} |", flush=True)
        del trainers
    return 0


if __name__ == "__main__":
    sys.exit(main())
