"""Held-out scoring of any reconstruction of a static tilt series: the split, the gain fit and the error.

Frames at every ``every``-th position (in angle order) are held out of training; a method's reprojections
at the held-out angles are compared with the measured frames after one scale and offset fitted by least
squares on the *training* frames only (reprojection vs measured), so a method is not rewarded for matching
the held-out frames' intensity. The no-reconstruction floor predicts a held-out frame as the mean of its two
neighbouring training frames in angle. The error is :func:`tiltstream.recon.metrics.reprojection_error_percent`
of the held-out frames pooled (RMS error over all their pixels / RMS of the measured held-out frames).

:func:`registered_heldout_nrmse` is the same error after each measured held-out frame is registered to the
method's own prediction with an affine (as projection matching registers a frame to a reprojection,
:mod:`tiltstream.recon.projection_matching`): a check that a method's score does not come from how the
held-out frames were aligned during preparation (every method gets the same six parameters per frame).
"""

from __future__ import annotations

import numpy as np

from tiltstream.errors import UserError
from tiltstream.recon.metrics import reprojection_error_percent


def split_positions(count: int, heldout_every: int = 8, first: int = 3,
                    train_every: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out positions (in angle order) of a series of ``count`` frames.

    Held out: ``first, first + heldout_every, ...``. Training: ``0, train_every, 2 train_every, ...`` less
    the held-out ones (``train_every = 4``: a sparse subset, scored on the same held-out frames).

    Returns
    -------
    training, heldout : np.ndarray
        Sorted int positions.
    """
    if heldout_every < 2 or not 0 <= first < heldout_every or train_every < 1:
        raise UserError(f"held-out split: heldout_every = {heldout_every} must be >= 2, first = {first} in "
                        f"0..heldout_every-1 and train_every = {train_every} >= 1")
    heldout = np.arange(first, count, heldout_every)
    return np.setdiff1d(np.arange(0, count, train_every), heldout), heldout


def fit_gain(reprojections: np.ndarray, measured: np.ndarray) -> tuple[float, float]:
    """Scale and offset ``(a, b)`` minimising ``sum (a * reprojections + b - measured)^2`` over all pixels.

    Parameters
    ----------
    reprojections, measured
        Training frames, (n, ny, nx) each, same units.
    """
    if reprojections.shape != measured.shape:
        raise UserError(f"reprojections {reprojections.shape} and frames {measured.shape} differ in shape")
    design = np.stack([reprojections.ravel(), np.ones(reprojections.size)], axis=1).astype(np.float64)
    (scale, offset), *_ = np.linalg.lstsq(design, measured.ravel().astype(np.float64), rcond=None)
    return float(scale), float(offset)


def heldout_nrmse(train_reprojections: np.ndarray, train_measured: np.ndarray,
                  heldout_reprojections: np.ndarray, heldout_measured: np.ndarray) -> float:
    """Held-out error (a fraction, 0.03 = 3 %) after the training frames' :func:`fit_gain`.

    All arrays are (n, ny, nx); the error is pooled over the held-out frames.
    """
    scale, offset = fit_gain(train_reprojections, train_measured)
    predicted = scale * heldout_reprojections.astype(np.float64) + offset
    return reprojection_error_percent(heldout_measured.astype(np.float64), predicted) / 100.0


def registered_heldout_nrmse(train_reprojections: np.ndarray, train_measured: np.ndarray,
                             heldout_reprojections: np.ndarray, heldout_measured: np.ndarray) -> float:
    """:func:`heldout_nrmse` after each measured held-out frame is registered to its prediction (the training
    frames' gain applied) as a projection-matching round registers a frame
    (:func:`tiltstream.recon.projection_matching.register_frame`), then resampled once (cubic)."""
    from scipy import ndimage

    from tiltstream.recon.projection_matching import register_frame, warp

    scale, offset = fit_gain(train_reprojections, train_measured)
    predicted = scale * heldout_reprojections.astype(np.float64) + offset
    registered = []
    for measured, target in zip(heldout_measured.astype(np.float64), predicted):
        coefficients = ndimage.spline_filter(measured, order=3)
        matrix, translation = register_frame(coefficients, measured, target, np.eye(2), np.zeros(2))
        registered.append(warp(coefficients, matrix, translation, prefiltered=True))
    return reprojection_error_percent(np.stack(registered), predicted) / 100.0


def neighbour_floor(frames: np.ndarray, angles_deg: np.ndarray, training: np.ndarray,
                    heldout: np.ndarray, linear: bool = False) -> np.ndarray:
    """Each held-out frame predicted as the mean of the nearest training frames below and above it in angle
    (``linear``: weighted linearly in angle instead, a stricter floor when the two are unequally far).

    Parameters
    ----------
    frames
        All frames (n, ny, nx); ``training`` and ``heldout`` index them.
    angles_deg
        Angle of each frame, degrees (n,).

    Returns
    -------
    np.ndarray
        (len(heldout), ny, nx) float64.
    """
    train_angles = angles_deg[training]
    out = []
    for index in heldout:
        below = training[train_angles < angles_deg[index]]
        above = training[train_angles > angles_deg[index]]
        if not len(below) or not len(above):
            raise UserError(f"held-out frame {int(index)} at {angles_deg[index]:.1f} deg has no training frame on "
                            "one side in angle; hold out frames inside the range")
        lower = below[np.argmax(angles_deg[below])]
        upper = above[np.argmin(angles_deg[above])]
        weight = 0.5
        if linear:
            weight = (angles_deg[upper] - angles_deg[index]) / (angles_deg[upper] - angles_deg[lower])
        out.append(weight * frames[lower].astype(np.float64) + (1.0 - weight) * frames[upper])
    return np.stack(out)
