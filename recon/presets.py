"""DIP-STER hyperparameters: the settings model and the two named presets (``paper``, ``fast``).

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

    One deviation, on purpose: ``centre_coords`` (y / N_y and t enter the MAPNET as 2 y / N_y - 1 and
    2 t - 1). It is a fixed affine map the first linear layer could learn, so the architecture and the
    function class are the paper's; only the starting point differs. From the default initialisation
    the uncentred network sits on a plateau (a y-independent blob): measured on the nanorod 32^3 x 60
    (seed 0, ``bench/ablations.py --base paper``), mean SSIM at 500 / 1000 / 1500 / 2000 steps
    0.07 / 0.04 / 0.75 / 0.62 uncentred, 0.47 / 0.60 / 0.61 / 0.68 centred; centred with lr 1e-3
    instead of 1e-4 left the plateau later (0.08 / 0.10 / 0.47 / 0.57). At 2000 steps (about 4 CPU
    minutes at 32^3, 1/25 of the paper's 50k-200k steps) neither is above non-negative SIRT (0.80).
    """
    return DipsterConfig(centre_coords=True)


def fast_preset() -> DipsterConfig:
    """The best time-to-quality configuration measured on a 2-core CPU (see bench/recon_quality.py).

    Alloying errors quoted below were measured with Eq. 10's ``sigma_0`` taken from the reconstruction's
    own first volume, the reading used until 2026-12-05 (``tiltstream.recon.metrics``: now the ground truth's, as
    the paper measures it; docs/benchmarks/quality.md "Eq. 10 as the paper measures it").

    - MAPNET 3 -> 256 -> 256: half the paper's width; the coordinate manifold is 3-D and 256 neurons
      carry the nanorod's alloying dynamics at 32^3-64^3 (docs/method.md 9), at a quarter of the
      MAPNET cost.
    - CNN channels halve with resolution (32 at the latent map down to 16 at full size): the full-width
      paper CNN spends most of its FLOPs at the finest stages, where 16 channels suffice for one
      output channel; this is what brings the CPU rate from a few to tens of steps per second.
    - No angle input (``use_angle=False``): the paper's Eq. 3 feeds theta, but each time has one
      angle, so theta is a function of t during training and a volume queried at theta = 0 asks for a
      combination never trained on. Measured on the nanorod 32^3 x 60 (seed 0), SSIM of the volume at
      frame 30 after 2000 steps: 0.83 without the angle, 0.61 with it; 0.94 at 3000 steps without it.
    - Centred coordinates (``centre_coords``): y / N_y and t enter as 2 y / N_y - 1 and 2 t - 1. The
      first linear layer could learn that shift, but from the default initialisation the uncentred
      network sits on a plateau (a y-independent blob, SSIM 0.03) for about 1000 steps; centred, the
      same nanorod reaches SSIM ~0.89 at 1000 steps and ~0.92 at 1500 (frames 5, 30, 55); uncentred,
      the mean SSIM was 0.03 and 0.73.
    - GroupNorm (per sample): the slice is independent of the batch it is computed in.
    - lr 1e-3: a 3-minute CPU budget is a few thousand steps, not the paper's 50-200k; the smaller
      network tolerates a ten times larger Adam step, and StepLR (gamma 0.985 every 200 steps) brings
      it down to ~1e-4 by 30k steps, the paper's regime.
    - Batch 4 frames x 4 rows: the paper found > 4 frames per step slows convergence; rows of the
      same frame share its angle and time (one projector footprint), so they add spatial information
      per step at less than their share of the cost. With Adam beta2 0.99 (below), 32^3 x 60 at 3000
      steps (docs/benchmarks/ablations.md "Quality ablations"): 4 rows instead of 2 gave nanorod 0.955 ->
      0.964, nanoshell 0.787 -> 0.814 (above SIRT at 80 % -> 100 % of the time steps) for 1.24x the wall
      clock; per second of training it is ahead too (shell 0.789 after 45 s against 0.787 after 54 s).
    - Six Fourier bands of the row coordinate (``y_bands=6``: sin/cos of 2^k pi y', k < 6, appended
      to the MAPNET input): fully connected layers fit low frequencies of their input first (spectral
      bias), and the MAPNET must turn the row coordinate into slices that change within a voxel or two
      along the tilt axis (the nanoshell's 2-voxel wall at 32^3). Measured (``bench/ablations.py``,
      32^3 x 60, seed 0, 3000 steps, docs/benchmarks/ablations.md "Quality ablations"): nanoshell mean
      SSIM 0.60 -> 0.77 (above non-negative SIRT at 32 % -> 75 % of time steps), nanorod 0.936 -> 0.940;
      capacity at full resolution, the angle input, the L1 loss, more rows, Fourier bands of time and
      learning-rate changes each moved the nanoshell by < 0.11 and none fixed the alloying error.
    - Queries use an exponential moving average of the weights (``ema_decay=0.99``, a ~100-step
      horizon): at lr 1e-3 the trained weights oscillate (32^3 nanorod mean SSIM 0.902 -> 0.875 ->
      0.940 at 1000 / 2000 / 3000 steps); averaged, 0.904 -> 0.929 -> 0.940, nanoshell 0.768 -> 0.780,
      rod alloying error 54.7 -> 50.8 points (docs/benchmarks/ablations.md "Quality ablations"). The cost
      is one in-place lerp of the weights (~2.2 M at 64^3 with the 16x16 latent map) per step; a live
      reconstruction follows a new frame ~100 steps (a few seconds) later than the raw weights would.
    - Adam's second beta 0.99 instead of PyTorch's 0.999 (``adam_beta2``). Late in a run the
      gradients of the GroupNorm biases are ~1e-6 and Adam's normalised steps on them are driven by
      noise; with a 1000-step memory of the squared gradients, a burst of larger gradients gave steps
      20x the usual size, and a live demo run (24^3 x 40 nanorod) collapsed at step 4342: loss 3e-4 ->
      4e-3, the rod's edge rows at zero for good, SSIM 0.813 against SIRT's 0.833. Replayed bit for bit
      (one thread, the run's own frame schedule) it collapses the same way; with beta2 0.99 it does not
      (SSIM 0.992). An L1 run of that demo that had collapsed (0.813) replays to 0.992 with 0.99, and
      frame-by-frame training of that session with L1 that collapsed for 2 of 4 seeds (0.90 at the end)
      ends at 0.993 / 0.990 with it. On the 32^3 x 60 ablation (3000 steps, docs/benchmarks/ablations.md
      "Quality ablations") it also gains: nanorod 0.940 -> 0.955, nanoshell 0.780 -> 0.787.
    - Nearest-neighbour upsampling between the CNN's stages (``upsample="nearest"``; the paper does not
      say which it uses, and ``paper`` keeps bilinear). Bilinear interpolation low-passes the map under
      every stage, so fine structure has to be drawn by the convolutions against it; its backward pass
      was also 11 % of a 64^3 CPU step. Measured on the 64^3 x 100 sessions (seed 0, bf16, one thread,
      6000 steps, two runs side by side; docs/benchmarks/quality.md "Where the nanorod's alloying error
      comes from"): nanorod SSIM 0.937 -> 0.955, alloying 25.2 -> 23.4 points; nanoshell 0.797 -> 0.816,
      S/V error -28.4 -> -26.4 %; 1.17x the steps per second.
    - The data term on ramp-filtered rows (``residual_filter="ramp"``, :mod:`tiltstream.recon.row_filter`): the
      gradient of a plain projection loss is a backprojection of the residual, which weights a spatial
      frequency k by ~1/|k|, so fine detail is fitted last (SIRT has the same slow high frequencies:
      on the 64^3 nanoshell's last, roughest volume, static, with all 100 frames, non-negative SIRT
      reaches SSIM 0.62 / 0.82 / 0.92 after 30 / 100 / 300 iterations). Filtering both rows so the
      squared gain is a ramp makes the gradient a filtered backprojection; a Hann window, as FBP users
      put on noisy data, takes the gain to zero at the Nyquist frequency. Without the window the
      demo's low-dose stream (24^3, 24 e/A^2 per frame, frames added one by one) was fitted to its
      shot noise (SSIM 0.82; 0.97 with plain rows or with the window). Measured on the 64^3 x 100
      sessions (seed 0, bf16, one thread, 3000 steps; docs/benchmarks/quality.md "Sharper fits"), with
      the 8x8 map below: nanorod SSIM 0.949 -> 0.955 (0.962 without the window), alloying error 32.1 ->
      23.1 points; nanoshell 0.805 -> 0.820 (0.832), S/V error -27.3 -> -25.4 %. Steps per second stay
      within the run-to-run spread.
    - The ramp filter's window from the data (``ramp_window="data"``, :func:`tiltstream.recon.row_filter.data_window`):
      the larger of the Hann window and a Wiener gain ``1 - 2 N / P(k)``, with the noise N estimated
      from the frame totals. The Hann window throws away what the nanoshell's frames resolve up to the
      Nyquist frequency (signal to noise 1.1 there); on the nanorods, the nanocube and the demo's
      low-dose stream the Wiener gain is below the Hann window and nothing changes. 64^3 x 100 nanoshell,
      10 minutes (docs/benchmarks/quality.md "The ramp filter's window from the data"): SSIM 0.871 ->
      0.901, S/V error -17.1 -> -10.9 % (the bare ramp: 0.911, -8.3 %, but it fits a low-dose stream's
      noise; the window with the true noise spectrum: 0.907, -9.3 %). The demo-like stream: 0.968 /
      0.967 with the Hann window, 0.972 / 0.966 with this one.
    - A latent map of 4-voxel cells (``latent_cell_voxels=4``: 8x8 at 32^3, 16x16 at 64^3; the paper's
      map is 4x4 at every size): the CNN is translation-equivariant, so where fine structure sits
      within a slice is told only by the latent map. From 4x4 to 8x8 cells at 64^3 (3000 steps, seed 0,
      bf16, one thread; docs/benchmarks/quality.md "Sharper fits"): nanoshell 0.787 -> 0.805, nanorod
      0.939 -> 0.949. From 8x8 to 16x16 (5000 steps, docs/benchmarks/quality.md "Latent cells of 4
      voxels"): nanoshell 0.867 -> 0.916, S/V error -18.5 -> -8.4 %, its roughest state (step 99)
      0.726 -> 0.810. The dynamic series is where the map matters: on a static series of that state
      8x8 already reaches 0.965 at 8000 steps ("What the frames hold"). The MAPNET's last layer is
      256 x (32 x 16 x 16) weights at 64^3 (the network 2.2 M parameters), and 32 channels at the map
      instead of 64 (``cnn_channels=32``) keep the step rate: 20.7 steps/s against the 8x8 map's 18.7
      at 64^3 (10.6 with 64 channels at 16x16), for the same SSIM per step. 64^3 x 100, 10 minutes, one
      thread beside another run: nanoshell SSIM 0.902 -> 0.935, S/V error -10.7 -> -2.4 %; nanorod
      0.971 -> 0.961 (it peaks at 0.969 near 6500 steps, then fits the noise), 0.95 after 97 s.
    - The paper's Geman-McClure data term. L1 (``loss="l1"``, the preset's loss for a while) reached
      the 32^3 nanorod's SSIM 0.94 sooner, but with beta2 0.99 it is no better than Geman-McClure
      (nanorod 0.946 vs 0.955, nanoshell 0.786 vs 0.787 at 3000 steps), and its gradient keeps its size
      at the optimum, so Adam keeps taking full steps there.
    """
    return DipsterConfig(mapnet_widths=(256, 256), use_angle=False, centre_coords=True, y_bands=6,
                         ema_decay=0.99, adam_beta2=0.99, upsample="nearest", residual_filter="ramp",
                         ramp_window="data", latent_cell_voxels=4,
                         cnn_channels=32, channel_halving=True,
                         cnn_min_channels=16, lr=1e-3, lr_gamma=0.985, lr_step_steps=200,
                         batch_frames=4, rows_per_frame=4)


