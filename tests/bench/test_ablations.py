"""The ablation bench's historical bases and map-size variants (``bench/ablations.py``) build the networks
their names say, whatever the current ``fast`` preset sizes its latent map by."""

from __future__ import annotations

from bench.ablations import VARIANTS, base_config
from tiltstream.recon.model import DipsterNet


def test_fast_of_2026_11_28_has_its_4x4_map_of_64_channels_and_plain_rows() -> None:
    config = base_config("fast_1128")
    net = DipsterNet(config, (64, 64))
    assert net.sizes[0] == (4, 4) and net.channels[0] == 64
    assert config.residual_filter == "none"


def test_the_8x8_map_variants_give_an_8x8_map_on_the_current_fast() -> None:
    for name in ("base8", "ramp_base8"):
        overrides, _ = VARIANTS[name]
        net = DipsterNet(base_config("fast").model_copy(update=overrides), (64, 64))
        assert net.sizes[0] == (8, 8), name
