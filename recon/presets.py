"""DIP-STER hyperparameters: the settings model and the three named presets (``paper``, ``fast``, ``kplanes``).

This module is light (pydantic only), so command-line modules can import it without torch.
The trainer (:mod:`tiltstream.recon.trainer`) re-exports :class:`DipsterConfig`.
"""

from __future__ import annotations

from typing import Literal, get_args

import pydantic

PresetName = Literal["paper", "fast", "kplanes"]
PRESET_NAMES: tuple[str, ...] = get_args(PresetName)


class DipsterConfig(pydantic.BaseModel):
    """Architecture and optimisation settings of one DIP-STER reconstruction.

    The network maps a coordinate ``c = (y_k / N_y, t_i, theta_i)`` (paper Eq. 3; ``t = time_s /
    time_scale_s``, ``theta`` in radians) through a fully connected MAPNET to a latent vector, reshapes
    it to a small ``(C, h0, w0)`` map, and a generative CNN upsamples it (two 3x3 convolutions per
    stage) to the orthoslice ``(nz, nx)``. With ``network="kplanes"`` a factorised space-time field
    (:mod:`tiltstream.recon.kplanes`) takes the MAPNET's and the CNN's place; the training settings (batch, Adam,
    StepLR, loss, weight average) are shared by both networks.
    """

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    network: Literal["dipster", "kplanes"] = pydantic.Field(
        default="dipster", description="the field that maps a coordinate to an orthoslice: the paper's "
        "MAPNET and generative CNN (dipster; the architecture fields below), or six feature planes over "
        "space and time (kplanes, tiltstream.recon.kplanes; the plane_* fields)")
    mapnet_widths: tuple[int, ...] = pydantic.Field(
        default=(512, 512), min_length=1,
        description="widths of the MAPNET's fully connected hidden layers, neurons")
    use_angle: bool = pydantic.Field(
        default=True, description="feed the tilt angle theta (radians) to the MAPNET as the paper's "
        "Eq. 3 does; volumes are then queried at theta = 0")
    centre_coords: bool = pydantic.Field(
        default=False, description="map y / N_y and t to 2 y / N_y - 1 and 2 t - 1 (a fixed affine map "
        "inside the network) so the MAPNET's inputs are centred on 0")
    y_bands: int = pydantic.Field(
        default=0, ge=0, le=12, description="Fourier bands of the row coordinate: sin and cos of "
        "2^k pi y' (k < y_bands, y' the centred or raw y / N_y) are appended to the MAPNET input "
        "(0 = the raw coordinate only, as in the paper)")
    t_bands: int = pydantic.Field(
        default=0, ge=0, le=12, description="Fourier bands of the time coordinate, as y_bands")
    t_gain: float = pydantic.Field(
        default=1.0, gt=0, le=100, description="factor on the (centred or raw) time coordinate before the "
        "MAPNET and its Fourier bands: t' = t_gain (2 t - 1) when centring; larger makes the first layer's "
        "pre-activations move faster with time (1 = the paper's raw coordinate; 4 moved the 64^3 nanorod's "
        "alloying error within its seed-to-seed spread: docs/benchmarks/quality.md \"A faster time coordinate\")")
    base_size: int = pydantic.Field(
        default=4, ge=2, le=64,
        description="side of the small map the latent vector is reshaped to, pixels (approximate: the "
        "number of x2 upsampling stages is chosen so the map grows to the slice size); not used when "
        "latent_cell_voxels is set")
    latent_cell_voxels: int = pydantic.Field(
        default=0, ge=0, le=64,
        description="voxels a cell of the small latent map covers along the slice's longer side; when > 0 "
        "the map's side is that side / latent_cell_voxels (rounded to a power-of-two number of x2 "
        "upsamplings), so a cell covers the same voxels at every volume size, and base_size is not used "
        "(0 = base_size)")
    cnn_channels: int = pydantic.Field(
        default=128, ge=4, description="channels of the CNN's first (coarsest) stage")
    channel_halving: bool = pydantic.Field(
        default=False, description="halve the channels at every upsampling stage (down to "
        "cnn_min_channels) instead of keeping cnn_channels at every stage")
    cnn_min_channels: int = pydantic.Field(
        default=16, ge=4, description="smallest number of channels of a stage when halving")
    upsample: Literal["bilinear", "nearest"] = pydantic.Field(
        default="bilinear", description="how the CNN doubles its map between stages: bilinear "
        "interpolation (a low-pass that smooths what the convolutions draw) or nearest-neighbour copies "
        "(the convolutions alone decide what is smooth)")
    norm_groups: int = pydantic.Field(
        default=8, ge=1, description="GroupNorm groups per convolution (per-sample statistics, so a "
        "slice does not depend on the batch it is computed in)")
    batch_frames: int = pydantic.Field(
        default=4, ge=1, description="(frame, row) samples per step: frames drawn per step")
    rows_per_frame: int = pydantic.Field(
        default=1, ge=1, description="rows (orthoslices) per drawn frame and step; they share the "
        "frame's angle, so one projector footprint serves all of them")
    lr: float = pydantic.Field(default=1e-4, gt=0, description="Adam learning rate, 1/step")
    adam_beta2: float = pydantic.Field(
        default=0.999, gt=0, lt=1, description="Adam's decay of its squared-gradient average (PyTorch's "
        "and the paper's 0.999; smaller adapts the step size to the gradients of the last 1 / (1 - "
        "beta2) steps)")
    lr_gamma: float = pydantic.Field(
        default=0.985, gt=0, le=1, description="StepLR decay factor applied every lr_step_steps steps")
    lr_step_steps: int = pydantic.Field(
        default=3200, ge=1, description="StepLR period, training steps")
    loss: Literal["geman_mcclure", "l1", "l2"] = pydantic.Field(
        default="geman_mcclure", description="data term on the normalised rows: the paper's Geman-McClure "
        "2 r^2 / (r^2 + 4) (robust), the mean absolute or the mean squared residual")
    residual_filter: Literal["none", "ramp"] = pydantic.Field(
        default="none", description="filter along the detector applied to predicted and measured rows "
        "before the data term: none (the paper), or ramp (a windowed ramp: frequency k of a row "
        "weighted by sqrt((|k| + 1/2) w(k)), w the ramp_window, so the loss's gradient is a filtered "
        "backprojection and fine detail is fitted about as fast as coarse; tiltstream.recon.row_filter)")
    ramp_window: Literal["hann", "data"] = pydantic.Field(
        default="hann", description="window of the ramp filter: hann (zero at the Nyquist frequency), or "
        "data (the larger of the Hann window and a Wiener gain 1 - 2 N / P(k) from the training frames' "
        "row spectrum P and their noise N, estimated from the frame totals; it keeps the frequencies "
        "where the frames hold signal above the noise; tiltstream.recon.row_filter.data_window)")
    tv_weight: float = pydantic.Field(
        default=0.0, ge=0, description="lambda of the 1-D total variation of the reprojection "
        "(paper Eq. 6; 5e-6 to 1e-5 for experimental data, 0 for simulations), per normalised row")
    slice_tv_weight: float = pydantic.Field(
        default=0.0, ge=0, description="weight of the 2-D total variation of the drawn orthoslices (the "
        "volume itself, not its projection): the mean over their pixels of |d/dz| + |d/dx| of the slice, in "
        "row units (slice values times nx); a sparse-view prior (0 = off, as in the paper)")
    frame_gain: bool = pydantic.Field(
        default=False, description="model a per-frame intensity scale (illumination, HAADF detector "
        "drift) apart from the object: each predicted frame is multiplied by its gain, the least-squares "
        "ratio of measured to predicted rows with mean log 0 over the frames (tiltstream.recon.frame_gain), "
        "so drift is not read as a change of the object (docs/benchmarks/static.md)")
    time_prior_weight: float = pydantic.Field(
        default=0.0, ge=0, description="weight of a prior on change over time: the mean squared difference "
        "of the drawn slices at t and at t + d (d uniform in +-time_prior_span), in row units (slice "
        "values times nx), added to the loss (0 = off, as in the paper)")
    time_prior_span: float = pydantic.Field(
        default=0.05, gt=0, le=1, description="half-width of the time offset d of the time prior, in units "
        "of the time coordinate (1 = the session's time scale)")
    output: Literal["softplus"] = pydantic.Field(
        default="softplus", description="output non-linearity: smooth and non-negative (a ReLU output "
        "can die and leave an all-zero reconstruction)")
    ema_decay: float = pydantic.Field(
        default=0.0, ge=0.0, lt=1.0, description="decay of an exponential moving average of the weights, "
        "updated after every step, that volumes, reprojections and held-out errors are computed with "
        "(0 = off: the trained weights themselves, as in the paper)")
    fresh_per_step: int = pydantic.Field(
        default=1, ge=1, description="batch slots per step reserved for frames not yet drawn, so a "
        "new frame is trained on within (pending frames / fresh_per_step) steps")

    plane_features: int = pydantic.Field(
        default=16, ge=1, description="kplanes: features per plane and scale")
    plane_scales: tuple[int, ...] = pydantic.Field(
        default=(1, 2), min_length=1, description="kplanes: voxels per plane cell of each scale (1 = one "
        "cell per voxel)")
    plane_time_cells: int = pydantic.Field(
        default=25, ge=1, description="kplanes: cells of the time planes over t in [0, 1]")
    plane_smooth_weight: float = pydantic.Field(
        default=1e-3, ge=0, description="kplanes: weight of the mean squared difference of neighbouring "
        "cells of every plane along its space axes")
    plane_time_smooth_weight: float = pydantic.Field(
        default=1e-2, ge=0, description="kplanes: weight of the mean squared second difference of the "
        "time planes along time")

    @pydantic.model_validator(mode="after")
    def _scales_positive(self) -> DipsterConfig:
        if min(self.plane_scales) < 1:
            raise ValueError(f"plane_scales must be >= 1 voxel per cell; got {list(self.plane_scales)}")
        return self

    @pydantic.model_validator(mode="after")
    def _fresh_fits(self) -> DipsterConfig:
        if self.fresh_per_step > self.batch_frames:
            raise ValueError(f"fresh_per_step = {self.fresh_per_step} exceeds batch_frames = "
                             f"{self.batch_frames}")
        return self


