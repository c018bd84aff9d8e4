"""Arithmetic precision and compilation of DIP-STER's network: ``fp32``, ``tf32`` or ``bf16``, compiled or not.

``fp32`` (the default) is float32 on every device, TensorFloat-32 off; ``tf32`` lets CUDA use
TensorFloat-32; ``bf16`` runs the forward pass under autocast while weights, loss and optimiser stay
float32. The switches are set for a step or query and restored afterwards; ``compile`` wraps the
training forward pass in ``torch.compile``. The settings: docs/design.md 10; measured in
docs/benchmarks/gpu.md ("DIP-STER on a GPU") and docs/benchmarks/speed.md.
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


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX, as oneDNN reports): only then is
    ``bf16`` faster than ``fp32`` on the CPU (emulated it is slower)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def query_precision(precision: Precision, device: torch.device) -> Precision:
    """The precision of the queries a live process answers beside training (reprojections of new frames and
    requests, viewer volumes): ``bf16`` on a CPU that has it natively while the run trains in ``fp32``,
    else the run's own. Beside 64^3 training on two threads a reprojection then takes 83 ms instead of 149 ms
    and the training loses 4.8 % of its rate instead of 11.8 % (``bench/query_rate.py``,
    docs/benchmarks/live.md); the reprojections differ from fp32 by about 1e-3 (relative). The training, its
    checkpoints and the written volumes keep the run's precision."""
    if device.type == "cpu" and precision == "fp32" and native_bf16_cpu():
        return "bf16"
    return precision
