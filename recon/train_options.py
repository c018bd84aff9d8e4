"""The options of DIP-STER training, declared once for ``tiltstream recon train`` and ``tiltstream live``.

Each is an annotated type (type, bounds, description; default where both commands share it): a
settings model annotates ``preset: PresetOption`` where its options are listed. Light to import
(pydantic only), so command-line modules can use it without torch.
"""

from __future__ import annotations

from typing import Annotated, Literal

import pydantic

from tiltstream.recon.precision import Precision
from tiltstream.recon.presets import PresetName

PresetOption = Annotated[PresetName, pydantic.Field(
    "fast", description="DIP-STER hyperparameters: paper (the paper's network), fast (tuned for time-to-quality "
    "on a CPU) or kplanes (a factorised space-time field in the network's place); ignored when resuming (the "
    "run keeps its own)")]
DeviceOption = Annotated[Literal["auto", "cpu", "cuda"], pydantic.Field(
    "auto", description="where to train: auto picks CUDA when available")]
PrecisionOption = Annotated[Precision, pydantic.Field(
    "fp32", description="arithmetic of the network: fp32; tf32 (CUDA matrix products and convolutions in "
    "TensorFloat-32); bf16 (the network under bfloat16 autocast, weights and loss in float32). See "
    "docs/benchmarks/gpu.md 'DIP-STER on a GPU'")]
CompileOption = Annotated[bool, pydantic.Field(
    False, description="run the training forward pass through torch.compile (a warm-up of tens of seconds, "
    "then faster steps on a GPU; on a CPU slower: docs/benchmarks/speed.md)")]
SeedOption = Annotated[int, pydantic.Field(0, ge=0, description="seed of the initial weights and the sampler")]
ThreadsOption = Annotated[int | None, pydantic.Field(
    None, ge=1, description="CPU threads for torch (1 is often fastest on a shared machine); default: torch's "
    "choice")]
#: no default: ``recon train`` holds out 0.1 of the frames, ``live`` none
HoldoutOption = Annotated[float, pydantic.Field(
    ge=0.0, le=0.5, description="fraction of frames held out of training (0 to 0.5, evenly spread): their "
    "reprojection error tracks the quality on frames the model never saw and chooses the best state (best/); "
    "0 trains on every frame")]
