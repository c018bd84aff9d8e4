"""Checks each recorded frame against the dose recorded for it; warns once per kind of disagreement.

Two checks, each said once per run with the numbers: a mostly empty frame (more than
:data:`EMPTY_FRACTION` of its pixels exactly zero), and the dose the frame's shot noise implies against
the recorded one (beyond :data:`DOSE_RATIO_LIMIT` either way; only frames of whole detected electrons are
judged). How the dose is inferred: docs/method.md 11; why the threshold: docs/benchmarks/defaults.md.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

EMPTY_FRACTION = 0.95
DOSE_RATIO_LIMIT = 2.0
A2_PER_NM2 = 100.0


def detected_electron_step(frame: np.ndarray) -> float | None:
    """The frame value of one detected electron ``q``, when every value is a whole multiple of it, else None.

    ``q`` is the smallest gap between distinct positive values (or the smallest value); it is accepted
    when all positive values are within 1 % of a multiple of it.
    """
    values = np.unique(np.asarray(frame, dtype=np.float64))
    values = values[values > 0]
    if values.size < 2:
        return None
    gaps = np.diff(values)
    step = float(min(values[0], gaps.min()))
    multiples = values / step
    if step <= 0 or np.abs(multiples - np.round(multiples)).max() > 0.01:
        return None
    return step


def implied_dose_e_per_A2(frame: np.ndarray, fraction_per_unit: float, pixel_size_nm: float) -> float | None:
    """The areal dose the frame's shot noise implies, e/A^2 (None when it cannot be read off the frame).

    Parameters
    ----------
    frame
        (ny, nx) gain-normalised frame of a counting detector.
    fraction_per_unit
        Fraction of the incident electrons a pixel of frame value 1 detects.
    pixel_size_nm
        Frame pixel size, nanometres.
    """
    step = detected_electron_step(frame)
    if step is None:
        return None
    electrons_per_pixel = 1.0 / (step * fraction_per_unit)
    return electrons_per_pixel / (pixel_size_nm ** 2 * A2_PER_NM2)


class FrameCheck:
    """Judges each frame of a run; each kind of warning is given once.

    Parameters
    ----------
    pixel_size_nm
        Frame pixel size, nanometres.
    fraction_per_unit
        The detector's detected fraction per unit of frame value (None: the dose is not judged).
    """

    def __init__(self, pixel_size_nm: float, fraction_per_unit: float | None) -> None:
        self.pixel_size_nm = float(pixel_size_nm)
        self.fraction_per_unit = fraction_per_unit
        self.warned: set[str] = set()

    def check(self, index: int, frame: np.ndarray, dose_e_per_A2: float) -> None:
        """Judge frame ``index`` (recorded with ``dose_e_per_A2``, its own exposure's dose)."""
        frame = np.asarray(frame)
        empty = float(np.mean(frame == 0)) if frame.size else 1.0
        if empty > EMPTY_FRACTION and "empty" not in self.warned:
            self.warned.add("empty")
            log.warning("frame %d is mostly empty: %.1f %% of its %d pixels are zero at a recorded dose of %.3g "
                        "e/A^2; a reconstruction needs more signal: raise the dwell time or the beam current",
                        index, 100.0 * empty, frame.size, dose_e_per_A2)
        if self.fraction_per_unit is None or "dose" in self.warned or dose_e_per_A2 <= 0:
            return
        implied = implied_dose_e_per_A2(frame, self.fraction_per_unit, self.pixel_size_nm)
        if implied is None:
            return
        ratio = implied / dose_e_per_A2
        if not 1.0 / DOSE_RATIO_LIMIT <= ratio <= DOSE_RATIO_LIMIT:
            self.warned.add("dose")
            log.warning("frame %d: its shot noise implies %.3g e/A^2 but %.3g e/A^2 is recorded (x%.3g); check "
                        "the beam current and the pixel size", index, implied, dose_e_per_A2, ratio)