def paper_preset() -> DipsterConfig:
    """The paper's architecture and hyperparameters (Methods, Supplementary Note 2 and Fig. 2).

    - MAPNET: two fully connected layers of 512 neurons (the nanorod and experimental setting; one
      layer sufficed for the nanoshell).
    - CNN: 128 channels at every stage, two 3x3 convolutions between upsamplings, from a 4x4 map.
    - Batch 4 (larger slowed convergence in the paper), one row per sample.
    - Adam lr 1e-4, StepLR gamma 0.985. The paper's period reads "s = 32 x" a count; with batch 4 and
      128 rows per frame, 32 x (number of frames) steps is one epoch over (frame, row) pairs, i.e.
      3200 steps for their 100-frame series: that is the period used here.
    - No TV (lambda = 0, the paper's setting for simulations).

    One deviation, on purpose: centred coordinates (``centre_coords``: y / N_y and t enter the MAPNET as
    2 y / N_y - 1 and 2 t - 1), a fixed affine map the first linear layer could learn, so only the
    starting point differs from the paper's; uncentred, the network starts on a plateau
    (docs/benchmarks/defaults.md, "The paper preset: its one deviation").
    """
    return DipsterConfig(centre_coords=True)


def fast_preset() -> DipsterConfig:
    """The best time-to-quality configuration measured on a 2-core CPU.

    How it departs from ``paper`` (each choice and its measurement: docs/benchmarks/defaults.md,
    "The fast preset, choice by choice"):

    - MAPNET 3 -> 256 -> 256, half the paper's width; CNN channels that halve with resolution, from 32
      at the latent map down to 16 at full size (``channel_halving``, ``cnn_min_channels``);
    - no angle input (``use_angle=False``): each time has one angle, so theta is a function of t;
    - centred coordinates and six Fourier bands of the row coordinate (``centre_coords``, ``y_bands=6``);
    - lr 1e-3 with StepLR gamma 0.985 every 200 steps, Adam beta2 0.99, and queries from an exponential
      moving average of the weights (``ema_decay=0.99``);
    - 4 frames x 4 rows per step;
    - nearest-neighbour upsampling and a latent map of 4-voxel cells (``latent_cell_voxels=4``);
    - the paper's Geman-McClure loss on ramp-filtered rows whose window comes from the data
      (``residual_filter="ramp"``, ``ramp_window="data"``: :mod:`tiltstream.recon.row_filter`).
    """
    return DipsterConfig(mapnet_widths=(256, 256), use_angle=False, centre_coords=True, y_bands=6,
                         ema_decay=0.99, adam_beta2=0.99, upsample="nearest", residual_filter="ramp",
                         ramp_window="data", latent_cell_voxels=4,
                         cnn_channels=32, channel_halving=True,
                         cnn_min_channels=16, lr=1e-3, lr_gamma=0.985, lr_step_steps=200,
                         batch_frames=4, rows_per_frame=4)


