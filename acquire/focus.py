"""Focus between frames (pure): the tilt-model defocus from the fitted eucentric height, and a sharpness sweep.

``tilt-model``: the probe defocus follows the height change ``z (cos(alpha) - 1)`` of a specimen ``z``
above the tilt axis (no exposure). ``measure``: every N frames :data:`SWEEP_STEPS` extra scans around
the tilt-model value, the sharpest (:func:`best_defocus_m`) carried forward; its cost in dose and time
is counted in the frame it precedes. The model and its cost: docs/method.md 11.
"""

from __future__ import annotations

import math

import numpy as np

SWEEP_STEPS = 5  # scans per sharpness sweep


def tilt_model_defocus_m(z_nm: float, alpha_deg: float, start_defocus_m: float) -> float:
    """Probe defocus that follows the height change ``z (cos(alpha) - 1)`` of a specimen ``z_nm`` above the axis, metres."""
    return float(start_defocus_m + z_nm * 1e-9 * (math.cos(math.radians(alpha_deg)) - 1.0))


def sharpness(image: np.ndarray) -> float:
    """Normalised gradient energy: mean squared gradient over the variance (larger is sharper; 0 for flat)."""
    image = np.asarray(image, dtype=np.float64)
    variance = float(image.var())
    if variance <= 0:
        return 0.0
    gy, gx = np.gradient(image)
    return float(np.mean(gx * gx + gy * gy) / variance)


def sweep_defocus_m(centre_m: float, step_m: float, steps: int = SWEEP_STEPS) -> np.ndarray:
    """Defocus values of one sweep, ``steps`` values ``step_m`` apart centred on ``centre_m``, metres, shape (steps,)."""
    return centre_m + step_m * (np.arange(steps) - (steps - 1) / 2.0)


def best_defocus_m(defocus_m: np.ndarray, sharpness_values: np.ndarray) -> float:
    """Defocus of the sharpest image: the vertex of a parabola through the best value and its neighbours
    (the best sampled value at either end of the sweep), metres."""
    defocus_m = np.asarray(defocus_m, dtype=np.float64)
    values = np.asarray(sharpness_values, dtype=np.float64)
    best = int(np.argmax(values))
    if best == 0 or best == len(values) - 1:
        return float(defocus_m[best])
    left, centre, right = values[best - 1], values[best], values[best + 1]
    curvature = left - 2.0 * centre + right
    step_m = float(defocus_m[best + 1] - defocus_m[best])
    offset = 0.0 if curvature >= 0 else 0.5 * (left - right) / curvature
    return float(defocus_m[best] + offset * step_m)
