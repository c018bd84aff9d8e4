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

from acquire.errors import UserError


def derive_time_scale_s(expected_frames: int | None, time0_s: float, time1_s: float | None) -> float:
    """The time scale, seconds: expected frames x the first frame interval (``time1_s - time0_s``).

    With one expected frame (or no second frame time) it is ``max(time0_s, 1)`` seconds.

    Raises
    ------
    UserError
        When the number of frames is unknown (give ``--time-scale-s`` or ``--expected-frames``).
    """
    if expected_frames is None:
        raise UserError("the time scale is unknown: give --time-scale-s SECONDS or --expected-frames N "
                        "(or a session whose session.json has a scheme count)")
    if time1_s is None or expected_frames < 2:
        return max(float(time0_s), 1.0)
    interval = float(time1_s) - float(time0_s)
    if not interval > 0:
        raise UserError(f"the first two frames are {interval} s apart; frame times must increase "
                        "(or give --time-scale-s)")
    return expected_frames * interval


def train_chunked(trainer, steps: int, chunk_steps: int,
                  between: Callable[[float], None] | None = None) -> float | None:
    """Run ``steps`` training steps of a :class:`recon.reconstructor.Reconstructor` in chunks;
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


def session_expected_frames(settings_scheme: dict, override: int | None = None) -> int | None:
    """Frames expected in a session: ``override``, else its scheme's ``count`` (None when endless)."""
    if override is not None:
        return int(override)
    count = settings_scheme.get("count")
    return None if count is None else int(count)


def reconstruct_session(session_dir: Path | str, config, *, steps_per_frame: int, final_steps: int = 0,
                        chunk_steps: int = 25, seed: int = 0, device: str = "cpu",
                        time_scale_s: float | None = None, expected_frames: int | None = None):
    """Offline reconstruction of a recorded session with the live process's deterministic schedule.

    Parameters
    ----------
    session_dir
        A recorded session (DESIGN.md 5).
    config
        :class:`recon.trainer.DipsterConfig`.
    steps_per_frame, final_steps, chunk_steps
        The schedule (as ``tiltstream live --steps-per-frame``, ``--final-steps``, ``--chunk-steps``).
    seed, device
        As for the trainer.
    time_scale_s, expected_frames
        As for ``tiltstream live``; by default derived the same way (scheme count x first interval).

    Returns
    -------
    recon.trainer.Trainer
        The trained model.
    """
    from acquire.session import read_session
    from recon.device import resolve_device
    from recon.trainer import Trainer

    session = read_session(session_dir)
    if not session.records:
        raise UserError(f"session {str(session_dir)!r} has no frames")
    records = sorted(session.records, key=lambda r: r.index)
    if time_scale_s is None:
        expected = session_expected_frames(session.settings.scheme, expected_frames)
        time1 = records[1].time_s if len(records) > 1 else None
        time_scale_s = derive_time_scale_s(expected, records[0].time_s, time1)
    trainer = Trainer(config, tuple(records[0].shape), time_scale_s, device=resolve_device(device), seed=seed)
    for record in records:
        add_and_train(trainer, record.index, session.load_frame(record), record.angle_deg, record.time_s,
                      steps_per_frame, chunk_steps)
    train_chunked(trainer, final_steps, chunk_steps)
    return trainer
