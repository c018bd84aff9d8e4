"""Benchmark: which state a held-out rule keeps, and that state's alloying error (issue 34 item 1).

A seeded synthetic session (``write_synthetic_session``: nanorod or nanocube, ``--size``^3 x ``--count``,
Poisson noise) is trained as ``recon train`` trains by default (fast preset, 10 % of the frames held out
by ``heldout_positions``, bf16 unless ``--precision fp32``) for ``--steps``; at every check (``--every``
steps, as ``--eval-every``) it records the held-out reprojection error, the alloying error after step 4
(Eq. 10 against the ground truth, points; ``bench.recon_quality.property_summary``) and the mean SSIM of
every 5th volume. Then, with ``recon train``'s ``PlateauStopper(16)`` on the same errors, it prints the
state each rule keeps up to the stop: the least held-out error (``keep_if_best``) and the latest within
0.5 % of the least before it (a candidate rule), with their alloying error and SSIM. One JSON line per
check on stdout, the summary on stderr. Usage::

    OMP_NUM_THREADS=1 python bench/stopping_alloying.py --phantom nanorod --seed 1 --steps 10000 --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.recon_quality import property_rows, property_summary, session_for  # noqa: E402
from tiltstream.acquire.session import read_ground_truth  # noqa: E402
from tiltstream.recon import metrics  # noqa: E402
from tiltstream.recon.frame_feed import add_recorded_frame  # noqa: E402
from tiltstream.recon.presets import preset  # noqa: E402
from tiltstream.recon.run_dir import PlateauStopper, heldout_positions, recorded_time_scale_s  # noqa: E402
from tiltstream.recon.session_frames import load_session_frames  # noqa: E402

TOLERANCE = 0.005  # the candidate rule's: the plateau stopper's least improvement


def checks(args: argparse.Namespace) -> list[dict]:
    """Train and record every check (module docstring)."""
    import torch

    from tiltstream.recon.trainer import Trainer

    torch.set_num_threads(args.threads)
    path = session_for(args.work, args.phantom, args.size, args.count, args.seed)
    session, frames = load_session_frames(path)
    truth, _ = read_ground_truth(path)
    trainer = Trainer(preset("fast"), frames.shape[1:], recorded_time_scale_s(session), seed=args.seed,
                      precision=args.precision)
    order = sorted(range(len(session.records)), key=lambda i: session.records[i].time_s)
    held = {order[p] for p in heldout_positions(len(order), 0.1)}
    for i, (record, frame) in enumerate(zip(session.records, frames)):
        add_recorded_frame(trainer, record, frame, held_out=i in held)
    rows = []
    while trainer.steps_done < args.steps:
        trainer.train_steps(args.every)
        volumes = np.stack([trainer.volume(t) for t in session.times_s])
        rows.append({"step": trainer.steps_done,
                     "heldout": trainer.heldout_metrics()["heldout_rmse_percent"],
                     "alloy": property_summary(args.phantom, property_rows(args.phantom, volumes, truth))[1],
                     "ssim": float(metrics.ssim_series(volumes[::5], truth[::5], 1).mean())})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def kept_states(rows: list[dict], patience: int = 16) -> dict[str, dict]:
    """The check where ``PlateauStopper(patience)`` stops (or the last) and the check each rule keeps by then."""
    errors = np.array([r["heldout"] for r in rows])
    stopper, stop = PlateauStopper(patience), len(rows) - 1
    for i, error in enumerate(errors):
        if stopper.update(float(error)):
            stop = i
            break
    until = errors[:stop + 1]
    latest = int(np.flatnonzero(until <= np.minimum.accumulate(until) * (1.0 + TOLERANCE))[-1])
    return {"stop": rows[stop], "least": rows[int(np.argmin(until))], "latest within 0.5 %": rows[latest]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phantom", default="nanorod", choices=["nanorod", "nanocube"])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--every", type=int, default=250, help="steps between checks (recon train's --eval-every)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tiltstream_bench"), help="session cache dir")
    args = parser.parse_args()
    for name, row in kept_states(checks(args)).items():
        print(f"{name}: step {row['step']}, held-out {row['heldout']:.3f} %, alloying error {row['alloy']:.2f} "
              f"points, SSIM {row['ssim']:.4f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