def kplanes_preset() -> DipsterConfig:
    """A K-planes field (:mod:`tiltstream.recon.kplanes`) in the network's place, with the trainer's loss and sampler.

    Issue 9 asked why the thin shell and the alloying contrast are lost; DIP-STER's answer was spectral
    bias (the Fourier bands of ``fast``), and a field that stores the slices on a voxel grid has none.
    Six planes of 16 features at one cell per voxel and at one per two voxels, 25 time cells, the
    paper's Geman-McClure loss, Adam lr 1e-2 (grids take the larger step K-planes trains with), beta2
    0.99 and the ``fast`` preset's StepLR, 4 frames x 8 rows per step, plane smoothness 3e-4. Measured
    (seed 0, ``bench/ablations.py``; docs/benchmarks/kplanes.md "A factorised field"; alloying errors by
    the reading of Eq. 10 used until 2026-12-05, see :func:`fast_preset`):

    - 32^3 x 60, 2000 steps, against the preset as first written (``--base kplanes_v0``: 4 rows per
      frame, smoothness 1e-3): 8 rows per frame bring the nanorod's alloying error after step 4 from
      50-70 points to 8-11 (SIRT 46), since a step's rows are what the zy and xy planes learn from;
      smoothness 1e-4 lifts the nanoshell 0.893 -> 0.909, 1e-2 over-smooths (0.827). One scale
      instead of two is 2.5x the steps/s for a similar result at 32^3; 12 or 50 time cells, time
      smoothness 1e-3 or 1e-1, 32 features, the L1 loss and the weight average each moved the mean
      SSIM by < 0.02, lr 3e-3 or 3e-2 cost the shell 0.02-0.03.
    - 64^3 x 100, 2500 steps, smoothness 1e-4 / 3e-4 / 1e-3: the nanocube overfits the noise at 1e-4
      (SSIM 0.903 at 1500 steps, 0.887 at 2500, 0.867 at 3500) and not at 3e-4 (0.916, still rising)
      or 1e-3 (0.923); the nanoshell prefers less (0.877 / 0.873 / 0.851, surface/volume error -3.9 %
      at 3e-4, -8.9 % at 1e-3); nanorod 0.921 / 0.920 / 0.912, nanostar 0.830 / 0.831 / 0.825.
      3e-4 is the compromise.

    Against ``fast`` on the same data: at 32^3 x 60 the nanoshell's SSIM is 0.91 against 0.81 and
    its surface/volume error about +3 % against -23 %; at 64^3 x 100 see docs/benchmarks/kplanes.md
    (ahead on the nanoshell and on alloying, behind on the nanostar's and the nanocube's SSIM).

    It overfits small low-dose sessions: on the demo's 24^3 x 40 session (24 e/A^2 per frame) the SSIM
    is 0.92 after 1000 steps and 0.79 after 4000 (the full-resolution planes fit the shot noise). 3e-4
    only delays it on the 64^3 nanocube: 0.915 at 2000 steps, 0.873 after 10 minutes (8100 steps). So
    use it with held-out stopping (``recon train``'s default keeps the best state: 0.93 on the demo's
    session), not in a live run without ``--holdout``.
    """
    return DipsterConfig(network="kplanes", use_angle=False, plane_features=16, plane_scales=(1, 2),
                         plane_time_cells=25, plane_smooth_weight=3e-4, plane_time_smooth_weight=1e-2,
                         lr=1e-2, adam_beta2=0.99, lr_gamma=0.985, lr_step_steps=200,
                         batch_frames=4, rows_per_frame=8)


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
