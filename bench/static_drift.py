"""Does DIP-STER keep a static specimen still under intensity drift?  docs/benchmarks/static.md.

A static simulated session (the phantom's initial specimen at every time, Poisson noise, a per-frame
intensity scale going linearly 0.971 -> 1.037 as on a real HAADF series) is reconstructed with the
``fast`` preset as it is, with the per-frame gain (``frame_gain``), with a prior on change over time
(``time_prior_weight``) and with both; per variant: the volumes' deviation from their time mean
(percent of the mean volume's norm; mid-series and the first/last tenth), the swing of the total mass
(max - min over mean, percent) and SSIM of the time-mean volume against the truth. With ``--dynamic``
the same variants are scored by mean SSIM against the ground truth of the dynamic phantom instead.

    python bench/static_drift.py --phantom nanorod --size 24 --count 40 --steps 600
    python bench/static_drift.py --dynamic --phantom nanorod --size 32 --count 60 --steps 2000
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from tiltstream.acquire.session import read_ground_truth, read_session
from tiltstream.recon import metrics
from tiltstream.recon.presets import preset
from tiltstream.recon.trainer import Trainer
from tiltstream.simulator.tiltseries import write_synthetic_session

VARIANTS = {"none": {}, "gain": {"frame_gain": True}, "prior0.1": {"time_prior_weight": 0.1},
            "prior1": {"time_prior_weight": 1.0},
            "prior10": {"time_prior_weight": 10.0}, "gain+prior10": {"frame_gain": True, "time_prior_weight": 10.0}}


def stillness(volumes: np.ndarray) -> dict[str, float]:
    """Deviation of each volume (T, Z, Y, X) from the time mean, percent of the mean's norm: the middle
    volume's, the largest in the first and last tenth of the series, and the swing of the total mass."""
    mean = volumes.mean(axis=0)
    deviation = 100.0 * np.linalg.norm((volumes - mean).reshape(len(volumes), -1), axis=1) / np.linalg.norm(mean)
    tenth = max(1, len(volumes) // 10)
    mass = volumes.reshape(len(volumes), -1).sum(axis=1)
    return {"mid_percent": float(deviation[len(volumes) // 2]),
            "ends_percent": float(max(deviation[:tenth].max(), deviation[-tenth:].max())),
            "mass_swing_percent": float(100.0 * np.ptp(mass) / mass.mean())}


def reconstruct(session: Path, overrides: dict, steps: int, seed: int) -> np.ndarray:
    """Volumes (T, Z, Y, X) at every frame time of the ``fast`` preset with ``overrides``, ``steps`` steps."""
    rec = read_session(session)
    frames = rec.load_frames()
    config = preset("fast").model_copy(update=overrides)
    trainer = Trainer(config, frames.shape[1:], float(max(rec.times_s.max(), 1.0)), seed=seed)
    for i, frame in enumerate(frames):
        trainer.add_frame(i, frame, float(rec.angles_deg[i]), float(rec.times_s[i]))
    trainer.train_steps(steps)
    return np.stack([trainer.volume(float(t)) for t in rec.times_s])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phantom", default="nanorod")
    parser.add_argument("--size", type=int, default=24)
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dynamic", action="store_true", help="dynamic phantom, no drift: SSIM per variant")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        drift = (1.0, 1.0) if args.dynamic else (0.971, 1.037)
        session = write_synthetic_session(Path(tmp) / "s", args.phantom, args.size, args.count, seed=args.seed,
                                          static=not args.dynamic, gain_drift=drift)
        truth, _ = read_ground_truth(session)
        for name in args.variants.split(","):
            volumes = reconstruct(session, VARIANTS[name], args.steps, args.seed)
            if args.dynamic:
                ssim = np.array([metrics.ssim(v, t) for v, t in zip(volumes, truth)])
                print(f"{name:11s} SSIM mean {ssim.mean():.4f} min {ssim.min():.4f}", flush=True)
            else:
                still = stillness(volumes)
                ssim = metrics.ssim(volumes.mean(axis=0), truth[0])
                print(f"{name:11s} deviation mid {still['mid_percent']:.2f} % ends {still['ends_percent']:.2f} % "
                      f"mass swing {still['mass_swing_percent']:.2f} %; SSIM of the mean {ssim:.4f}", flush=True)


if __name__ == "__main__":
    main()
