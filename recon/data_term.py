"""DIP-STER's loss (paper Eq. 6): the data term on (maybe ramp-filtered) rows, total variation, the prior.

The data term is Geman-McClure ``2 r^2 / (r^2 + 4)`` of normalised rows (kornia), mean over pixels
(or the L1 / L2 residual, ``config.loss``), of the rows as they are or ramp-filtered along the detector
(``config.residual_filter``, :mod:`tiltstream.recon.row_filter`); with ``config.ramp_window == "data"``
the filter's window is recomputed from the training frames' row statistics whenever training frames
were added. To it come ``tv_weight`` times the 1-D total variation of the predicted rows and the
network's ``prior_loss()``. :func:`slice_total_variation` is the 2-D total variation of the slices
themselves, which the trainer adds with ``slice_tv_weight`` (it needs the slices, not the rows).
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import torch
from kornia.losses import geman_mcclure_loss

from tiltstream.recon.frame_store import FrameStore
from tiltstream.recon.presets import DipsterConfig
from tiltstream.recon.row_filter import hann_window, ramp_filtered, ramp_gains, window_from_statistics


class DataTerm:
    """The loss of predicted against measured rows for frames ``nx`` pixels wide, on ``device``."""

    def __init__(self, config: DipsterConfig, nx: int, device: torch.device) -> None:
        self.config = config
        self.nx = nx
        self.device = device
        # the filter along the detector: its window and gains, or None without the ramp filter
        self.window = hann_window(nx, device) if config.residual_filter == "ramp" else None
        self.gains = None if self.window is None else ramp_gains(nx, device, self.window)
        self.window_frames = 0  # training frames the data window was last computed from

    @property
    def data_window(self) -> bool:
        """True when the filter's window is measured on the training frames (their row statistics)."""
        return self.window is not None and self.config.ramp_window == "data"

    def window_array(self) -> np.ndarray | None:
        """The filter's window ``(nx + 1,)``, or None without the ramp filter."""
        return None if self.window is None else self.window.cpu().numpy()

    def refresh(self, store: FrameStore, train_slots: Collection[int]) -> None:
        """With the data window, recompute it from the training frames (in time order) when frames were
        added since it was last computed."""
        if not self.data_window or self.window_frames == len(train_slots):
            return
        slots = torch.tensor(sorted(train_slots, key=lambda slot: store.times_s[slot]), device=self.device)
        pixels = store.frame_shape[0] * store.frame_shape[1]
        power = store.power[slots].mean(dim=0)
        self.window = window_from_statistics(power, store.totals[slots], pixels)
        self.gains = ramp_gains(self.nx, self.device, self.window)
        self.window_frames = len(train_slots)

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, network: torch.nn.Module) -> torch.Tensor:
        """The loss of predicted rows ``pred`` against ``target`` (``(..., nx)``, normalised), plus
        ``network.prior_loss()``."""
        kind = self.config.loss
        compared = ((pred, target) if self.gains is None
                    else (ramp_filtered(pred, self.gains), ramp_filtered(target, self.gains)))
        if kind == "geman_mcclure":
            loss = geman_mcclure_loss(*compared, reduction="mean")
        else:
            diff = compared[0] - compared[1]
            loss = diff.abs().mean() if kind == "l1" else (diff * diff).mean()
        if self.config.tv_weight > 0:
            tv = (pred[..., 1:] - pred[..., :-1]).abs().sum(dim=-1).mean()
            loss = loss + self.config.tv_weight * tv
        return loss + network.prior_loss()


def slice_total_variation(slices: torch.Tensor) -> torch.Tensor:
    """Anisotropic 2-D total variation of orthoslices ``(..., nz, nx)``: the mean over pixels of
    ``|d/dz| + |d/dx|`` (forward differences), in the slices' units."""
    dz = (slices[..., 1:, :] - slices[..., :-1, :]).abs().mean()
    dx = (slices[..., :, 1:] - slices[..., :, :-1]).abs().mean()
    return dz + dx

