"""Image registration: the shift between two images from the peak of their cross-correlation.

The one registration of the project: acquisition's specimen tracking (:mod:`tiltstream.acquire.tracking`)
and the reconstruction's alignment preprocessing (:mod:`tiltstream.recon.preprocess`) both call
:func:`register`. Numpy and scipy only, since acquisition runs on the core install (no scikit-image).
Shifts are in numpy's axis order, ``(y, x)`` = (rows, columns), pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EDGE_FRACTION = 0.125  # of each side tapered to zero (flat in the middle: no pull towards zero shift)


@dataclass(frozen=True)
class Registration:
    """The shift of an image relative to a reference.

    Attributes
    ----------
    shift_px
        ``(y, x)``, pixels (sub-pixel): where the image's content sits relative to the reference's
        (positive: at larger row/column). Shifting the image by minus it registers it to the reference.
    peak_quality
        Normalised cross-correlation at the peak, in [-1, 1]: about 1 for the same content, near 0 for
        unrelated images (a lost specimen).
    """

    shift_px: tuple[float, float]
    peak_quality: float


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
    """Sub-pixel peak (dy, dx) of a 3 x 3 patch centred on its maximum.

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
    return float(np.clip(dy, -1.0, 1.0)), float(np.clip(dx, -1.0, 1.0))


def register(reference: np.ndarray, image: np.ndarray, max_shift_px: float | None = None) -> Registration:
    """Shift of ``image`` relative to ``reference`` from the peak of their cross-correlation.

    Both images are made mean-free (median) and edge-tapered before they are correlated; the peak is
    refined to sub-pixel precision by a 2-D quadratic (or Gaussian) through its 3 x 3 neighbourhood.

    Parameters
    ----------
    reference, image
        Same shape (ny, nx), any real dtype.
    max_shift_px
        Only peaks within this distance of zero are considered, pixels (None: up to half the frame).

    Returns
    -------
    Registration
        ``shift_px`` (y, x) and the peak quality.
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
    dy, dx = _peak_offset(np.where(np.isfinite(patch), patch, peak))
    quality = peak / norm if norm > 0 else 0.0
    return Registration(shift_px=(float(py - cy + dy), float(px - cx + dx)), peak_quality=float(quality))
