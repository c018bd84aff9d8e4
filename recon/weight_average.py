"""An exponential moving average of a network's weights: the weights a trainer's volumes are queried with.

With decay ``d`` each update moves the averaged copy ``(1 - d)`` of the way to the trained weights
(one lerp over every parameter tensor), after every optimisation step; a decay of 0 keeps no average
and queries use the trained weights themselves.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch


class WeightAverage:
    """The moving average of ``model``'s weights (decay ``decay`` per step, 0: none kept)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.model = model
        self.decay = float(decay)
        self.average = copy.deepcopy(model).requires_grad_(False) if self.decay > 0 else None

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the model's current weights (after an optimisation step)."""
        if self.average is not None:
            torch._foreach_lerp_(list(self.average.parameters()), list(self.model.parameters()),
                                 1.0 - self.decay)

    @property
    def query_model(self) -> torch.nn.Module:
        """The weights volumes are queried with: the average, or the model without one."""
        return self.average if self.average is not None else self.model

    def state_dict(self) -> dict[str, Any] | None:
        """The averaged weights on the CPU (None without an average)."""
        return None if self.average is None else {k: v.cpu() for k, v in self.average.state_dict().items()}

    def load_state_dict(self, average: Mapping[str, Any] | None, model: Mapping[str, Any]) -> None:
        """Restore the averaged weights (the model's ``model`` weights when the checkpoint kept none)."""
        if self.average is not None:
            self.average.load_state_dict(average or model)
