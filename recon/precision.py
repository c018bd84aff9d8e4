"""Arithmetic precision and compilation of DIP-STER's network: ``fp32``, ``tf32`` or ``bf16``, compiled or not.

The network is where a training step spends its arithmetic (the projector and the loss are a few small
kernels); on a GPU at the presets' batch sizes the step is bound by kernel launches instead, which is
what compilation addresses. The settings:

- ``fp32``: plain float32 everywhere (the default; bit-for-bit reproducible on the CPU). On CUDA the
  step runs with TensorFloat-32 switched off, also for cuDNN convolutions (which PyTorch otherwise
  allows by default), so fp32 means fp32 on every device.
- ``tf32``: float32 tensors, but CUDA matrix products and convolutions use TensorFloat-32 (10-bit
  mantissa inputs, float32 accumulation). CUDA only.
- ``bf16``: the network's forward pass runs under ``torch.autocast`` in bfloat16; its output, the
  projection, the loss, the weights and the optimiser state stay float32.

The TF32 switches are set for the duration of a step or query and restored afterwards, so trainers of
different precisions can share a process. ``compile`` wraps the training forward pass in
``torch.compile`` (queries stay eager: their batch sizes vary); on CUDA with ``mode="reduce-overhead"``
(CUDA graphs), because a step there is bound by kernel launches, not arithmetic. Measured in
``bench/train_speed.py`` (docs/benchmarks/gpu.md "DIP-STER on a GPU").
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from tiltstream.errors import UserError

if TYPE_CHECKING:
    import torch

Precision = Literal["fp32", "tf32", "bf16"]  # light to import (torch is imported where it is used)
PRECISIONS: tuple[str, ...] = get_args(Precision)


@dataclass(frozen=True)
class Speed:
    """How this process computes DIP-STER (not a property of the run): precision and compilation."""

    precision: Precision = "fp32"
    compile_model: bool = False

    def trainer_kwargs(self) -> dict[str, Any]:
        """The :class:`tiltstream.recon.trainer.Trainer` (and ``Trainer.load``) keyword arguments."""
        return {"precision": self.precision, "compile_model": self.compile_model}


def checked_precision(precision: str, device: torch.device) -> Precision:
    """``precision`` if it is known and usable on ``device``; raises :class:`UserError` otherwise."""
    if precision not in PRECISIONS:
        raise UserError(f"precision {precision!r} is not known; allowed: {', '.join(PRECISIONS)}")
    if precision == "tf32" and device.type != "cuda":
        raise UserError(f"precision 'tf32' needs a CUDA device; this run is on {device.type!r} "
                        "(use fp32 or bf16)")
    return precision  # type: ignore[return-value]


@contextlib.contextmanager
def _tf32_allowed(allowed: bool) -> Iterator[None]:
    import torch

    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def math_mode_for(precision: Precision, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of the context a whole step (forward and backward) or query runs in: on CUDA, TF32
    allowed for ``tf32`` and forbidden otherwise; nothing on the CPU."""
    if device.type != "cuda":
        return contextlib.nullcontext
    return lambda: _tf32_allowed(precision == "tf32")


def compiled(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` through ``torch.compile``: CUDA graphs on CUDA (launch-bound steps), default on the CPU."""
    import torch

    return torch.compile(module, mode="reduce-overhead" if device.type == "cuda" else "default")


def autocast_for(precision: Precision, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of the context the network's forward pass runs in: bf16 autocast, or nothing."""
    if precision == "bf16":
        import torch

        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext
