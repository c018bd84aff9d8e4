"""DIP-STER's checkpoint file: one ``torch.save`` of a trainer's state dict, written atomically.

The state (:meth:`tiltstream.recon.trainer.Trainer.state_dict`) holds the version, the config, frame
shape, time scale, seed, the frames and their records, model, averaged weights, optimiser, scheduler,
sampler, steps and loss history, and (with ``config.frame_gain``) the per-frame gains, tensors on the
CPU; a checkpoint without gains (written before they were kept) loads with every gain 1. A run directory keeps it as
:data:`CHECKPOINT_FILE`; a path ending in ``.pt`` names a checkpoint file on its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tiltstream.atomic_files import write_atomic
from tiltstream.errors import UserError

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_VERSION = 1


def is_checkpoint_file(path: str | Path) -> bool:
    """True when ``path`` names a checkpoint file on its own (it ends in ``.pt``), not a run directory."""
    return Path(path).suffix == ".pt"


def write_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (whose ``version`` is :data:`CHECKPOINT_VERSION`) to ``path`` atomically."""
    write_atomic(path, lambda tmp: torch.save(state, tmp))


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The state in checkpoint file ``path``, tensors on the CPU.

    Raises
    ------
    UserError
        A missing, unreadable or foreign file.
    """
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise UserError(f"checkpoint {str(path)!r} is not readable: {type(exc).__name__}: {exc}") from None
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise UserError(f"checkpoint {str(path)!r} is not a tiltstream DIP-STER checkpoint "
                        f"(version {CHECKPOINT_VERSION})")
    return state
