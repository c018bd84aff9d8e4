"""A space-time field factorised into six planes (K-planes), as a second network for the DIP-STER trainer.

:class:`KPlanesField` stores an orthoslice instead of generating it: the density at ``(z, y, x, t)`` is a
linear read-out of products of six plane samples, at several scales, and :meth:`KPlanesField.prior_loss`
is its smoothness prior. Its interface is :class:`tiltstream.recon.model.DipsterNet`'s: coordinates
``(N, 3)`` in, non-negative orthoslices ``(N, nz, nx)`` out. The model: docs/method.md 10.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from tiltstream.recon.presets import DipsterConfig

SPACE_INIT = (0.1, 0.5)  # uniform range of the space planes at initialisation


def _sample_axis(plane: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``plane`` (F, A, R) along its last axis at cell positions ``position``
    (N,) (clamped to [0, R - 1]); returns (N, F, A)."""
    cells = plane.permute(2, 0, 1)  # (R, F, A)
    if cells.shape[0] == 1:
        return cells[torch.zeros_like(position, dtype=torch.long)]
    position = position.clamp(0, cells.shape[0] - 1)
    low = position.floor().long().clamp(max=cells.shape[0] - 2)
    weight = (position - low)[:, None, None]
    return cells[low] * (1 - weight) + cells[low + 1] * weight


def _neighbour_square(plane: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean squared difference of neighbouring cells of ``plane`` along ``dim`` (0 for one cell)."""
    if plane.shape[dim] < 2:
        return plane.new_zeros(())
    return torch.diff(plane, dim=dim).square().mean()


class KPlanesField(nn.Module):
    """Coordinates (N, 3) -> orthoslices (N, nz, nx), non-negative, in normalised data units.

    Parameters
    ----------
    config
        ``plane_features``, ``plane_scales``, ``plane_time_cells`` and the two prior weights.
    slice_shape
        ``(nz, nx)`` of the orthoslice, voxels.
    n_rows
        ``N_y``: rows of a frame (orthoslices of a volume), so ``y / N_y`` maps back to a row.
    """

    def __init__(self, config: DipsterConfig, slice_shape: tuple[int, int], n_rows: int) -> None:
        super().__init__()
        self.slice_shape = (int(slice_shape[0]), int(slice_shape[1]))
        self.n_rows = int(n_rows)
        self.scales = tuple(int(s) for s in config.plane_scales)
        self.smooth_weight = float(config.plane_smooth_weight)
        self.time_smooth_weight = float(config.plane_time_smooth_weight)
        nz, nx = self.slice_shape
        features, cells_t = config.plane_features, config.plane_time_cells
        self.space = nn.ParameterList()  # per scale: zx, zy, xy
        self.time = nn.ParameterList()  # per scale: zt, xt, yt
        for scale in self.scales:
            z, x, y = (math.ceil(n / scale) for n in (nz, nx, self.n_rows))
            for shape in ((z, x), (z, y), (x, y)):
                self.space.append(nn.Parameter(torch.empty(features, *shape).uniform_(*SPACE_INIT)))
            for size in (z, x, 1):
                self.time.append(nn.Parameter(torch.ones(features, size, cells_t)))
        self.readout = nn.Linear(features * len(self.scales), 1)
        self.output_gain = 1.0 / nz

    def _scale_features(self, k: int, rows: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """The product of the six planes at scale ``k`` for rows ``rows`` (N,) and time coordinates
        ``times`` (N,): (N, F, nz, nx)."""
        zx, zy, xy = self.space[3 * k: 3 * k + 3]
        zt, xt, yt = self.time[3 * k: 3 * k + 3]
        row_cell = (rows + 0.5) / self.scales[k] - 0.5
        time_cell = times * (zt.shape[-1] - 1)
        line_z = _sample_axis(zy, row_cell) * _sample_axis(zt, time_cell)  # (N, F, z)
        line_x = _sample_axis(xy, row_cell) * _sample_axis(xt, time_cell)  # (N, F, x)
        gain = _sample_axis(yt, time_cell)  # (N, F, 1)
        product = zx[None] * line_z[..., None] * (line_x * gain)[:, :, None, :]
        if product.shape[-2:] != self.slice_shape:
            product = F.interpolate(product, size=self.slice_shape, mode="bilinear", align_corners=False)
        return product

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """Orthoslices for coordinates ``(N, 3)`` = ``(y / N_y, t, theta_rad)``; returns ``(N, nz, nx)``."""
        rows, times = coords[:, 0] * self.n_rows, coords[:, 1]
        features = torch.cat([self._scale_features(k, rows, times) for k in range(len(self.scales))], dim=1)
        density = torch.einsum("nfzx,f->nzx", features, self.readout.weight[0]) + self.readout.bias
        return F.softplus(density) * self.output_gain

    def prior_loss(self) -> torch.Tensor:
        """Smoothness of the space planes along both axes plus smoothness in time of the time planes."""
        loss = self.readout.bias.new_zeros(())
        for plane in self.space:
            loss = loss + self.smooth_weight * (_neighbour_square(plane, 1) + _neighbour_square(plane, 2))
        for plane in self.time:
            loss = loss + self.smooth_weight * _neighbour_square(plane, 1)
            if plane.shape[-1] > 2:
                second = plane[..., 2:] - 2 * plane[..., 1:-1] + plane[..., :-2]
                loss = loss + self.time_smooth_weight * second.square().mean()
        return loss
