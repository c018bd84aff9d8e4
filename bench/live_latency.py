"""Benchmark: latency from a frame's publication to its reprojection on the status stream, and live vs offline quality.

Setup: a synthetic session (``tiltstream.simulator.tiltseries.write_synthetic_session``: nanorod, Poisson noise)
is replayed (``tiltstream.simulator.replay_stream.replay_session``, one frame every ``--interval-s`` wall
seconds) into a ``tiltstream live`` subprocess (continuous schedule capped at
``--max-steps-per-frame``, or ``--steps-per-frame``; headless, ``--threads``); this script subscribes
to the live status stream and records when each frame's ``reprojection`` message arrives. Latency of
frame i = arrival of its reprojection - return of ``publish`` for frame i.

The live process answers reprojection requests and publishes each new frame's reprojection from a thread
(:mod:`tiltstream.live.reprojection_service`), so the latency does not wait for a training chunk.

Training rate with and without that thread (same process, interleaved): a trainer with the session's
frames trains chunks of ``--chunk-steps`` steps, alternately alone and while a thread reprojects from a
:class:`tiltstream.live.query_replica.QueryReplica` (refreshed after every chunk) at ``--query-hz``
(default: two per frame interval, the new frame's reprojection and acquire's request); the median
steps/s of each and their ratio.

Quality: SSIM/RMSE (tiltstream.recon.metrics, Otsu masks) against the ground truth at the last frame's time and
averaged over all frame times, for the live result and for an offline reconstruction of the same
session with the same preset, seed and total number of steps (all frames added first, then trained).

Writes the numbers to ``docs/benchmarks/live.md`` under ``## Live latency`` (only that section is replaced)
and prints them. Usage::

    python bench/live_latency.py [--size 32] [--frames 40] [--interval-s 2] [--final-steps 500]
        [--max-steps-per-frame N | --steps-per-frame N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tiltstream.acquire.session import read_ground_truth  # noqa: E402
from bench.doc_sections import replace_section  # noqa: E402
from tiltstream.live.query_replica import QueryReplica  # noqa: E402
from tiltstream.live.run_state import ENDPOINTS_FILE, VOLUMES_FILE  # noqa: E402
from tiltstream.live.settings import LiveSettings  # noqa: E402
from tiltstream.live.status import Reprojection, decode_status_message  # noqa: E402
from tiltstream.recon.frame_feed import add_recorded_frame  # noqa: E402
from tiltstream.recon.metrics import rmse_percent, ssim  # noqa: E402
from tiltstream.recon.presets import preset  # noqa: E402
from tiltstream.recon.session_frames import load_session_frames  # noqa: E402
from tiltstream.recon.trainer import Trainer  # noqa: E402
from tiltstream.recon.volume_io import read_volumes  # noqa: E402
from tiltstream.simulator.replay_stream import replay_session  # noqa: E402
from tiltstream.simulator.tiltseries import write_synthetic_session  # noqa: E402

SECTION = "## Live latency"
START, END = "<!-- live_latency:start -->", "<!-- live_latency:end -->"


def measure(args: argparse.Namespace, work: Path) -> dict:
    seconds_per_step = 21.0
    session_dir = write_synthetic_session(work / "session", "nanorod", args.size, args.frames, noise="poisson",
                                          seed=args.seed, seconds_per_step=seconds_per_step)
    run = work / "run"
    published: dict[int, float] = {}
    arrived: dict[int, float] = {}
    endpoints: dict[str, str] = {}
    bound = threading.Event()

    def on_start(pub: str, resend: str | None) -> None:
        endpoints.update(pub=pub, resend=resend or "")
        bound.set()

    # the live process gets frames only from the stream and the replay's resend endpoint (which holds
    # only frames already published), never from the recorded session directory
    replay = threading.Thread(target=replay_session, args=(session_dir, "tcp://127.0.0.1:*"), kwargs=dict(
        resend="tcp://127.0.0.1:*", speed=seconds_per_step / args.interval_s, wait=True, wait_timeout_s=120,
        on_start=on_start, on_publish=lambda index, t: published.__setitem__(index, t)))
    replay.start()
    if not bound.wait(60):
        raise RuntimeError("replay did not bind")
    live = subprocess.Popen(
        [sys.executable, "-m", "tiltstream", "live", "--connect", endpoints["pub"], "--resend", endpoints["resend"],
         "--expected-frames", str(args.frames), "--out", str(run), "--status", "tcp://127.0.0.1:*",
         "--volume-endpoint", "tcp://127.0.0.1:*", "--headless", "--device", args.device, "--seed", str(args.seed),
         "--final-steps", str(args.final_steps), "--chunk-steps", str(args.chunk_steps),
         "--threads", str(args.threads), "--max-steps-per-frame", str(args.max_steps_per_frame)]
        + (["--steps-per-frame", str(args.steps_per_frame)] if args.steps_per_frame is not None else []),
        stdout=subprocess.DEVNULL, stderr=open(work / "live.log", "w"), env=dict(os.environ))
    try:
        while not (run / ENDPOINTS_FILE).is_file():
            if live.poll() is not None:
                raise RuntimeError(f"live exited: {(work / 'live.log').read_text()[-2000:]}")
            time.sleep(0.05)
        context = zmq.Context()
        sub = context.socket(zmq.SUB)
        sub.linger = 0
        sub.subscribe(b"reprojection")
        sub.connect(json.loads((run / ENDPOINTS_FILE).read_text())["status"])
        while live.poll() is None:
            if sub.poll(100):
                parts = sub.recv_multipart()
                now = time.monotonic()
                message = decode_status_message(parts)
                if isinstance(message, Reprojection):
                    arrived.setdefault(message.header.frame_index, now)
        replay.join(60)
        sub.close(0)
        context.term()
    finally:
        if live.poll() is None:
            live.kill()
        live.wait(10)
    if live.returncode != 0:
        raise RuntimeError(f"live failed: {(work / 'live.log').read_text()[-2000:]}")
    latencies = np.array([arrived[i] - published[i] for i in sorted(published) if i in arrived])

    truth, _ = read_ground_truth(session_dir)
    session, frames = load_session_frames(session_dir)
    times = session.times_s
    live_volumes, live_times = read_volumes(run / VOLUMES_FILE)
    live_trainer = Trainer.load(run)
    torch.set_num_threads(args.threads)  # as the live process
    started = time.monotonic()
    offline = Trainer(preset("fast"), tuple(session.records[0].shape), live_trainer.time_scale_s,
                      device=live_trainer.device, seed=args.seed)
    for record, frame in zip(session.records, frames):
        add_recorded_frame(offline, record, frame)
    offline.train_steps(live_trainer.steps_done)
    offline_s = time.monotonic() - started
    rate = training_rate(offline, args)

    def quality(volume_at) -> dict:
        ssims = [ssim(volume_at(t), g) for t, g in zip(times, truth)]
        return {"ssim_last": ssims[-1], "ssim_mean": float(np.mean(ssims)),
                "rmse_last_percent": rmse_percent(volume_at(times[-1]), truth[-1])}

    live_by_time = dict(zip(np.round(live_times, 6), live_volumes))
    return {
        "size": args.size, "frames": args.frames, "interval_s": args.interval_s, "threads": args.threads,
        "steps_per_frame": args.steps_per_frame, "max_steps_per_frame": args.max_steps_per_frame,
        "final_steps": args.final_steps,
        "reprojections": int(len(latencies)),
        "latency_median_s": float(np.median(latencies)), "latency_p90_s": float(np.percentile(latencies, 90)),
        "latency_max_s": float(latencies.max()),
        "steps": live_trainer.steps_done,
        "live": quality(lambda t: live_by_time[round(float(t), 6)]),
        "offline": quality(offline.volume), "offline_train_s": offline_s, **rate,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, device {args.device}",
    }


def training_rate(trainer: Trainer, args: argparse.Namespace) -> dict:
    """Median steps/s of chunks trained alone and beside a reprojecting thread, interleaved (module docstring)."""
    replica = QueryReplica()
    replica.refresh(trainer)
    angles = trainer.angles_deg
    querying = threading.Event()
    done = threading.Event()
    queries = [0]

    def query() -> None:
        while not done.is_set():
            if not querying.wait(0.05):
                continue
            replica.reproject(None, angles[queries[0] % len(angles)])
            queries[0] += 1
            done.wait(1.0 / args.query_hz)

    thread = threading.Thread(target=query, daemon=True)
    thread.start()
    rates: dict[bool, list[float]] = {False: [], True: []}
    for round_ in range(2 * args.rate_rounds):
        with_service = round_ % 2 == 1
        (querying.set if with_service else querying.clear)()
        started = time.perf_counter()
        trainer.train_steps(args.chunk_steps)
        rates[with_service].append(args.chunk_steps / (time.perf_counter() - started))
        replica.refresh(trainer)
    done.set()
    thread.join(5)
    alone, beside = float(np.median(rates[False])), float(np.median(rates[True]))
    return {"steps_per_s_alone": alone, "steps_per_s_with_service": beside, "rate_ratio": beside / alone,
            "query_hz": args.query_hz, "queries": queries[0]}


def write_section(result: dict, path: Path) -> None:
    """Replace (or append) the ``## Live latency`` section of docs/benchmarks/live.md (between its markers)."""
    lv, off = result["live"], result["offline"]
    per_frame = result["steps_per_frame"]
    cap = result["max_steps_per_frame"]
    if per_frame is not None:
        schedule_flag = f" --steps-per-frame {per_frame}"
        schedule = f"deterministic schedule, {per_frame} steps per frame"
    else:
        schedule_flag = f" --max-steps-per-frame {cap}"
        schedule = f"continuous schedule, at most {cap} steps per frame" if cap else "continuous schedule, no cap"
    body = "\n".join([
        SECTION, "",
        f"`python bench/live_latency.py --size {result['size']} --frames {result['frames']} --interval-s "
        f"{result['interval_s']} --final-steps {result['final_steps']}{schedule_flag} --threads {result['threads']}` "
        f"({result['machine']}, live process with --threads {result['threads']}, shared machine: timings are noisy).",
        "",
        f"A {result['size']}^3 nanorod session ({result['frames']} GRS frames, Poisson noise) replayed at one "
        f"frame per {result['interval_s']} s into `tiltstream live` ({schedule}, preset fast).",
        "",
        "| quantity | value |", "|---|---|",
        f"| publication -> reprojection on the status stream, median | {result['latency_median_s']:.2f} s |",
        f"| publication -> reprojection, p90 | {result['latency_p90_s']:.2f} s |",
        f"| publication -> reprojection, max | {result['latency_max_s']:.2f} s |",
        f"| reprojections received | {result['reprojections']} / {result['frames']} |",
        f"| training rate alone / beside the reprojection service ({result['query_hz']:.2g} reprojections/s) | "
        f"{result['steps_per_s_alone']:.1f} / {result['steps_per_s_with_service']:.1f} steps/s "
        f"({100 * (1 - result['rate_ratio']):+.1f} % loss) |",
        f"| training steps (live, incl. final) | {result['steps']} |",
        f"| SSIM vs ground truth at the last frame: live / offline | {lv['ssim_last']:.3f} / {off['ssim_last']:.3f} |",
        f"| SSIM vs ground truth, mean over frames: live / offline | {lv['ssim_mean']:.3f} / {off['ssim_mean']:.3f} |",
        f"| RMSE at the last frame: live / offline | {lv['rmse_last_percent']:.1f} % / {off['rmse_last_percent']:.1f} % |",
        "",
        "Offline: the same session, preset, seed and number of steps, all frames added before training.",
        "",
    ])
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_section(path, START, END, f"{START}\n{body}{END}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32, help="phantom edge, voxels")
    parser.add_argument("--frames", type=int, default=40, help="frames in the session")
    parser.add_argument("--interval-s", type=float, default=2.0, help="wall seconds between frames")
    parser.add_argument("--final-steps", type=int, default=500, help="steps after the last frame")
    parser.add_argument("--chunk-steps", type=int, default=25, help="steps between stream polls")
    parser.add_argument("--steps-per-frame", type=int, default=None,
                        help="live's deterministic schedule: steps after each frame (default: continuous)")
    parser.add_argument("--max-steps-per-frame", type=int,
                        default=LiveSettings.model_fields["max_steps_per_frame"].default,
                        help="live's continuous schedule: steps per frame in the model at most (0: no cap; "
                        "default: tiltstream live's, %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the live process")
    parser.add_argument("--device", default="cpu", help="auto, cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--query-hz", type=float, default=None,
                        help="reprojections per second beside training in the rate comparison "
                        "(default: 2 per --interval-s)")
    parser.add_argument("--rate-rounds", type=int, default=10, help="chunks trained alone (and as many beside)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "live.md")
    args = parser.parse_args()
    if args.query_hz is None:
        args.query_hz = 2.0 / args.interval_s
    with tempfile.TemporaryDirectory() as work:
        result = measure(args, Path(work))
    print(json.dumps(result, indent=2))
    write_section(result, args.out)


if __name__ == "__main__":
    main()
