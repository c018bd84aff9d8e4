"""Specimen tracking math: cross-correlation shift, cosine stretch, eucentric-offset fit and prediction (pure).

Conventions: images are (ny, nx) with x along columns, perpendicular to the tilt axis (rows, y, run
along it); shifts are ``(x, y)`` pairs in pixels or nanometres; a positive shift means the content of
``image`` sits at larger x/y than in ``reference``. Angles in degrees.

The eucentric model (SerialEM's "eucentricity from tilt"): a specimen at height ``z`` above the tilt
axis appears displaced by ``x0 + z sin(alpha)`` along x; y drifts but does not depend on the tilt.
The tracker (:class:`Tracker`) keeps, per frame, the measured position of the specimen relative to
frame one and the correction that was in effect; the uncorrected displacement ``position - correction``
is what the model is fitted to, and the correction for the next angle is minus its prediction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class ShiftEstimate:
    """A measured shift of ``image`` relative to ``reference``.

    Attributes
    ----------
    x_px, y_px
        Shift, pixels (sub-pixel).
    peak_quality
        Normalised cross-correlation at the peak, in [-1, 1]: about 1 for the same content, near 0 for
        unrelated images (a lost specimen).
    """

    x_px: float
    y_px: float
    peak_quality: float


EDGE_FRACTION = 0.125  # of each side tapered to zero (flat in the middle: no pull towards zero shift)


def _edge_taper(n: int) -> np.ndarray:
    """1 in the middle, a raised cosine to 0 over the outer ``EDGE_FRACTION`` of ``n`` samples (Tukey)."""
    ramp = max(int(round(EDGE_FRACTION * n)), 1)
    window = np.ones(n)
    rise = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp)
    window[:ramp] = rise
    window[n - ramp:] = rise[::-1]
    return window


def _prepared(image: np.ndarray) -> np.ndarray:
    """Mean-free, edge-tapered float64 copy (the frame edges do not correlate)."""
    image = np.asarray(image, dtype=np.float64)
    window = np.outer(_edge_taper(image.shape[0]), _edge_taper(image.shape[1]))
    tapered = (image - np.median(image)) * window
    return tapered - tapered.mean()


_OFFSETS = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)], dtype=np.float64)
_DESIGN = np.stack([np.ones(9), _OFFSETS[:, 1], _OFFSETS[:, 0], _OFFSETS[:, 1] ** 2, _OFFSETS[:, 0] ** 2,
                    _OFFSETS[:, 0] * _OFFSETS[:, 1]], axis=1)


def _peak_offset(patch: np.ndarray) -> tuple[float, float]:
    """Sub-pixel peak (dx, dy) of a 3 x 3 patch centred on its maximum.

    A 2-D quadratic (with the xy term, so skewed peaks are not biased) is fitted to the patch, or to its
    logarithm when every value is positive (exact for Gaussian peaks); its vertex is the peak, clamped to
    one pixel. (0, 0) when the fit has no maximum.
    """
    values = patch.reshape(9)
    if values.min() > 0:
        values = np.log(values)
    _, b, c, d, e, g = np.linalg.lstsq(_DESIGN, values, rcond=None)[0]
    hessian = np.array([[2 * d, g], [g, 2 * e]])
    if np.linalg.det(hessian) <= 0 or hessian[0, 0] >= 0:
        return 0.0, 0.0
    dx, dy = np.linalg.solve(hessian, [-b, -c])
    return float(np.clip(dx, -1.0, 1.0)), float(np.clip(dy, -1.0, 1.0))


def cross_correlation_shift(reference: np.ndarray, image: np.ndarray,
                            max_shift_px: float | None = None) -> ShiftEstimate:
    """Shift of ``image`` relative to ``reference`` from the peak of their cross-correlation.

    Parameters
    ----------
    reference, image
        Same shape (ny, nx), any real dtype.
    max_shift_px
        Only peaks within this distance of zero are considered, pixels (None: up to half the frame).

    Returns
    -------
    ShiftEstimate
        Sub-pixel shift (a 2-D quadratic or Gaussian through the peak's 3 x 3 neighbourhood) and peak
        quality.
    """
    if reference.shape != image.shape or reference.ndim != 2:
        raise ValueError(f"reference {reference.shape} and image {image.shape} must be the same 2-D shape")
    a, b = _prepared(reference), _prepared(image)
    norm = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    corr = np.fft.ifft2(np.conj(np.fft.fft2(a)) * np.fft.fft2(b)).real
    corr = np.fft.fftshift(corr)
    ny, nx = corr.shape
    cy, cx = ny // 2, nx // 2
    if max_shift_px is not None:
        yy, xx = np.mgrid[0:ny, 0:nx]
        corr = np.where((yy - cy) ** 2 + (xx - cx) ** 2 <= max_shift_px ** 2, corr, -np.inf)
    py, px = np.unravel_index(int(np.argmax(corr)), corr.shape)
    peak = float(corr[py, px])

    patch = corr[np.ix_([(py - 1) % ny, py, (py + 1) % ny], [(px - 1) % nx, px, (px + 1) % nx])]
    dx, dy = _peak_offset(np.where(np.isfinite(patch), patch, peak))
    quality = peak / norm if norm > 0 else 0.0
    return ShiftEstimate(x_px=float(px - cx + dx), y_px=float(py - cy + dy), peak_quality=float(quality))


def specimen_centre_x_px(image: np.ndarray) -> float:
    """x (column) of the specimen's centre: the centroid of ``|image - median|`` (bright or dark specimens), px."""
    weights = np.abs(np.asarray(image, dtype=np.float64) - np.median(image)).sum(axis=0)
    total = float(weights.sum())
    return float((weights * np.arange(weights.size)).sum() / total) if total > 0 else (weights.size - 1) / 2.0


def cosine_stretch(reference: np.ndarray, reference_alpha_deg: float, alpha_deg: float,
                   pivot_x_px: float | None = None) -> np.ndarray:
    """The reference as it would look at ``alpha_deg``: x stretched by cos(alpha)/cos(reference) about a pivot.

    A flat specimen's extent perpendicular to the tilt axis scales with cos(alpha) about its own centre;
    SerialEM stretches its previous image the same way before correlating.

    Parameters
    ----------
    reference
        (ny, nx) image taken at ``reference_alpha_deg`` degrees.
    pivot_x_px
        Column that stays put, pixels (None: the frame centre); pass the specimen's centre
        (:func:`specimen_centre_x_px`) so that a specimen off the centre is not moved by the stretch.

    Returns
    -------
    np.ndarray
        float64 (ny, nx); what is stretched in from outside is the reference's median.
    """
    ratio = math.cos(math.radians(alpha_deg)) / math.cos(math.radians(reference_alpha_deg))
    centre = (np.array(reference.shape, dtype=np.float64) - 1.0) / 2.0
    if pivot_x_px is not None:
        centre[1] = pivot_x_px
    matrix = np.diag([1.0, 1.0 / ratio])  # output (y, x) samples input at (y, pivot + (x - pivot) / ratio)
    offset = centre - matrix @ centre
    return ndimage.affine_transform(np.asarray(reference, dtype=np.float64), matrix, offset=offset, order=1,
                                    mode="constant", cval=float(np.median(reference)))


@dataclass(frozen=True)
class EucentricFit:
    """``x(alpha) = x0_nm + z_nm sin(alpha)``; y is its mean ``y0_nm`` (tilt does not move y)."""

    x0_nm: float
    z_nm: float
    y0_nm: float

    def predict_nm(self, alpha_deg: float) -> tuple[float, float]:
        """Predicted uncorrected displacement (x, y) at ``alpha_deg``, nanometres."""
        return self.x0_nm + self.z_nm * math.sin(math.radians(alpha_deg)), self.y0_nm


def fit_eucentric(alpha_deg: np.ndarray, x_nm: np.ndarray, y_nm: np.ndarray,
                  min_sin_spread: float = 0.2) -> EucentricFit:
    """Least-squares fit of ``x = x0 + z sin(alpha)`` (and ``y = y0``) to displacements measured at angles.

    Parameters
    ----------
    alpha_deg, x_nm, y_nm
        Angles (degrees) and displacements (nanometres), shape (n,), n >= 1.
    min_sin_spread
        Below this range of sin(alpha) the height is not determined: ``z = 0`` and x0 is the mean.

    Returns
    -------
    EucentricFit
    """
    alpha_deg, x_nm, y_nm = (np.asarray(v, dtype=np.float64) for v in (alpha_deg, x_nm, y_nm))
    if alpha_deg.size == 0:
        raise ValueError("fit_eucentric needs at least one measurement")
    sines = np.sin(np.radians(alpha_deg))
    if alpha_deg.size < 2 or float(np.ptp(sines)) < min_sin_spread:
        return EucentricFit(x0_nm=float(x_nm.mean()), z_nm=0.0, y0_nm=float(y_nm.mean()))
    design = np.stack([np.ones_like(sines), sines], axis=1)
    (x0, z), *_ = np.linalg.lstsq(design, x_nm, rcond=None)
    return EucentricFit(x0_nm=float(x0), z_nm=float(z), y0_nm=float(y_nm.mean()))


@dataclass(frozen=True)
class Observation:
    """One tracked frame: its index, angle (deg), frame, measured position of the specimen relative to the
    first frame (x, y px), the correction in effect (x, y nm, image shift plus stage x/y moved) and whether
    the measurement is trusted."""

    index: int
    alpha_deg: float
    frame: np.ndarray
    position_px: tuple[float, float]
    correction_nm: tuple[float, float]
    trusted: bool


@dataclass(frozen=True)
class Measurement:
    """What :meth:`Tracker.measure` found for one frame.

    Attributes
    ----------
    position_px
        Specimen position relative to the first tracked frame (x, y), pixels: shift the frame by minus
        this to align it.
    reference
        Index of the frame it was measured against (None: the first frame or the model's reprojection).
    peak_quality
        Normalised cross-correlation peak (1 for the first frame).
    lost
        The peak was below the tracker's threshold: the position is not trusted.
    """

    position_px: tuple[float, float]
    reference: int | None
    peak_quality: float
    lost: bool


@dataclass
class Tracker:
    """Keeps the specimen put: measures each recorded frame, fits the eucentric offset, predicts corrections.

    Parameters
    ----------
    pixel_size_nm
        Frame pixel size at the specimen, nanometres.
    lost_quality
        Peaks below this normalised correlation mark the specimen as lost (the frame is not used).
    max_shift_px
        Largest shift searched, pixels (None: half the frame).
    """

    pixel_size_nm: float
    lost_quality: float = 0.3
    max_shift_px: float | None = None
    observations: list[Observation] = field(default_factory=list)

    def measure(self, index: int, alpha_deg: float, frame: np.ndarray, correction_nm: tuple[float, float],
                model_reference: np.ndarray | None = None) -> Measurement:
        """Measure ``frame`` (recorded at ``alpha_deg`` with ``correction_nm`` applied) and remember it.

        ``model_reference`` is the live model's reprojection at ``alpha_deg`` (aligned frames: the specimen
        at position 0); without it the trusted frame nearest in angle, cosine-stretched, is the reference.
        """
        frame = np.asarray(frame, dtype=np.float64)
        trusted = [o for o in self.observations if o.trusted and o.frame.shape == frame.shape]
        if not trusted and model_reference is None:
            measurement = Measurement(position_px=(0.0, 0.0), reference=None, peak_quality=1.0, lost=False)
        elif model_reference is not None and model_reference.shape == frame.shape:
            found = cross_correlation_shift(model_reference, frame, self.max_shift_px)
            measurement = Measurement((found.x_px, found.y_px), None, found.peak_quality,
                                      found.peak_quality < self.lost_quality)
        else:
            nearest = min(trusted, key=lambda o: (abs(o.alpha_deg - alpha_deg), -o.index))
            stretched = cosine_stretch(nearest.frame, nearest.alpha_deg, alpha_deg,
                                       specimen_centre_x_px(nearest.frame))
            found = cross_correlation_shift(stretched, frame, self.max_shift_px)
            measurement = Measurement((nearest.position_px[0] + found.x_px, nearest.position_px[1] + found.y_px),
                                      nearest.index, found.peak_quality, found.peak_quality < self.lost_quality)
        self.observations.append(Observation(index, float(alpha_deg), frame, measurement.position_px,
                                             (float(correction_nm[0]), float(correction_nm[1])),
                                             not measurement.lost))
        return measurement

    def fit(self) -> EucentricFit | None:
        """The eucentric fit of the uncorrected displacements of the trusted frames (None before any)."""
        trusted = [o for o in self.observations if o.trusted]
        if not trusted:
            return None
        alpha = np.array([o.alpha_deg for o in trusted])
        x_nm = np.array([o.position_px[0] * self.pixel_size_nm - o.correction_nm[0] for o in trusted])
        y_nm = np.array([o.position_px[1] * self.pixel_size_nm - o.correction_nm[1] for o in trusted])
        return fit_eucentric(alpha, x_nm, y_nm)

    def correction_for(self, alpha_deg: float) -> tuple[float, float] | None:
        """Correction (x, y) nm that puts the specimen back at its first-frame position at ``alpha_deg``.

        Minus the fitted displacement at ``alpha_deg`` plus the last trusted frame's residual (drift is a
        random walk: the latest residual is its best prediction). None before the first trusted frame.
        """
        fit = self.fit()
        if fit is None:
            return None
        last = next(o for o in reversed(self.observations) if o.trusted)
        last_x, last_y = fit.predict_nm(last.alpha_deg)
        residual_x = last.position_px[0] * self.pixel_size_nm - last.correction_nm[0] - last_x
        residual_y = last.position_px[1] * self.pixel_size_nm - last.correction_nm[1] - last_y
        x_nm, y_nm = fit.predict_nm(alpha_deg)
        return -(x_nm + residual_x), -(y_nm + residual_y)
