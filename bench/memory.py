"""Peak memory (resident set, MiB) of one process for DIP-STER training, volume queries and SIRT at a size.

Each task runs in a fresh ``python`` subprocess on random frames of ``--size``^2 (``--frames`` of them; the
volume is ``--size``^3) and reports its peak resident set (``ru_maxrss``) and, on CUDA, torch's peak
allocated memory: ``train`` builds a ``fast`` (or ``--preset``) trainer and runs ``--steps`` steps;
``volumes`` queries ``--volumes`` volumes from it; ``sirt`` runs one window of non-negative SIRT (30
frames, 30 iterations) and a moving-window SIRT over the whole series is that times the windows, one at a
time. Memory does not depend on what else runs, so it can be measured on a busy machine:

    python bench/memory.py --sizes 128,256 --device cpu
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

TASK = r'''
import json, resource, sys
import numpy as np, torch
task, size, frames, steps, volumes, preset_name, device = sys.argv[1:8]
size, frames, steps, volumes = int(size), int(frames), int(steps), int(volumes)
rng = np.random.default_rng(0)
series = rng.random((frames, size, size), dtype=np.float32) + 0.5
angles = np.linspace(-70.0, 70.0, frames)
if task in ("train", "volumes"):
    from tiltstream.recon.presets import preset
    from tiltstream.recon.trainer import Trainer
    trainer = Trainer(preset(preset_name), (size, size), float(frames), device=device)
    for i in range(frames):
        trainer.add_frame(i, series[i], float(angles[i]), float(i))
    trainer.train_steps(steps)
    if task == "volumes":
        for k in range(volumes):
            trainer.volume(float(k * frames / volumes))
else:
    from tiltstream.recon.sirt import sirt
    window = min(30, frames)
    sirt(series[:window], angles[:window], (size, size, size), iterations=30, nonnegative=True, device=device)
peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
print(json.dumps({"rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "gpu_mib": peak_gpu}))
'''


def measure(task: str, size: int, args: argparse.Namespace) -> dict:
    """Run ``task`` in a fresh interpreter; its peak memory."""
    done = subprocess.run([sys.executable, "-c", TASK, task, str(size), str(args.frames), str(args.steps),
                           str(args.volumes), args.preset, args.device], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{task} at {size}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="128,256", help="comma-separated edges, voxels")
    parser.add_argument("--frames", type=int, default=100, help="frames in the series")
    parser.add_argument("--steps", type=int, default=3, help="training steps before measuring")
    parser.add_argument("--volumes", type=int, default=5, help="volumes queried by the volumes task")
    parser.add_argument("--preset", default="fast", help="DIP-STER preset")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    print(f"preset {args.preset}, {args.frames} frames, device {args.device}; peak resident set per process")
    print("size   task      RSS MiB   GPU MiB")
    for size in (int(s) for s in args.sizes.split(",")):
        for task in ("train", "volumes", "sirt"):
            result = measure(task, size, args)
            gpu = f"{result['gpu_mib']:9.0f}" if result["gpu_mib"] is not None else "        -"
            print(f"{size:4d}   {task:8s} {result['rss_mib']:9.0f} {gpu}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