def kplanes_preset() -> DipsterConfig:
    """A K-planes field (:mod:`tiltstream.recon.kplanes`) in the network's place, with the trainer's loss and sampler.

    Six planes of 16 features at one cell per voxel and at one per two voxels, 25 time cells, the
    paper's Geman-McClure loss, Adam lr 1e-2 (grids take the larger step K-planes trains with), beta2
    0.99 and the ``fast`` preset's StepLR, 4 frames x 8 rows per step, plane smoothness 3e-4. It
    overfits small low-dose sessions: use it with held-out stopping (``recon train``'s default keeps the
    best state), not in a live run without ``--holdout``. Why these settings: docs/benchmarks/defaults.md
    ("The kplanes preset") and docs/benchmarks/kplanes.md.
    """
    return DipsterConfig(network="kplanes", use_angle=False, plane_features=16, plane_scales=(1, 2),
                         plane_time_cells=25, plane_smooth_weight=3e-4, plane_time_smooth_weight=1e-2,
                         lr=1e-2, adam_beta2=0.99, lr_gamma=0.985, lr_step_steps=200,
                         batch_frames=4, rows_per_frame=8)


REAL_DATA_UPDATE: dict[str, object] = {"tv_weight": 1e-5, "time_prior_weight": 0.1, "slice_tv_weight": 3e-4}
"""What ``recon train --preprocess real`` changes in the preset: the paper's TV weight for experimental
data (Supplementary Note 2 found 5e-6 to 1e-5 good; the upper end, as real frames are noisier than the
simulations), and a light prior on change over time, so that noise and left-over misregistration are not
read as motion: on the static real needle it holds the volumes within 3 % of their time mean (7.9-13 %
without) at an equal or lower held-out error, and costs the simulated dynamic nanorod and nanoshell 0.002
of mean SSIM (weight 1: volumes within 1 %, but the nanoshell -0.037; docs/benchmarks/real_data.md).
Not the per-frame intensity scale (``frame_gain``): after the per-frame normalisation it doubled the
real needle's held-out error and tripled its volumes' change over time. And a 2-D total variation of the
drawn orthoslices (``slice_tv_weight`` 3e-4), a prior for sparse series: on the needle trained on every 4th
frame it lowered the held-out error of the 4000 ... 6000-step states by 2-3 % (1e-4: 1-2 %, 1e-3: none;
docs/benchmarks/real_data.md)."""


def preset(name: str) -> DipsterConfig:
    """The named preset, ``paper``, ``fast`` or ``kplanes``.

    Raises
    ------
    ValueError
        For another name (the CLI turns it into a one-line error).
    """
    if name == "paper":
        return paper_preset()
    if name == "fast":
        return fast_preset()
    if name == "kplanes":
        return kplanes_preset()
    raise ValueError(f"unknown DIP-STER preset {name!r}; allowed: {', '.join(PRESET_NAMES)}")
