"""Synthetic recorded sessions: a dynamic phantom projected along a GRS tilt series, with its ground truth.

Frame ``i`` is the specimen after ``i`` deformation steps (phantom step ``i``) projected at the GRS angle
of index ``i`` (Eq. 1, ``min_deg..max_deg``), taken at ``time_s = i * seconds_per_step``, and passed
through the detector model (:mod:`tiltstream.simulator.detector`). The session follows docs/design.md 5 and carries
``ground_truth.tif`` (T, Z, Y, X) with ``ground_truth_times.csv`` (volume ``i`` at frame ``i``'s time).
A ``static`` session repeats the phantom's initial specimen at every time; ``gain_drift`` multiplies
frame ``i``'s projection by an intensity scale going linearly from its first to its second value over the
series (illumination or HAADF detector drift, which is not a change of the specimen).
With ``noise="none"`` and no other detector effect, frame ``i`` equals
``tiltstream.recon.projector.project_volume(ground_truth[i], angle_deg[i])``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from tiltstream.errors import UserError
from tiltstream.acquire.scheme import grs_angle_deg
from tiltstream.acquire.session import SessionSettings, SessionWriter, write_ground_truth
from tiltstream.recon.device import resolve_device
from tiltstream.recon.projector import ParallelProjector
from tiltstream.simulator.detector import DetectorConfig, DetectorModel
from tiltstream.simulator.phantoms import check_phantom_args, make_phantom


def project_at(volume: torch.Tensor, angle_deg: float) -> np.ndarray:
    """Frame (ny, nx) float32 of a (Z, Y, X) torch volume at ``angle_deg`` (tiltstream.recon.projector geometry)."""
    frame = ParallelProjector([angle_deg], tuple(volume.shape))(volume)[0]
    return frame.cpu().numpy().astype(np.float32)


def write_synthetic_session(out: Path | str, phantom: str, size: int, count: int,
                            noise: str = "poisson", dose_e_per_A2: float = 40.0, seed: int = 0,
                            min_deg: float = -70.0, max_deg: float = 70.0, *,
                            seconds_per_step: float = 21.0, detector: DetectorConfig | None = None,
                            device: str = "cpu", static: bool = False,
                            gain_drift: tuple[float, float] = (1.0, 1.0),
                            progress: Callable[[int, int], None] | None = None) -> Path:
    """Write a synthetic session (frames, records, ground truth) and return its directory.

    Parameters
    ----------
    out
        New (or empty) session directory.
    phantom, size, count
        Specimen name, grid edge (voxels) and number of frames (= phantom steps).
    noise
        ``"poisson"`` or ``"none"``; overrides ``detector.noise``.
    dose_e_per_A2
        Dose per frame, e/A^2 (>= 0).
    seed
        Seed of the phantom and of the detector noise.
    min_deg, max_deg
        GRS tilt range, degrees.
    seconds_per_step
        Time between frames (and phantom steps), seconds.
    detector
        Detector effects (pixel size, drift, jitter, shadowing, read noise); defaults: all off.
    device
        ``auto``, ``cpu`` or ``cuda`` for phantom generation and projection.
    static
        Repeat the phantom's initial specimen at every time (a specimen that does not change).
    gain_drift
        Intensity scale of the first and of the last frame (linear in between; (1, 1) = none), e.g.
        (0.971, 1.037) as measured on a real HAADF series.
    progress
        Called as ``progress(done, total)`` after each phantom step and each frame.
    """
    check_phantom_args(phantom, size, count)
    if noise not in ("none", "poisson"):
        raise UserError(f"noise {noise!r} is not known; allowed: none, poisson")
    if dose_e_per_A2 < 0:
        raise UserError(f"dose {dose_e_per_A2} e/A^2 is negative; a dose must be >= 0")
    if min(gain_drift) <= 0:
        raise UserError(f"gain drift {tuple(gain_drift)} must be positive intensity scales")
    if not min_deg < max_deg:
        raise UserError(f"tilt range {min_deg}..{max_deg} deg is empty; min must be below max")
    config = DetectorConfig(**{**(detector or DetectorConfig()).__dict__, "noise": noise})
    torch_device = resolve_device(device)
    steps = 1 if static else count
    total = steps + count
    volumes = make_phantom(phantom, size, steps, seed=seed, device=torch_device,
                           progress=(lambda done: progress(done, total)) if progress else None)
    if static:
        volumes = np.repeat(volumes, count, axis=0)
    gains = np.linspace(gain_drift[0], gain_drift[1], count) if count > 1 else np.array([gain_drift[0]])
    settings = SessionSettings(
        scheme={"kind": "grs", "min_deg": min_deg, "max_deg": max_deg, "count": count, "start_index": 0},
        microscope={"name": "simulated", "phantom": phantom, "size": size, "seed": seed,
                    "seconds_per_step": seconds_per_step,
                    **({"static": True} if static else {}),
                    **({"gain_drift": [float(g) for g in gain_drift]} if tuple(gain_drift) != (1.0, 1.0) else {})},
        detector={"name": "HAADF", **config.__dict__, "dose_e_per_A2": dose_e_per_A2},
        pixel_size_nm=config.pixel_size_nm,
        tilt_axis_deg=0.0, tilt_axis_from="simulator: frames drawn with the tilt axis along y (docs/design.md 2)",
    )
    writer = SessionWriter.create(out, settings)
    model = DetectorModel(config, seed=seed + 1)
    times_s = np.arange(count, dtype=np.float64) * seconds_per_step
    for index in range(count):
        angle_deg = grs_angle_deg(index, min_deg, max_deg)
        volume = torch.from_numpy(volumes[index]).to(torch_device)
        frame = model.render(project_at(volume, angle_deg) * np.float32(gains[index]), angle_deg, dose_e_per_A2)
        writer.append(frame, index=index, target_deg=angle_deg, angle_deg=angle_deg,
                      time_s=float(times_s[index]), exposure_s=0.0, dose_e_per_A2=dose_e_per_A2)
        if progress:
            progress(steps + index + 1, total)
    write_ground_truth(writer.path, volumes, times_s)
    return writer.path
