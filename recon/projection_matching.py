"""Projection matching: the paper's self-consistent registration of every frame to a reprojection of the
current reconstruction (docs/method.md 7), with an affine per frame (translation, skew, scale).

One round: reconstruct from the currently aligned frames (non-negative SIRT of all frames for a static
series; for a dynamic one the moving-window SIRT volume at each frame's time, ``window`` frames), reproject
at each frame's angle, and register each frame to its reprojection: the translation first by subpixel
phase cross-correlation, then the full affine by least squares on the residual (scipy's ``least_squares``;
the reprojection's intensity scale and offset are fitted in closed form at every step). Every frame is
resampled once from the input (cubic spline) with its accumulated transform. Rounds stop when no
translation changes by more than ``tolerance_px`` or after ``rounds``. With ``size_px`` the rounds run on
frames resized (anti-aliased) so their larger side is ``size_px``, and the transforms are carried back to the
full size (translations scaled, the linear parts conjugated by the per-axis scale) and applied there once:
IMOD and etspy align binned frames the same way (the 256^2 needle at 128 px: 100 s instead of 644 s,
docs/benchmarks/real_data.md).

A transform maps an output pixel at centred coordinates ``r = (y, x)`` to the input at ``matrix @ r +
translation``; the translation and the deviation of the matrices from identity common to all frames are
removed after every round (a common shift or scale is not fixed by self-consistency; the axis offset is
:mod:`tiltstream.recon.tilt_axis`'s). The shift applied to a frame's content is ``shift_px = -translation``
(pixels, (dy, dx)).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage, optimize

from tiltstream.errors import UserError


@dataclass
class MatchingResult:
    """Aligned frames and what each round did.

    Attributes
    ----------
    frames
        Aligned frames (n, ny, nx) float32.
    matrices
        Linear part of each frame's transform, (n, 2, 2), in (y, x) order.
    translations_px
        Translation of each frame's transform, (n, 2) pixels (dy, dx); ``shift_px = -translations_px``.
    rounds
        Per round: ``max_change_px``, per-frame ``residual`` (relative RMS of frame - fitted reprojection) and
        ``shift_px`` (n, 2), and the matrices (n, 2, 2) as lists.
    converged
        Whether the last round changed no translation by more than the tolerance.
    """

    frames: np.ndarray
    matrices: np.ndarray
    translations_px: np.ndarray
    rounds: list[dict] = field(default_factory=list)
    converged: bool = False


def warp(frame: np.ndarray, matrix: np.ndarray, translation: np.ndarray, order: int = 3,
         prefiltered: bool = False) -> np.ndarray:
    """``frame`` resampled at ``matrix @ r + translation`` for every centred output pixel ``r`` (0 outside)."""
    centre = (np.array(frame.shape) - 1) / 2.0
    offset = centre + translation - matrix @ centre
    return ndimage.affine_transform(frame, matrix, offset, order=order, mode="constant", cval=0.0,
                                    prefilter=not prefiltered)


def _fit_residual(warped: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``target - (g * warped + b)`` with the gain and offset fitted by least squares."""
    design = np.stack([warped.ravel(), np.ones(warped.size)], axis=1)
    coef = np.linalg.lstsq(design, target.ravel(), rcond=None)[0]
    return target.ravel() - design @ coef


