"""The DIP-STER network: MAPNET (fully connected) -> latent map -> generative CNN -> orthoslice.

:class:`DipsterNet` maps coordinates ``(y / N_y, t, theta)`` to non-negative orthoslices ``(nz, nx)``
(paper Supplementary Fig. 2), with optional centred coordinates and Fourier features. It differs from
the public reference code on purpose: GroupNorm instead of BatchNorm (a slice does not depend on its
batch) and a ``softplus(.) / nz`` output. The architecture and why: docs/method.md 10.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from tiltstream.recon.presets import DipsterConfig

COORD_DIM = 3


def stage_sizes(slice_shape: tuple[int, int], base_size: float) -> list[tuple[int, int]]:
    """Map sizes of the CNN stages, coarsest first, ending at ``slice_shape``.

    The number of x2 upsamplings is chosen so the first map is about ``base_size`` on its longer
    side; every stage is ``ceil(n / 2^k)``, so any slice shape (not only powers of two) is reached.
    """
    nz, nx = slice_shape
    ups = max(0, round(math.log2(max(nz, nx) / base_size)))
    return [(math.ceil(nz / 2 ** k), math.ceil(nx / 2 ** k)) for k in range(ups, -1, -1)]


def _groups(channels: int, wanted: int) -> int:
    groups = min(wanted, channels)
    while channels % groups:
        groups -= 1
    return groups


def upsample(x: torch.Tensor, size: tuple[int, int], how: dict) -> torch.Tensor:
    """``F.interpolate(x, size=size, **how)`` for maps ``x`` (N, C, h, w). For queries (no gradient) nearest
    upsampling by whole factors is a broadcast copy: the same values, 10-15 % faster 64^2 reprojections on
    the CPU; training keeps ``upsample_nearest2d``, whose backward was as fast or faster (measured in
    one process, 1 and 2 threads)."""
    h, w = x.shape[-2:]
    fh, fw = size[0] // h, size[1] // w
    if how["mode"] != "nearest" or fh * h != size[0] or fw * w != size[1] or x.requires_grad:
        return F.interpolate(x, size=size, **how)
    n, c = x.shape[:2]
    return x[:, :, :, None, :, None].expand(n, c, h, fh, w, fw).reshape(n, c, size[0], size[1])


class ConvStage(nn.Module):
    """Two 3x3 convolutions, each followed by GroupNorm and a leaky ReLU."""

    def __init__(self, c_in: int, c_out: int, groups: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1),
            nn.GroupNorm(_groups(c_out, groups), c_out),
            nn.LeakyReLU(0.2),
            nn.Conv2d(c_out, c_out, 3, padding=1),
            nn.GroupNorm(_groups(c_out, groups), c_out),
            nn.LeakyReLU(0.2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class DipsterNet(nn.Module):
    """Coordinates (N, 3) -> orthoslices (N, nz, nx), non-negative, in normalised data units.

    Parameters
    ----------
    config
        Architecture (widths, channels, base map size, norm groups).
    slice_shape
        ``(nz, nx)`` of the orthoslice, voxels.
    """

    def __init__(self, config: DipsterConfig, slice_shape: tuple[int, int]) -> None:
        super().__init__()
        self.slice_shape = (int(slice_shape[0]), int(slice_shape[1]))
        base_size = (max(self.slice_shape) / config.latent_cell_voxels if config.latent_cell_voxels
                     else config.base_size)
        self.sizes = stage_sizes(self.slice_shape, base_size)
        channels = []
        for k in range(len(self.sizes)):
            c = config.cnn_channels // (2 ** k) if config.channel_halving else config.cnn_channels
            channels.append(max(c, min(config.cnn_min_channels, config.cnn_channels)))
        self.channels = channels
        layers: list[nn.Module] = []
        self.register_buffer("y_freqs", math.pi * 2.0 ** torch.arange(config.y_bands, dtype=torch.float32),
                             persistent=False)
        self.register_buffer("t_freqs", math.pi * 2.0 ** torch.arange(config.t_bands, dtype=torch.float32),
                             persistent=False)
        width_in = COORD_DIM + 2 * (config.y_bands + config.t_bands)
        for width in config.mapnet_widths:
            layers += [nn.Linear(width_in, width), nn.LeakyReLU(0.2)]
            width_in = width
        h0, w0 = self.sizes[0]
        layers.append(nn.Linear(width_in, channels[0] * h0 * w0))  # the latent, reshaped below
        self.mapnet = nn.Sequential(*layers)
        self.stages = nn.ModuleList(
            ConvStage(channels[max(k - 1, 0)], channels[k], config.norm_groups)
            for k in range(len(self.sizes)))
        self.head = nn.Conv2d(channels[-1], 1, 1)
        # F.interpolate's arguments between stages (align_corners applies to bilinear only)
        self.upsample = ({"mode": "bilinear", "align_corners": False} if config.upsample == "bilinear"
                         else {"mode": "nearest"})
        self.output_gain = 1.0 / self.slice_shape[0]
        # fixed input map: (y, t, theta) -> (2y - 1, g (2t - 1), theta) when centring, (y, g t, theta)
        # otherwise, g = t_gain
        centre, t_gain = config.centre_coords, config.t_gain
        self.register_buffer("coord_gain", torch.tensor([2.0, 2.0 * t_gain, 1.0] if centre else [1.0, t_gain, 1.0]),
                             persistent=False)
        self.register_buffer("coord_shift", torch.tensor([-1.0, -t_gain, 0.0] if centre else [0.0, 0.0, 0.0]),
                             persistent=False)

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """MAPNET input: the (centred) coordinates, then sin/cos of the y bands, then of the t bands."""
        c = coords * self.coord_gain + self.coord_shift
        phases = [c[:, :1] * self.y_freqs, c[:, 1:2] * self.t_freqs]
        return torch.cat([c, *(torch.sin(p) for p in phases), *(torch.cos(p) for p in phases)], dim=1)

    def prior_loss(self) -> torch.Tensor:
        """Zero: the deep image prior is the network itself, not a penalty (the trainer adds a network's
        prior loss to the data term; :class:`tiltstream.recon.kplanes.KPlanesField` has one)."""
        return self.head.bias.new_zeros(())

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """Orthoslices for coordinates ``(N, 3)`` = ``(y / N_y, t, theta_rad)``; returns ``(N, nz, nx)``."""
        h0, w0 = self.sizes[0]
        latent = self.mapnet(self.encode(coords))
        x = latent.reshape(coords.shape[0], self.channels[0], h0, w0)
        for k, stage in enumerate(self.stages):
            if k > 0:
                x = upsample(x, self.sizes[k], self.upsample)
            x = stage(x)
        return F.softplus(self.head(x)[:, 0]) * self.output_gain
