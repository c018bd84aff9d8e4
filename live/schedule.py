"""The training schedule shared by the live process and offline reconstruction (so both give the same volumes).

Deterministic schedule: frames are added in index order; after each frame the trainer runs exactly
``steps_per_frame`` steps (in chunks of ``chunk_steps``, which does not change the result: the trainer
draws its samples step by step); after the last frame it runs ``final_steps`` more. The live process
(``tiltstream live --steps-per-frame N``) and :func:`reconstruct_session` call the same functions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from tiltstream.errors import UserError
from tiltstream.recon.run_dir import recorded_time_scale_s


def train_chunked(trainer, steps: int, chunk_steps: int,
                  between: Callable[[float], None] | None = None) -> float | None:
    """Run ``steps`` training steps of a :class:`tiltstream.recon.reconstructor.Reconstructor` in chunks;
    ``between(chunk_loss)`` after each chunk.

    Returns
    -------
    float or None
        Mean loss over all the steps; None when ``steps`` is 0.
    """
    losses: list[tuple[float, int]] = []
    done = 0
    while done < steps:
        n = min(chunk_steps, steps - done)
        loss = trainer.train(steps=n)
        losses.append((loss, n))
        done += n
        if between is not None:
            between(loss)
    if not losses:
        return None
    return float(sum(loss * n for loss, n in losses) / steps)


def add_and_train(trainer, index: int, frame: np.ndarray, angle_deg: float, time_s: float,
                  steps_per_frame: int, chunk_steps: int,
                  between: Callable[[float], None] | None = None) -> float | None:
    """One step of the deterministic schedule: add frame ``index`` (as float32), then train ``steps_per_frame``."""
    trainer.add_frame(index, np.asarray(frame, dtype=np.float32), angle_deg, time_s)
    return train_chunked(trainer, steps_per_frame, chunk_steps, between)


def reconstruct_session(session_dir: Path | str, config, *, steps_per_frame: int, final_steps: int = 0,
                        chunk_steps: int = 25, seed: int = 0, device: str = "cpu",
                        time_scale_s: float | None = None, expected_frames: int | None = None):
    """Offline reconstruction of a recorded session with the live process's deterministic schedule.

    Parameters
    ----------
    session_dir
        A recorded session (DESIGN.md 5).
    config
        :class:`tiltstream.recon.trainer.DipsterConfig`.
    steps_per_frame, final_steps, chunk_steps
        The schedule (as ``tiltstream live --steps-per-frame``, ``--final-steps``, ``--chunk-steps``).
    seed, device
        As for the trainer.
    time_scale_s, expected_frames
        As for ``tiltstream live``; by default the one rule of :func:`tiltstream.recon.run_dir.recorded_time_scale_s`
        (scheme count x first interval).

    Returns
    -------
    tiltstream.recon.trainer.Trainer
        The trained model.
    """
    from tiltstream.acquire.session import read_session
    from tiltstream.recon.device import resolve_device
    from tiltstream.recon.trainer import Trainer

    session = read_session(session_dir)
    if not session.records:
        raise UserError(f"session {str(session_dir)!r} has no frames")
    records = sorted(session.records, key=lambda r: r.index)
    if time_scale_s is None:
        time_scale_s = recorded_time_scale_s(session, expected_frames)
    trainer = Trainer(config, tuple(records[0].shape), time_scale_s, device=resolve_device(device), seed=seed)
    for record in records:
        add_and_train(trainer, record.index, session.load_frame(record), record.angle_deg, record.time_s,
                      steps_per_frame, chunk_steps)
    train_chunked(trainer, final_steps, chunk_steps)
    return trainer