def register_affine(coefficients: np.ndarray, target: np.ndarray, matrix: np.ndarray,
                    translation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Affine that best maps a frame onto ``target``, refined from ``(matrix, translation)``.

    Parameters
    ----------
    coefficients
        The frame's cubic spline coefficients (``ndimage.spline_filter``), (ny, nx).
    target
        The reprojection, (ny, nx).
    """
    def residual(p: np.ndarray) -> np.ndarray:
        warped = warp(coefficients, np.eye(2) + p[:4].reshape(2, 2), p[4:], prefiltered=True)
        return _fit_residual(warped, target)

    start = np.concatenate([(matrix - np.eye(2)).ravel(), translation])
    fit = optimize.least_squares(residual, start, x_scale=np.array([0.01] * 4 + [0.5, 0.5]), diff_step=1e-3,
                                 xtol=1e-6, max_nfev=60)
    return np.eye(2) + fit.x[:4].reshape(2, 2), fit.x[4:]


def register_frame(coefficients: np.ndarray, current: np.ndarray, target: np.ndarray, matrix: np.ndarray,
                   translation: np.ndarray, affine: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A frame's transform ``(matrix, translation)`` refined so that it maps the frame onto ``target``: the
    translation by subpixel phase cross-correlation of ``current`` (the frame as the transform resamples it
    now) with ``target``, then, with ``affine``, the full affine by :func:`register_affine`.

    Parameters
    ----------
    coefficients
        The frame's cubic spline coefficients (``ndimage.spline_filter``), (ny, nx).
    current, target
        The frame resampled with ``(matrix, translation)``, and what it should match, (ny, nx) each.
    """
    from skimage.registration import phase_cross_correlation

    step, _, _ = phase_cross_correlation(target, current, upsample_factor=20, normalization=None)
    translation = translation - matrix @ step  # content moves by +step: read the input at r - matrix @ step
    if affine:
        return register_affine(coefficients, target, matrix, translation)
    return matrix, translation


def reprojections(frames: np.ndarray, angles_deg: np.ndarray, iterations: int, window: int | None,
                  device: str) -> np.ndarray:
    """Each frame's reprojection of the reconstruction from ``frames`` (static SIRT, or the moving window's
    volume at the frame's time when ``window`` is set), (n, ny, nx)."""
    from tiltstream.recon.projector import ParallelProjector, project_volume
    from tiltstream.recon.sirt import moving_window_sirt, sirt

    shape = (frames.shape[2], frames.shape[1], frames.shape[2])
    if window is None:
        volume = sirt(frames, angles_deg, shape, iterations=iterations, nonnegative=True, device=device)
        return np.asarray(ParallelProjector(angles_deg, shape)(volume))
    volumes = moving_window_sirt(frames, angles_deg, shape, window=window, iterations=iterations,
                                 nonnegative=True, device=device)
    return np.stack([project_volume(v, a) for v, a in zip(volumes, angles_deg)])


def _remove_common(matrices: np.ndarray, translations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return matrices - matrices.mean(axis=0) + np.eye(2), translations - translations.mean(axis=0)


def _round(coefficients: list[np.ndarray], aligned: np.ndarray, angles_deg: np.ndarray, matrices: np.ndarray,
           translations: np.ndarray, iterations: int, window: int | None, device: str, affine: bool
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One round: new matrices, translations and per-frame residuals before the update."""
    targets = reprojections(aligned, angles_deg, iterations, window, device)
    new_m, new_t, residuals = matrices.copy(), translations.copy(), np.empty(len(aligned))
    for i, (frame, target) in enumerate(zip(aligned, targets)):
        residuals[i] = np.linalg.norm(_fit_residual(frame, target)) / max(np.linalg.norm(target), 1e-30)
        new_m[i], new_t[i] = register_frame(coefficients[i], frame, target, matrices[i], translations[i], affine)
    return new_m, new_t, residuals


def match_projections(frames: np.ndarray, angles_deg: np.ndarray, rounds: int = 3, tolerance_px: float = 0.1,
                      iterations: int = 100, window: int | None = None, affine: bool = True,
                      device: str = "cpu", progress: Callable[[int, dict], None] | None = None,
                      size_px: int | None = None) -> MatchingResult:
    """Register every frame to the reprojection of the reconstruction of all of them, iterated.

    Parameters
    ----------
    frames
        Tilt series (n, ny, nx) with the tilt axis along y through the centre (docs/design.md 2), in
        acquisition order; background near 0.
    angles_deg
        Tilt angle of each frame, degrees, shape (n,).
    rounds
        Most rounds (the paper: 3).
    tolerance_px
        Stop when no translation changes by more than this in a round, pixels.
    iterations
        SIRT iterations of each reconstruction.
    window
        None: one static SIRT of all frames; else the moving-window SIRT width, frames (dynamic series).
    affine
        Refine the full affine after the translation (False: translation only).
    progress
        Called as ``progress(round_number, round_record)`` after each round.
    size_px
        Register on frames resized so their larger side is this many pixels (None, or frames no larger: at
        full size); the returned transforms and frames are at full size, the round records' shifts and
        residuals at the registration size.
    """
    frames = np.asarray(frames, dtype=np.float64)
    angles = np.asarray(angles_deg, dtype=np.float64).reshape(-1)
    if frames.ndim != 3 or angles.shape != (frames.shape[0],) or frames.shape[0] < 2:
        raise UserError(f"projection matching needs frames (n >= 2, ny, nx) and one angle per frame; got "
                        f"{frames.shape} and {angles.size} angles")
    if rounds < 1 or tolerance_px <= 0:
        raise UserError(f"rounds must be >= 1 and tolerance_px > 0; got {rounds} and {tolerance_px}")
    if size_px is not None and size_px < 8:
        raise UserError(f"size_px = {size_px}: register at 8 pixels or more")
    if size_px is not None and max(frames.shape[1:]) > size_px:
        return _match_resized(frames, angles, size_px, rounds=rounds, tolerance_px=tolerance_px,
                              iterations=iterations, window=window, affine=affine, device=device, progress=progress)
    coefficients = [ndimage.spline_filter(f, order=3) for f in frames]
    n = len(frames)
    matrices, translations = np.tile(np.eye(2), (n, 1, 1)), np.zeros((n, 2))
    result = MatchingResult(frames=frames.astype(np.float32), matrices=matrices, translations_px=translations)
    aligned = frames
    for number in range(1, rounds + 1):
        new_m, new_t, residuals = _round(coefficients, aligned, angles, matrices, translations, iterations,
                                         window, device, affine)
        new_m, new_t = _remove_common(new_m, new_t)
        change = float(np.abs(new_t - translations).max())
        matrices, translations = new_m, new_t
        aligned = np.stack([warp(c, m, t, prefiltered=True) for c, m, t in zip(coefficients, matrices, translations)])
        record = {"round": number, "max_change_px": change, "residual": residuals.tolist(),
                  "shift_px": (-translations).tolist(), "matrices": matrices.tolist()}
        result.rounds.append(record)
        if progress is not None:
            progress(number, record)
        if change < tolerance_px:
            result.converged = True
            break
    result.frames, result.matrices, result.translations_px = aligned.astype(np.float32), matrices, translations
    return result


def _match_resized(frames: np.ndarray, angles_deg: np.ndarray, size_px: int, **options) -> MatchingResult:
    """:func:`match_projections` on frames resized to a larger side of ``size_px``, its transforms carried back.

    Resizing maps centred coordinates as ``r_full = F r_small`` (``F`` the per-axis scale, pixel centres kept),
    so a transform ``r -> M r + t`` found on the small frames is ``r -> F M F^-1 r + F t`` at full size.
    """
    from skimage.transform import resize

    shape = np.array(frames.shape[1:], dtype=float)
    small_shape = np.maximum(np.round(shape * size_px / shape.max()), 2).astype(int)
    small = np.stack([resize(f, tuple(small_shape), order=1, anti_aliasing=True, preserve_range=True)
                      for f in frames])
    result = match_projections(small, angles_deg, **options)
    scale = np.diag(shape / small_shape)
    matrices = np.einsum("ij,njk,kl->nil", scale, result.matrices, np.linalg.inv(scale))
    translations = result.translations_px @ scale.T
    aligned = np.stack([warp(f, m, t) for f, m, t in zip(frames, matrices, translations)])
    return MatchingResult(frames=aligned.astype(np.float32), matrices=matrices, translations_px=translations,
                          rounds=result.rounds, converged=result.converged)

