"""Steps/s of the DIP-STER trainer before and after the one-import-name restructuring, in one process.

The code before it (top-level packages ``recon``, ``acquire``: a checkout of commit aa84b04 or earlier,
given with ``--old-tree``) and the code now (``tiltstream.recon``) import side by side, as their module
names differ. One trainer of each is built with the same preset, seed and random frames, and the two are
timed in alternating blocks of ``--steps`` steps (interleaved, so drift in the machine's speed falls on
both); the table gives each side's median steps/s and the ratio now / before, and says whether the two
trainers' volumes are bit-equal after the same steps. Run it alone:

    git worktree add /tmp/before aa84b04
    OMP_NUM_THREADS=2 python bench/restructure_speed.py --old-tree /tmp/before --size 64 --threads 2
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path


def _trainer(module_prefix: str, size: int, frames: int, seed: int):
    """A ``fast`` trainer of the code under ``module_prefix`` (``""`` before, ``"tiltstream."`` now)."""
    import numpy as np

    presets = importlib.import_module(f"{module_prefix}recon.presets")
    trainer_module = importlib.import_module(f"{module_prefix}recon.trainer")
    trainer = trainer_module.Trainer(presets.preset("fast"), (size, size), float(frames), device="cpu", seed=seed)
    rng = np.random.default_rng(0)
    for i in range(frames):
        trainer.add_frame(i, rng.random((size, size), dtype=np.float32) + 0.5, -70.0 + 140.0 * i / frames,
                          float(i))
    return trainer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-tree", type=Path, required=True, help="checkout of the code before (top-level recon/)")
    parser.add_argument("--size", type=int, default=64, help="frame edge = volume edge, pixels")
    parser.add_argument("--frames", type=int, default=100, help="frames in each trainer")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first, each side")
    parser.add_argument("--steps", type=int, default=50, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks per side (interleaved)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    now = _trainer("tiltstream.", args.size, args.frames, 0)  # imported first: `tiltstream` is the package
    sys.path.append(str(args.old_tree.resolve()))  # the old tree's top-level recon/, acquire/
    sides = {"before": _trainer("", args.size, args.frames, 0), "now": now}
    for trainer in sides.values():
        trainer.train_steps(args.warmup)
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, trainer in sides.items():
            start = time.perf_counter()
            trainer.train_steps(args.steps)
            rates[name].append(args.steps / (time.perf_counter() - start))
    before, now = statistics.median(rates["before"]), statistics.median(rates["now"])
    print(f"fast preset, {args.size}^2 frames x {args.frames}, {torch.get_num_threads()} threads, "
          f"{args.repeats} interleaved blocks of {args.steps} steps")
    print(f"before  {before:7.2f} steps/s   (blocks: {', '.join(f'{r:.1f}' for r in rates['before'])})")
    print(f"now     {now:7.2f} steps/s   (blocks: {', '.join(f'{r:.1f}' for r in rates['now'])})")
    print(f"ratio now / before: {now / before:.3f}")
    import numpy as np

    same = all(np.array_equal(sides["before"].volume(time_s), sides["now"].volume(time_s))
               for time_s in (0.0, args.frames / 2, args.frames - 1.0))
    print(f"volumes after the same {args.warmup + args.repeats * args.steps} steps (seed 0): "
          + ("bit-equal" if same else "DIFFERENT"))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
