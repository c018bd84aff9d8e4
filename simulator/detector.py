"""STEM detector model: projected mass -> HAADF/BF frame with shot noise, read noise, drift, scan distortion, shadowing.

Frames are gain-normalised, in projected-mass units, so with every effect off a HAADF frame equals the
projection (:func:`tiltstream.recon.projector.project_volume`) exactly; BF sees the transmitted
fraction. Each effect is off at 0 and drawn from the model's own seeded generator; :func:`shadow_factor`
is the high-tilt shadowing. The model and the effects' order: docs/method.md 4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class DetectorConfig:
    """Detector effects; every strength 0 switches its effect off.

    Attributes
    ----------
    pixel_size_nm
        Frame pixel edge at the specimen, nm.
    noise
        ``"poisson"`` shot noise or ``"none"``.
    efficiency
        HAADF-scattered fraction of the beam per unit projected mass (voxel units).
    read_noise
        Gaussian read-noise standard deviation, counts.
    drift_px_per_frame
        Standard deviation of each random-walk step of the image shift, pixels per frame.
    scan_jitter
        Standard deviation of the deviation of the per-frame affine matrix from identity.
    shadow_start_deg, shadow_strength
        HAADF shadowing: beyond ``shadow_start_deg`` the signal falls smoothly to ``1 - shadow_strength``
        at 90 degrees.
    """

    pixel_size_nm: float = 0.5
    noise: str = "poisson"
    efficiency: float = 0.02
    read_noise: float = 0.0
    drift_px_per_frame: float = 0.0
    scan_jitter: float = 0.0
    shadow_start_deg: float = 60.0
    shadow_strength: float = 0.0


def electrons_per_pixel(dose_e_per_A2: float, pixel_size_nm: float) -> float:
    """Electrons hitting one pixel: dose (e/A^2) times pixel area (A^2; 1 nm = 10 A)."""
    return float(dose_e_per_A2) * (10.0 * float(pixel_size_nm)) ** 2


def shadow_factor(alpha_deg: float, start_deg: float, strength: float) -> float:
    """HAADF signal factor at tilt ``alpha_deg``: 1 up to ``start_deg``, then a smooth (squared-sine) fall
    to ``1 - strength`` at 90 degrees."""
    excess = abs(alpha_deg) - start_deg
    if strength <= 0 or excess <= 0:
        return 1.0
    ramp = min(excess / max(90.0 - start_deg, 1e-9), 1.0)
    return 1.0 - strength * math.sin(0.5 * math.pi * ramp) ** 2


class DetectorModel:
    """Turns projections into detector frames; keeps the drift state between frames.

    Parameters
    ----------
    config
        The detector's effects.
    seed
        Seed of the model's random generator (noise, drift, jitter).
    """

    def __init__(self, config: DetectorConfig, seed: int = 0) -> None:
        self.config = config
        self.rng = np.random.default_rng(seed)
        self.drift_px = np.zeros(2)

    def _geometry(self, image: np.ndarray, shift_px: tuple[float, float]) -> np.ndarray:
        cfg = self.config
        if cfg.drift_px_per_frame > 0:
            self.drift_px = self.drift_px + self.rng.normal(0.0, cfg.drift_px_per_frame, size=2)
        matrix = np.eye(2)
        if cfg.scan_jitter > 0:
            matrix = matrix + self.rng.normal(0.0, cfg.scan_jitter, size=(2, 2))
        if cfg.drift_px_per_frame <= 0 and cfg.scan_jitter <= 0 and shift_px == (0.0, 0.0):
            return image
        centre = (np.array(image.shape) - 1) / 2.0
        offset = centre - matrix @ centre - self.drift_px - np.asarray(shift_px, dtype=np.float64)
        return ndimage.affine_transform(image, matrix, offset=offset, order=1, mode="constant", cval=0.0)

    def render(self, projection: np.ndarray, alpha_deg: float, dose_e_per_A2: float,
               detector: str = "HAADF", shift_px: tuple[float, float] = (0.0, 0.0),
               blur_px: float = 0.0) -> np.ndarray:
        """One frame of the given detector.

        Parameters
        ----------
        projection
            Projected mass (ny, nx), voxel units, at the true specimen angle.
        alpha_deg
            True specimen tilt, degrees (for shadowing).
        dose_e_per_A2
            Dose of this frame, e/A^2.
        detector
            ``"HAADF"`` or ``"BF"``.
        shift_px
            Image displacement ``(dy, dx)`` on top of the drift, pixels (the content moves by +shift).
        blur_px
            Standard deviation of the probe blur, pixels (0: in focus).

        Returns
        -------
        np.ndarray
            float32 (ny, nx): HAADF in projected-mass units, BF as transmitted fraction.
        """
        cfg = self.config
        mass = self._geometry(np.asarray(projection, dtype=np.float64),
                              (float(shift_px[0]), float(shift_px[1])))
        if blur_px > 0:
            mass = ndimage.gaussian_filter(mass, sigma=float(blur_px), mode="constant", cval=0.0)
        electrons = electrons_per_pixel(dose_e_per_A2, cfg.pixel_size_nm)
        if detector == "BF":
            fraction = np.exp(-cfg.efficiency * np.clip(mass, 0.0, None))
        else:
            fraction = cfg.efficiency * np.clip(mass, 0.0, None)
            fraction = fraction * shadow_factor(alpha_deg, cfg.shadow_start_deg, cfg.shadow_strength)
        expected = electrons * fraction
        counts = expected
        if cfg.noise == "poisson":
            counts = self.rng.poisson(expected).astype(np.float64)
        if cfg.read_noise > 0:
            counts = counts + self.rng.normal(0.0, cfg.read_noise, size=counts.shape)
        if electrons <= 0:
            return np.zeros(mass.shape, dtype=np.float32)
        scale = electrons if detector == "BF" else electrons * cfg.efficiency
        return (counts / scale).astype(np.float32)
