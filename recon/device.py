"""Where computations run: ``--device auto|cpu|cuda`` turned into a torch device, one rule everywhere."""

from __future__ import annotations

import torch

from tiltstream.errors import UserError


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` -> a torch device.

    Raises
    ------
    UserError
        An unknown name, or CUDA asked for where torch sees no CUDA device.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = str(device)
    if not (name == "cpu" or name.startswith("cuda")):
        raise UserError(f"device {name!r} is not known; allowed: auto, cpu, cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for, but torch sees no CUDA device here; use --device cpu")
    return torch.device(name)
