"""Where computations run: ``--device auto|cpu|cuda`` turned into a torch device, one rule everywhere."""

from __future__ import annotations

import os

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


def local_ranks_allowed(device: torch.device) -> tuple[int, str]:
    """How many data-parallel ranks this machine runs one each: its GPUs on CUDA, else its CPUs.

    Returns
    -------
    count : int
        GPUs torch sees (CUDA), or the CPUs this process may run on.
    what : str
        ``"GPUs"`` or ``"CPUs"``, for a message.
    """
    if device.type == "cuda":
        return torch.cuda.device_count(), "GPUs"
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1), "CPUs"
