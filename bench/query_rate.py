"""Benchmark: what the live process's queries cost the training, with the query replica in fp32 and in bf16.

One process, one trainer (``fast`` preset) on a synthetic nanorod session; chunks of ``--chunk-steps``
steps trained alone and beside a thread that reprojects from a
:class:`tiltstream.live.query_replica.QueryReplica` once a second (as ``tiltstream live`` publishes a new
frame's reprojection and answers acquire's request: two per 2-s frame interval), alternating the replica's
precision (fp32, bf16) round by round so that both see the same machine. Prints the median steps/s alone
and beside, the loss in percent and the median query time, per precision. bf16 is what
:func:`tiltstream.recon.precision.query_precision` picks on a CPU with native bfloat16.

Usage::

    python bench/query_rate.py [--size 64] [--frames 40] [--rounds 12] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tiltstream.live.query_replica import QueryReplica  # noqa: E402
from tiltstream.recon.frame_feed import add_recorded_frame  # noqa: E402
from tiltstream.recon.precision import autocast_for, native_bf16_cpu  # noqa: E402
from tiltstream.recon.presets import preset  # noqa: E402
from tiltstream.recon.session_frames import load_session_frames  # noqa: E402
from tiltstream.recon.trainer import Trainer  # noqa: E402
from tiltstream.simulator.tiltseries import write_synthetic_session  # noqa: E402

PRECISIONS = ("fp32", "bf16")


def measure(args: argparse.Namespace, work: Path) -> dict:
    session_dir = write_synthetic_session(work / "session", "nanorod", args.size, args.frames, noise="poisson",
                                          seed=0, seconds_per_step=21.0)
    session, frames = load_session_frames(session_dir)
    trainer = Trainer(preset("fast"), tuple(session.records[0].shape), 21.0 * args.frames, device="cpu", seed=0)
    for record, frame in zip(session.records, frames):
        add_recorded_frame(trainer, record, frame)
    trainer.train_steps(50)
    replica = QueryReplica()
    replica.refresh(trainer)
    state = {"querying": False, "stop": False, "precision": "fp32"}
    query_s: dict[str, list[float]] = {p: [] for p in PRECISIONS}

    def query() -> None:
        count = 0
        while not state["stop"]:
            if not state["querying"]:
                time.sleep(0.01)
                continue
            started = time.perf_counter()
            replica.reproject(None, float(count % 150 - 75))
            spent = time.perf_counter() - started
            query_s[state["precision"]].append(spent)
            count += 1
            time.sleep(max(0.0, 1.0 - spent))

    thread = threading.Thread(target=query, daemon=True)
    thread.start()
    rates: dict[tuple[str, bool], list[float]] = {(p, b): [] for p in PRECISIONS for b in (False, True)}
    for _ in range(args.rounds):
        for precision in PRECISIONS:
            state["precision"] = precision
            replica._copy._autocast = autocast_for(precision, trainer.device)  # the replica's, as live sets it
            for beside in (False, True):
                state["querying"] = beside
                started = time.perf_counter()
                trainer.train_steps(args.chunk_steps)
                rates[(precision, beside)].append(args.chunk_steps / (time.perf_counter() - started))
                state["querying"] = False
                time.sleep(0.2)  # a query still running ends before the next chunk alone
                replica.refresh(trainer)
    state["stop"] = True
    thread.join(5)
    out = {"size": args.size, "threads": args.threads, "native_bf16": native_bf16_cpu(), "rounds": args.rounds}
    for precision in PRECISIONS:
        alone, beside = np.median(rates[(precision, False)]), np.median(rates[(precision, True)])
        out[precision] = {"steps_per_s_alone": round(float(alone), 2), "steps_per_s_beside": round(float(beside), 2),
                          "loss_percent": round(100.0 * (1.0 - beside / alone), 1),
                          "query_ms": round(1e3 * float(np.median(query_s[precision])), 1),
                          "queries": len(query_s[precision])}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="phantom edge = frame size, voxels")
    parser.add_argument("--frames", type=int, default=40, help="frames in the session")
    parser.add_argument("--rounds", type=int, default=12, help="rounds; each trains 4 chunks")
    parser.add_argument("--chunk-steps", type=int, default=40, help="steps per chunk")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (training and queries)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(measure(args, Path(tmp)), indent=2))


if __name__ == "__main__":
    main()
