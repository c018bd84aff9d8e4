"""Which (frame, row) pairs a DIP-STER step trains on: new frames first, then uniform over all frames.

Each step draws ``batch_frames`` frames. Up to ``fresh_per_step`` of them are taken, oldest first, from
the queue of training frames not drawn yet; the rest are uniform over every training frame (so
earlier frames keep being revisited while new ones stream in). A frame added while ``P`` frames are
pending is therefore drawn within ``ceil((P + 1) / fresh_per_step)`` steps. Rows are uniform.

All randomness comes from one ``torch.Generator`` whose state is part of :meth:`state_dict`, so a
restored sampler continues the same sequence.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import torch


class FrameSampler:
    """Draws frame slots and rows for training steps.

    Parameters
    ----------
    seed
        Seed of the sampler's own generator.
    fresh_per_step
        Batch slots per step reserved for frames not yet drawn.
    """

    def __init__(self, seed: int, fresh_per_step: int = 1) -> None:
        self.fresh_per_step = int(fresh_per_step)
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(int(seed))
        self.train_slots: list[int] = []
        self.pending: deque[int] = deque()

    def add(self, slot: int) -> None:
        """Make frame ``slot`` (its position in the trainer's frame store) available for training."""
        self.train_slots.append(int(slot))
        self.pending.append(int(slot))

    def wait_bound_steps(self) -> int:
        """Steps within which every frame pending now is drawn (0 when none is pending)."""
        return math.ceil(len(self.pending) / self.fresh_per_step)

    def draw(self, batch_frames: int, rows_per_frame: int, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame slots ``(B,)`` and row indices ``(B, S)`` (CPU long tensors) for one step."""
        if not self.train_slots:
            raise RuntimeError("no training frames to draw from")
        fresh = [self.pending.popleft() for _ in range(min(self.fresh_per_step, len(self.pending),
                                                             batch_frames))]
        n_uniform = batch_frames - len(fresh)
        picks = torch.randint(len(self.train_slots), (n_uniform,), generator=self.generator)
        slots = fresh + [self.train_slots[int(p)] for p in picks]
        rows = torch.randint(n_rows, (batch_frames, rows_per_frame), generator=self.generator)
        return torch.tensor(slots, dtype=torch.long), rows

    def state_dict(self) -> dict[str, Any]:
        """Generator state, training slots and the pending queue."""
        return {"generator": self.generator.get_state(), "train_slots": list(self.train_slots),
                "pending": list(self.pending), "fresh_per_step": self.fresh_per_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.generator.set_state(state["generator"])
        self.train_slots = [int(s) for s in state["train_slots"]]
        self.pending = deque(int(s) for s in state["pending"])
        self.fresh_per_step = int(state["fresh_per_step"])
