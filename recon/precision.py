"""Arithmetic precision and compilation of DIP-STER's network: ``fp32``, ``tf32`` or ``bf16``, compiled or not.

The network's forward pass is the whole cost of a training step on a GPU (the projector and the loss
are a few small kernels), so these are the speed knobs that matter there:

- ``fp32``: plain float32 everywhere (the default; bit-for-bit reproducible on the CPU).
- ``tf32``: float32 tensors, but CUDA matrix products and convolutions use TensorFloat-32 (10-bit
  mantissa inputs, float32 accumulation). Set process-wide (``torch.backends``), CUDA only.
- ``bf16``: the network runs under ``torch.autocast`` in bfloat16; its output, the projection, the
  loss, the weights and the optimiser state stay float32.

``compile`` wraps the training forward pass in ``torch.compile`` (queries stay eager: their batch
sizes vary). Measured in ``bench/recon_quality.py --device cuda --precision ... --compile``
(docs/benchmarks.md "DIP-STER on a GPU").
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Literal, get_args

import torch

from acquire.errors import UserError

Precision = Literal["fp32", "tf32", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


def checked_precision(precision: str, device: torch.device) -> Precision:
    """``precision`` if it is known and usable on ``device``; raises :class:`UserError` otherwise."""
    if precision not in PRECISIONS:
        raise UserError(f"precision {precision!r} is not known; allowed: {', '.join(PRECISIONS)}")
    if precision == "tf32" and device.type != "cuda":
        raise UserError(f"precision 'tf32' needs a CUDA device; this run is on {device.type!r} "
                        "(use fp32 or bf16)")
    return precision  # type: ignore[return-value]


def enable_tf32() -> None:
    """Let CUDA matrix products and cuDNN convolutions use TensorFloat-32 (process-wide)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def autocast_for(precision: Precision, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of the context the network's forward pass runs in: bf16 autocast, or nothing."""
    if precision == "bf16":
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext
