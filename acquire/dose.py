"""Electron dose per frame and cumulative, e/A^2, from beam current, dwell (or exposure) time and pixel size.

STEM (the paper's Methods): each scan pixel receives ``I * t_dwell / e`` electrons over one pixel's
area, so the areal dose of a frame is ``I * t_dwell / e / pixel_area`` whatever the frame size. With
60 pA, 1.6 us and 0.44 nm pixels this is 30.9 e/A^2 (the paper: 30 e/A^2 per frame, nanostar); with
0.31 nm pixels 62.4 e/A^2 (paper: 62, nanocube).

Camera (TEM): the beam current is assumed spread evenly over the recorded field ``ny*nx`` pixels, so a
frame receives ``I * t_exposure / e / (ny * nx * pixel_area)`` (a beam wider than the field gives less).
"""

from __future__ import annotations

from collections.abc import Iterable

from tiltstream.errors import UserError

ELEMENTARY_CHARGE_C = 1.602176634e-19  # exact (SI 2019)
A2_PER_NM2 = 100.0


def stem_dose_e_per_A2(beam_current_pA: float, dwell_time_s: float, pixel_size_nm: float) -> float:
    """Areal dose of one STEM frame, e/A^2: ``I * t_dwell / e / pixel_area``.

    Parameters
    ----------
    beam_current_pA
        Probe current, picoampere.
    dwell_time_s
        Dwell time per scan pixel, seconds.
    pixel_size_nm
        Scan pixel size (step), nanometres.
    """
    _check(beam_current_pA, dwell_time_s, pixel_size_nm)
    electrons_per_pixel = beam_current_pA * 1e-12 * dwell_time_s / ELEMENTARY_CHARGE_C
    return electrons_per_pixel / (pixel_size_nm ** 2 * A2_PER_NM2)


def camera_dose_e_per_A2(beam_current_pA: float, exposure_s: float, pixel_size_nm: float,
                         shape: tuple[int, int]) -> float:
    """Areal dose of one camera frame, e/A^2, with the current spread over the field of ``shape`` pixels.

    Parameters
    ----------
    beam_current_pA
        Beam current, picoampere.
    exposure_s
        Exposure time, seconds.
    pixel_size_nm
        Pixel size at the specimen, nanometres.
    shape
        Frame shape (ny, nx), pixels.
    """
    _check(beam_current_pA, exposure_s, pixel_size_nm)
    electrons = beam_current_pA * 1e-12 * exposure_s / ELEMENTARY_CHARGE_C
    return electrons / (shape[0] * shape[1] * pixel_size_nm ** 2 * A2_PER_NM2)


def cumulative_dose_e_per_A2(doses_e_per_A2: Iterable[float]) -> float:
    """Total dose of a series of frames, e/A^2."""
    return float(sum(doses_e_per_A2))


def _check(current_pA: float, time_s: float, pixel_size_nm: float) -> None:
    if current_pA < 0 or time_s < 0:
        raise UserError(f"beam current ({current_pA} pA) and dwell/exposure time ({time_s} s) must be >= 0")
    if pixel_size_nm <= 0:
        raise UserError(f"pixel size must be > 0 nm; got {pixel_size_nm}")
