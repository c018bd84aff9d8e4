"""DipsterNet's coordinate encoding: centring and the Fourier bands of the row and time coordinates."""

from __future__ import annotations

import math

import torch

from tiltstream.recon.model import DipsterNet
from tiltstream.recon.presets import DipsterConfig

SMALL = DipsterConfig(mapnet_widths=(16,), cnn_channels=8, channel_halving=True, cnn_min_channels=4,
                      norm_groups=2, centre_coords=True)


def test_fourier_bands_are_sin_cos_of_octaves_of_the_centred_coordinates() -> None:
    net = DipsterNet(SMALL.model_copy(update={"y_bands": 3, "t_bands": 2}), (8, 8))
    coords = torch.tensor([[0.75, 0.25, 0.3]])
    y, t = 2 * 0.75 - 1, 2 * 0.25 - 1  # centred: 0.5 and -0.5
    expected = [y, t, 0.3,
                *(math.sin(math.pi * 2**k * y) for k in range(3)), *(math.sin(math.pi * 2**k * t) for k in range(2)),
                *(math.cos(math.pi * 2**k * y) for k in range(3)), *(math.cos(math.pi * 2**k * t) for k in range(2))]
    torch.testing.assert_close(net.encode(coords)[0], torch.tensor(expected), atol=1e-6, rtol=0)
    assert net.mapnet[0].in_features == 3 + 2 * (3 + 2)
    assert net(coords.repeat(2, 1)).shape == (2, 8, 8)


def test_no_bands_is_the_plain_network() -> None:
    """y_bands = t_bands = 0 (the paper preset) leaves the input, the weights and the output unchanged."""
    torch.manual_seed(0)
    plain = DipsterNet(SMALL, (8, 8))
    torch.manual_seed(0)
    zero = DipsterNet(SMALL.model_copy(update={"y_bands": 0, "t_bands": 0}), (8, 8))
    coords = torch.rand(5, 3)
    centred = torch.stack([2 * coords[:, 0] - 1, 2 * coords[:, 1] - 1, coords[:, 2]], dim=1)
    torch.testing.assert_close(plain.encode(coords), centred)
    torch.testing.assert_close(plain(coords), zero(coords))


def _second_stage_input(net: DipsterNet, coords: torch.Tensor) -> torch.Tensor:
    seen = []
    handle = net.stages[1].register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    net(coords)
    handle.remove()
    return seen[0]


def test_nearest_upsampling_copies_each_value_into_a_2x2_block() -> None:
    """upsample='nearest' (the fast preset) doubles the map by copies; 'bilinear' (paper) interpolates."""
    torch.manual_seed(0)
    nearest = DipsterNet(SMALL.model_copy(update={"upsample": "nearest"}), (16, 16))
    bilinear = DipsterNet(SMALL, (16, 16))
    bilinear.load_state_dict(nearest.state_dict())  # same weights: only the upsampling differs
    coords = torch.rand(3, 3)
    up = _second_stage_input(nearest, coords)
    assert up.shape[-2:] == (8, 8)
    for dy in (0, 1):
        for dx in (0, 1):
            torch.testing.assert_close(up[..., dy::2, dx::2], up[..., ::2, ::2], atol=0, rtol=0)
    smooth = _second_stage_input(bilinear, coords)
    assert (smooth[..., 1::2, ::2] - smooth[..., ::2, ::2]).abs().max() > 1e-3
    assert nearest(coords).shape == bilinear(coords).shape == (3, 16, 16)
    assert not torch.allclose(nearest(coords), bilinear(coords))


def test_query_upsampling_by_broadcast_equals_interpolate_and_training_keeps_interpolate() -> None:
    """The broadcast copy (queries) gives F.interpolate's values exactly, for whole factors; a map that
    needs a gradient, and a size that is not a whole multiple, go through F.interpolate itself."""
    from torch.nn import functional as F

    from tiltstream.recon.model import upsample

    nearest = {"mode": "nearest"}
    x = torch.rand(3, 4, 5, 7)
    for size in ((10, 14), (15, 21), (10, 7)):
        torch.testing.assert_close(upsample(x, size, nearest), F.interpolate(x, size=size, **nearest), atol=0, rtol=0)
    odd = upsample(x, (9, 13), nearest)  # ceil(9 / 2) = 5: not a whole factor
    torch.testing.assert_close(odd, F.interpolate(x, size=(9, 13), **nearest), atol=0, rtol=0)
    grad = x.clone().requires_grad_(True)
    upsample(grad, (10, 14), nearest).square().sum().backward()
    torch.testing.assert_close(grad.grad, 2.0 * 4.0 * x, rtol=1e-6, atol=1e-6)  # each value copied 4 times
    assert upsample(grad, (10, 14), nearest).grad_fn.name().startswith("UpsampleNearest2D")


def test_presets_upsampling() -> None:
    from tiltstream.recon.presets import preset

    assert preset("fast").upsample == "nearest"
    assert preset("paper").upsample == "bilinear"


def test_a_latent_cell_covers_the_same_voxels_at_every_size() -> None:
    """``latent_cell_voxels`` sizes the latent map from the slice (cells of 4 voxels: 6x6 at 24^2, 8x8 at
    32^2, 16x16 at 64^2, 32x32 at 128^2, as base_size=8 gives at 24^2 and 32^2), and overrides base_size."""
    per_cell = SMALL.model_copy(update={"latent_cell_voxels": 4, "base_size": 2})
    for n, first in [(24, 6), (32, 8), (64, 16), (128, 32)]:
        net = DipsterNet(per_cell, (n, n))
        assert net.sizes[0] == (first, first) and net.sizes[-1] == (n, n)
        assert net.mapnet[-1].out_features == net.channels[0] * first * first
    for n in (24, 32):
        assert DipsterNet(per_cell, (n, n)).sizes == DipsterNet(SMALL.model_copy(update={"base_size": 8}), (n, n)).sizes
    assert DipsterNet(per_cell, (48, 64)).sizes[0] == (12, 16)  # the longer side sets the scale
    assert DipsterNet(per_cell, (64, 64))(torch.rand(2, 3)).shape == (2, 64, 64)


def test_t_gain_scales_the_centred_time_coordinate_and_its_bands() -> None:
    net = DipsterNet(SMALL.model_copy(update={"t_gain": 4.0, "t_bands": 1}), (8, 8))
    coords = torch.tensor([[0.75, 0.25, 0.3], [0.5, 0.5, 0.0]])
    t = 4.0 * (2 * 0.25 - 1)  # -2.0
    expected = torch.tensor([0.5, t, 0.3, math.sin(math.pi * t), math.cos(math.pi * t)])
    torch.testing.assert_close(net.encode(coords)[0], expected, atol=1e-6, rtol=0)
    assert net.encode(coords)[1, 1].item() == 0.0  # the series' middle stays at 0
    raw = DipsterNet(SMALL.model_copy(update={"t_gain": 4.0, "centre_coords": False}), (8, 8))
    torch.testing.assert_close(raw.encode(coords)[:, :3], torch.tensor([[0.75, 1.0, 0.3], [0.5, 2.0, 0.0]]))
