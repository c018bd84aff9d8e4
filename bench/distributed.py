"""Benchmark: data-parallel DIP-STER training (gloo ranks on this machine): speed, time to quality, memory per rank.

Three measurements, each in fresh processes (real gloo ranks on 127.0.0.1, one torch thread per rank):

1. Time to quality: a seeded synthetic session (``--phantom``, ``--size``^3 x ``--count`` frames, Poisson
   noise at 40 e/A^2) trained with the ``--preset`` by 1 rank, by 2 ranks with the learning rate kept,
   and by 2 ranks with it scaled by sqrt(2); every ``--eval-every`` steps rank 0 pauses the clock and
   compares all volumes with the ground truth (mean SSIM, ``tiltstream.recon.metrics``). Reports steps/s and the
   training seconds to a mean SSIM of ``--threshold``.
2. Memory per rank: peak RSS of rank 0 (``ru_maxrss``) after ``--memory-steps`` steps on 100 frames at
   each of ``--memory-sizes``, for 1 and 2 ranks, beside the parameter/gradient/Adam estimate.
3. Single-process speed before/after: ``Trainer.train_steps`` steps/s of ``recon/trainer.py`` as of
   ``--old-commit`` (loaded from git, same model and projector) against the current one, interleaved.

Writes the ``## Distributed training`` section of ``docs/benchmarks/distributed.md`` between its markers.

Example::

    python bench/distributed.py --size 32 --count 60 --budget-s 120
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import resource
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.doc_sections import replace_section  # noqa: E402

START, END = "<!-- distributed:start -->", "<!-- distributed:end -->"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _join_group(rank: int, ranks: int, port: int):
    """This process as rank ``rank`` of ``ranks`` (gloo); the :class:`tiltstream.recon.distributed.World`."""
    import torch
    import torch.distributed as dist

    from tiltstream.recon.distributed import World

    torch.set_num_threads(1)
    if ranks > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=ranks,
                                timeout=dt.timedelta(seconds=300))
    return World(rank=rank, size=ranks, local_rank=rank, local_size=ranks)


def _session_trainer(session_dir: str, preset_name: str, lr_scale: float, seed: int):
    """A trainer holding every frame of the session, time scale by the live rule."""
    from tiltstream.recon.frame_feed import add_recorded_frame
    from tiltstream.recon.presets import preset
    from tiltstream.recon.run_dir import recorded_time_scale_s
    from tiltstream.recon.session_frames import load_session_frames
    from tiltstream.recon.trainer import Trainer

    session, frames = load_session_frames(session_dir)
    config = preset(preset_name)
    config = config.model_copy(update={"lr": config.lr * lr_scale})
    trainer = Trainer(config, frames.shape[1:], recorded_time_scale_s(session), seed=seed)
    for record, frame in sorted(zip(session.records, frames), key=lambda pair: pair[0].index):
        add_recorded_frame(trainer, record, frame)
    return trainer, session


def _quality_rank(rank: int, ranks: int, port: int, session_dir: str, preset_name: str, lr_scale: float,
                  budget_s: float, eval_every: int, threshold: float, out: str) -> None:
    """One rank of a time-to-quality run; rank 0 writes the SSIM curve to ``out`` (JSON)."""
    from tiltstream.acquire.session import read_ground_truth
    from tiltstream.recon import metrics

    world = _join_group(rank, ranks, port)
    trainer, session = _session_trainer(session_dir, preset_name, lr_scale, seed=0)
    if ranks > 1:
        trainer.data_parallel(rank, ranks)
    truth = read_ground_truth(session_dir)[0] if world.is_main else None
    times_s = sorted(r.time_s for r in session.records)
    curve, train_s = [], 0.0
    while True:
        start = time.perf_counter()
        trainer.train(steps=eval_every)
        train_s += time.perf_counter() - start
        stop = 0
        if world.is_main:
            ssim = float(np.mean([metrics.ssim(trainer.volume(t), truth[i]) for i, t in enumerate(times_s)]))
            curve.append({"steps": trainer.steps_done, "train_s": train_s, "ssim_mean": ssim})
            print(f"  {ranks} rank(s), lr x{lr_scale:.3f}: {trainer.steps_done} steps, {train_s:.0f} s, "
                  f"SSIM {ssim:.4f}", file=sys.stderr, flush=True)
            stop = int(ssim >= threshold or train_s >= budget_s)
        if world.rank0_decides(stop):
            break
    if world.is_main:
        Path(out).write_text(json.dumps({"curve": curve, "steps": trainer.steps_done, "train_s": train_s}))


def _memory_rank(rank: int, ranks: int, port: int, size: int, steps: int, preset_name: str, out: str) -> None:
    """One rank training ``steps`` steps on 100 frames of ``size``^2; rank 0 writes its peak RSS (JSON)."""
    from tiltstream.recon.presets import preset
    from tiltstream.recon.projector import project_volume
    from tiltstream.recon.trainer import Trainer

    _join_group(rank, ranks, port)
    baseline_mb = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    zz, yy, xx = np.mgrid[:size, :size, :size] / size - 0.5
    ball = ((zz ** 2 + yy ** 2 + xx ** 2) < 0.1).astype(np.float32)
    frame = project_volume(ball, 0.0)
    trainer = Trainer(preset(preset_name), frame.shape, time_scale_s=100.0, seed=0)
    for i in range(100):
        trainer.add_frame(i, frame, -70.0 + 1.4 * i, float(i))
    if ranks > 1:
        trainer.data_parallel(rank, ranks)
    start = time.perf_counter()
    trainer.train(steps=steps)
    seconds_per_step = (time.perf_counter() - start) / steps
    if rank == 0:
        params = sum(p.numel() for p in trainer.model.parameters())
        Path(out).write_text(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                                         "baseline_rss_mb": baseline_mb, "params": params,
                                         "seconds_per_step": seconds_per_step}))


def _spawn(target, ranks: int, args: tuple) -> None:
    """Run ``target(rank, ranks, port, *args)`` in ``ranks`` fresh processes and wait."""
    import torch.multiprocessing as mp

    mp.start_processes(target, args=(ranks, _free_port(), *args), nprocs=ranks, start_method="spawn")


def _old_trainer_class(commit: str):
    """``tiltstream.recon.trainer.Trainer`` as of ``commit`` (its source from git, today's model and projector)."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:recon/trainer.py"], check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType("old_trainer")
    exec(compile(source, f"{commit}:recon/trainer.py", "exec"), module.__dict__)
    return module.Trainer


def single_process_speed(session_dir: str, preset_name: str, commit: str, steps: int, repeats: int) -> dict:
    """steps/s of ``train_steps`` for the old and the new trainer, interleaved, 1 thread; median of repeats."""
    import torch

    torch.set_num_threads(1)
    new, _ = _session_trainer(session_dir, preset_name, 1.0, seed=0)
    old = _old_trainer_class(commit)(new.config, new.frame_shape, new.time_scale_s, seed=0)
    for index, angle, time_s, slot in zip(new.indices, new.angles_deg, new.times_s, range(new.n_frames)):
        old.add_frame(index, new.store.frame(slot), angle, time_s)
    rates: dict[str, list[float]] = {"old": [], "new": []}
    for trainer in (old, new):
        trainer.train_steps(10)  # warm-up
    for _ in range(repeats):
        for name, trainer in (("old", old), ("new", new)):
            start = time.perf_counter()
            trainer.train_steps(steps)
            rates[name].append(steps / (time.perf_counter() - start))
    return {name: float(np.median(values)) for name, values in rates.items()} | {"all": rates}


def _first_time(curve: list[dict], threshold: float) -> float | None:
    return next((p["train_s"] for p in curve if p["ssim_mean"] >= threshold), None)


def _load_probe() -> str:
    """What else ran: the 1-minute load average and this machine's cores."""
    load1, _, _ = os.getloadavg()
    return f"load average {load1:.1f} on {os.cpu_count()} cores"


def render(results: dict, args: argparse.Namespace, command: str) -> str:
    """The markdown section."""
    lines = [START, "## Distributed training (`bench/distributed.py`)", "",
             f"Command: `{command}`; {dt.date.today().isoformat()}, CPU, gloo ranks on 127.0.0.1, one torch "
             f"thread per rank; {results['load_before']} before the run and {results['load_after']} after: "
             "other engineers' tests and benchmarks shared the 2 cores, so every number here is noisy.", "",
             f"### Time to quality: {args.phantom} {args.size}^3 x {args.count} frames, preset {args.preset}", "",
             "| ranks | lr | effective batch (frames/step) | steps | steps/s | samples/s | "
             f"time to SSIM {args.threshold} (s) | final SSIM |",
             "|---|---|---|---|---|---|---|---|"]
    from tiltstream.recon.presets import preset

    batch = preset(args.preset).batch_frames
    for run in results["quality"]:
        t = _first_time(run["curve"], args.threshold)
        rate = run["steps"] / run["train_s"]
        lines.append(f"| {run['ranks']} | x{run['lr_scale']:.3f} | {run['ranks'] * batch} | {run['steps']} | "
                     f"{rate:.1f} | {rate * run['ranks'] * batch:.0f} | "
                     f"{'not within ' + str(args.budget_s) + ' s' if t is None else f'{t:.0f}'} | "
                     f"{run['curve'][-1]['ssim_mean']:.4f} |")
    lines += ["", "### Memory per rank (fast preset, 100 frames, peak RSS of rank 0 after "
              f"{args.memory_steps} steps)", "",
              "| volume | ranks | peak RSS (MB) | of which torch + process before the trainer (MB) | parameters | "
              "params + grads + Adam (MB) | s/step |",
              "|---|---|---|---|---|---|---|"]
    for row in results["memory"]:
        state_mb = row["params"] * 4 * 4 / 2 ** 20
        lines.append(f"| {row['size']}^3 | {row['ranks']} | {row['peak_rss_mb']:.0f} | "
                     f"{row['baseline_rss_mb']:.0f} | {row['params']:,} | "
                     f"{state_mb:.1f} | {row['seconds_per_step']:.2f} |")
    speed = results["speed"]
    lines += ["", f"### Single process before/after (`Trainer.train_steps`, {args.size}^3, preset {args.preset}, "
              f"1 thread, {args.speed_steps} steps x {args.speed_repeats} interleaved repeats, median)", "",
              "| trainer | steps/s | all repeats |", "|---|---|---|",
              f"| {args.old_commit[:7]} (before issue 10/11 changes) | {speed['old']:.1f} | "
              f"{', '.join(f'{v:.1f}' for v in speed['all']['old'])} |",
              f"| current | {speed['new']:.1f} | {', '.join(f'{v:.1f}' for v in speed['all']['new'])} |",
              "", END]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phantom", default="nanorod")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--budget-s", type=float, default=120.0, help="training seconds per run at most")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--memory-sizes", default="64,128,256")
    parser.add_argument("--memory-steps", type=int, default=2)
    parser.add_argument("--speed-steps", type=int, default=200)
    parser.add_argument("--speed-repeats", type=int, default=3)
    parser.add_argument("--old-commit", default="ceb485a", help="trainer before the issue 10/11 changes")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "work")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks" / "distributed.md")
    parser.add_argument("--no-doc", action="store_true", help="print the section instead of writing it")
    args = parser.parse_args()
    command = "python bench/distributed.py " + " ".join(sys.argv[1:])

    from tiltstream.simulator.tiltseries import write_synthetic_session

    args.work.mkdir(parents=True, exist_ok=True)
    session = args.work / f"{args.phantom}_{args.size}_{args.count}_s0"
    if not (session / "ground_truth.tif").is_file():
        write_synthetic_session(session, args.phantom, args.size, args.count, seed=0)
    results: dict = {"load_before": _load_probe(), "quality": [], "memory": []}

    print("single-process speed, old vs new trainer", file=sys.stderr)
    results["speed"] = single_process_speed(str(session), args.preset, args.old_commit, args.speed_steps,
                                            args.speed_repeats)
    print(f"  {results['speed']}", file=sys.stderr)
    for ranks, lr_scale in ((1, 1.0), (2, 1.0), (2, math.sqrt(2.0))):
        out = args.work / f"quality_{ranks}_{lr_scale:.3f}.json"
        _spawn(_quality_rank, ranks, (str(session), args.preset, lr_scale, args.budget_s, args.eval_every,
                                      args.threshold, str(out)))
        results["quality"].append({"ranks": ranks, "lr_scale": lr_scale, **json.loads(out.read_text())})
    for size in (int(s) for s in args.memory_sizes.split(",")):
        for ranks in (1, 2):
            out = args.work / f"memory_{size}_{ranks}.json"
            print(f"memory: {size}^3, {ranks} rank(s)", file=sys.stderr, flush=True)
            _spawn(_memory_rank, ranks, (size, args.memory_steps, "fast", str(out)))
            results["memory"].append({"size": size, "ranks": ranks, **json.loads(out.read_text())})
    results["load_after"] = _load_probe()
    (args.work / "distributed_results.json").write_text(json.dumps(results, indent=1))
    section = render(results, args, command)
    if args.no_doc:
        print(section)
    else:
        replace_section(args.doc, START, END, section)
        print(f"wrote the distributed section of {args.doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
