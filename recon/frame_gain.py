"""Per-frame intensity scale of DIP-STER's data term: illumination and HAADF detector drift kept out of the object.

Frame ``i`` is modelled as ``g_i`` times the projection of the object, ``g_i = exp(l_i - mean(l))``: each
``l_i`` is the log of the ratio ``sum(m) / sum(p)`` of the measured rows ``m`` to the predicted
(gain-free) rows ``p`` of frame ``i`` (a row's sum is the mass of its slice at any angle, so the ratio
does not depend on how well the shape is fitted yet), the sums accumulated over the steps that drew the
frame with a memory of :data:`GAIN_MEMORY` per draw; the mean is over the frames drawn so far, so the
object keeps the frames' overall scale. ``|l_i - mean(l)|`` is clipped at :data:`MAX_LOG_GAIN`.
Data-parallel ranks average their sums after every step. Volumes and reprojections are the object's
(no gain).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

GAIN_MEMORY = 0.97  # weight of a frame's earlier draws in its ratio, per new draw
MAX_LOG_GAIN = 0.2  # |log gain| at most this (a factor 0.82 .. 1.22)


class FrameGains:
    """The per-frame intensity scales of the frames of one trainer, by slot, on ``device``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.measured = torch.zeros(0, dtype=torch.float64, device=device)  # decayed sums of measured rows per slot
        self.predicted = torch.zeros(0, dtype=torch.float64, device=device)  # decayed sums of predicted rows per slot

    def add(self) -> None:
        """Make room for one more frame (its gain 1 until drawn)."""
        zero = torch.zeros(1, dtype=torch.float64, device=self.device)
        self.measured = torch.cat([self.measured, zero])
        self.predicted = torch.cat([self.predicted, zero])

    def log_gains(self) -> torch.Tensor:
        """``log g`` per slot, float32 ``(n_frames,)``: mean zero over the frames drawn, 0 for the others."""
        drawn = self.predicted > 0
        if not bool(drawn.any()):
            return torch.zeros(len(self.predicted), dtype=torch.float32, device=self.device)
        ratio = torch.where(drawn, self.measured / self.predicted.clamp_min(1e-300), torch.ones_like(self.predicted))
        log_ratio = torch.log(ratio.clamp_min(1e-6))
        centred = (log_ratio - log_ratio[drawn].mean()).clamp(-MAX_LOG_GAIN, MAX_LOG_GAIN)
        return torch.where(drawn, centred, torch.zeros_like(centred)).float()

    def factors(self, slots: torch.Tensor) -> torch.Tensor:
        """Gains ``g`` of ``slots`` (any shape of slot indices), float32, same shape."""
        return torch.exp(self.log_gains())[slots]

    @torch.no_grad()
    def observe(self, slots: torch.Tensor, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Fold one step's rows into the ratios: ``pred`` (gain-free) and ``target`` ``(B, S, nx)`` of
        frames ``slots`` ``(B,)`` (a slot drawn twice in a step counts once)."""
        measured = target.double().sum(dim=(1, 2))
        predicted = pred.detach().double().sum(dim=(1, 2))
        self.measured[slots] = GAIN_MEMORY * self.measured[slots] + measured
        self.predicted[slots] = GAIN_MEMORY * self.predicted[slots] + predicted

    def synchronise(self, ranks: int) -> None:
        """Data-parallel: replace the ratio sums by their mean over the ``ranks`` ranks of the default process
        group (each rank observed its own frames), so every rank applies the same gains."""
        for sums in (self.measured, self.predicted):
            torch.distributed.all_reduce(sums)
            sums /= ranks

    def state_dict(self) -> dict[str, Any]:
        """The ratio sums, on the CPU."""
        return {"measured": self.measured.cpu(), "predicted": self.predicted.cpu()}

    def load_state_dict(self, state: Mapping[str, Any] | None, n_frames: int) -> None:
        """Restore :meth:`state_dict`; None (a checkpoint from before gains were kept) starts every one of
        ``n_frames`` frames at gain 1."""
        if state is None:
            self.measured = torch.zeros(n_frames, dtype=torch.float64, device=self.device)
            self.predicted = torch.zeros(n_frames, dtype=torch.float64, device=self.device)
            return
        self.measured = state["measured"].to(self.device)
        self.predicted = state["predicted"].to(self.device)
