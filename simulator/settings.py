"""Settings of the simulator process (``tiltstream sim serve`` / ``sim tiltseries``), defaults in config/sim.toml."""

from __future__ import annotations

from typing import Literal

import pydantic

from tiltstream.acquire.tilt_range import MaxTiltDeg, MinTiltDeg, TiltRange


class SimSettings(TiltRange):
    """Specimen, clock, stage, detector and server settings of one simulated microscope or synthetic session."""

    model_config = pydantic.ConfigDict(extra="forbid")

    # specimen
    phantom: Literal["nanoshell", "nanorod", "nanostar", "nanocube"] = pydantic.Field(
        default="nanorod", description="dynamic specimen")
    size: int = pydantic.Field(default=64, ge=8, le=512, description="phantom grid edge, voxels (8..512)")
    steps: int = pydantic.Field(default=100, ge=1, description="phantom time steps simulated by the server")
    seed: int = pydantic.Field(default=0, description="seed of the specimen and of every noise draw")
    device: Literal["auto", "cpu", "cuda"] = pydantic.Field(
        default="auto", description="torch device for phantom generation and projection")
    threads: int = pydantic.Field(
        default=0, ge=0,
        description="torch CPU threads, count (0: torch's default; 1 is often fastest on a shared CPU)")
    # clock
    seconds_per_step: float = pydantic.Field(
        default=21.0, gt=0, description="specimen time per phantom step, seconds (paper: ~35 min / 100)")
    time_factor: float = pydantic.Field(
        default=1.0, gt=0, description="clock speed-up over wall time (serve), dimensionless")
    # stage
    mode: Literal["instant", "realistic"] = pydantic.Field(
        default="realistic", description="instant stage moves, or tilt speed + settling")
    tilt_speed_deg_per_s: float = pydantic.Field(
        default=15.0, gt=0, description="stage alpha speed at speed=1.0, degrees per second (realistic)")
    settle_s: float = pydantic.Field(default=0.5, ge=0, description="settling time after a move, seconds")
    backlash_deg: float = pydantic.Field(
        default=0.5, ge=0, description="mechanical backlash play of alpha, degrees (lag when approached from above)")
    alpha_min_deg: float = pydantic.Field(default=-80.0, description="holder alpha lower limit, degrees")
    alpha_max_deg: float = pydantic.Field(default=80.0, description="holder alpha upper limit, degrees")
    eucentric_offset_nm: float = pydantic.Field(
        default=0.0, allow_inf_nan=False,
        description="specimen height above the tilt axis, nm: tilting moves its image by about Z sin(alpha) "
        "and its height by Z (cos(alpha) - 1) (0: on the axis)")
    convergence_mrad: float = pydantic.Field(
        default=10.0, gt=0, description="probe convergence semi-angle, mrad (blur = height error x angle)")
    # detector
    pixel_size_nm: float = pydantic.Field(default=0.5, gt=0, description="specimen pixel (voxel) size, nm")
    dose_e_per_A2: float = pydantic.Field(
        default=40.0, ge=0, description="electron dose per frame (tiltseries), electrons per square angstrom")
    beam_current_pA: float = pydantic.Field(
        default=60.0, ge=0, description="probe current (serve), picoampere (paper Methods: 60 pA); reported as "
        "the screen current; with the beam unblanked it is spread over the scanned field")
    dose_rate_e_per_A2_s: float | None = pydantic.Field(
        default=None, ge=0, description="dose rate with the beam unblanked (serve), e/A^2 per second "
        "(unset: the probe current over the scanned field)")
    dwell_time_s: float = pydantic.Field(default=1e-4, gt=0, description="initial STEM dwell time, seconds")
    noise: Literal["none", "poisson"] = pydantic.Field(default="poisson", description="shot noise model")
    haadf_efficiency: float = pydantic.Field(
        default=0.02, gt=0,
        description="HAADF-scattered fraction of the beam per unit projected mass, 1/voxel (Au = 1 per voxel)")
    read_noise: float = pydantic.Field(default=0.0, ge=0, description="Gaussian read noise std, counts (0: off)")
    drift_px_per_frame: float = pydantic.Field(
        default=0.0, ge=0, description="specimen drift random-walk step std, pixels per frame (0: off)")
    scan_jitter: float = pydantic.Field(
        default=0.0, ge=0, description="scan distortion: std of the per-frame affine matrix deviation (0: off)")
    shadow_start_deg: float = pydantic.Field(
        default=60.0, ge=0, le=90, description="tilt beyond which the holder shadows the HAADF detector, degrees")
    shadow_strength: float = pydantic.Field(
        default=0.0, ge=0, le=1, description="fraction of HAADF signal lost at 90 deg tilt (0: off)")
    # tilt series (tiltseries)
    count: int = pydantic.Field(default=100, ge=1, description="frames in a synthetic session")
    min_deg: MinTiltDeg
    max_deg: MaxTiltDeg
    # server (serve)
    host: str = pydantic.Field(default="127.0.0.1", description="address the bridge server binds")
    port: int = pydantic.Field(default=8080, ge=0, le=65535, description="TCP port of the bridge server (0: any)")
    replay_window: int = pydantic.Field(
        default=8, ge=1, description="replay: upcoming unused recorded frames an exposure chooses from, frames")

    @pydantic.model_validator(mode="after")
    def _ranges(self) -> SimSettings:
        if not self.alpha_min_deg < 0 < self.alpha_max_deg:
            raise ValueError(f"alpha limits must straddle 0 deg; got {self.alpha_min_deg}..{self.alpha_max_deg}")
        return self
