"""The tilt axis of a tilt series found from the frames alone: its in-plane direction and its offset from
the image centre, each with a quality figure, and the resampling that makes it the project's y axis.

Direction (``axis_deg``): the angle of the tilt axis in the frame, measured from the array's x axis (columns,
``frame[:, j]`` with ``j`` increasing) toward its y axis (rows, ``i`` increasing); the project's geometry
(docs/design.md 2: y is the tilt axis) is ``axis_deg = 90``. It is found by the invariant of single-axis
tilting that every orthoslice keeps its mass: the profile of a frame along the axis (the sum of each line
across it) is the same at every tilt. Profiles are taken inside a centred disc (the same support at every
candidate direction) for candidates 0..180 deg, then refined; the score is the variance of the profiles over
frames relative to their mean square. Directions 180 deg apart fit equally (the hand of the tilt cannot be
seen in the frames): without metadata the one needing the smaller rotation is used.

The profiles are a coarse guide (their score is flat to second order near the axis, and flat over tens of
degrees for a specimen that looks alike from there, such as a round needle along the axis): every
direction they cannot rule out is a candidate, the one whose frames are most consistent with single-axis
tilting is kept, and its direction and the offset (``offset_px``: the distance of the axis from the image
centre along the axis's normal, +x after rotation) are then refined together on that consistency: a
non-negative SIRT of a subset of the upright frame's rows is reprojected and its relative residual
minimised.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage, optimize

from tiltstream.errors import UserError

MAX_SEARCH_SIZE = 64  # frames are binned to at most this edge for the searches, pixels
SEARCH_ROWS = 16  # rows of the upright frame reconstructed to score a candidate axis
CLEAR_CONTRAST = 0.8  # profile contrast above which the profiles' best direction is the only candidate
# SIRT iterations behind a residual: the searches rank candidates with fewer (on the etspy needle 50 and 100
# agree to 0.03 deg and 0.02 px, in half the time), the reported quality figures use the converged count
SEARCH_ITERATIONS = 50
REPORT_ITERATIONS = 100
SEARCH_SIGMA_PX = 1.0  # Gaussian smoothing of the search frames: resampling then hardly smooths them further


@dataclass(frozen=True)
class TiltAxis:
    """The tilt axis of a series and how well it is determined.

    Attributes
    ----------
    axis_deg
        Direction of the axis in the input frames, degrees from the array x axis toward the y (row) axis.
    axis_from
        Where ``axis_deg`` came from (``estimated``, the metadata field, or the command-line override).
    angle_contrast
        1 - (profile score at ``axis_deg``) / (median score over all directions): near 1 when the direction
        is sharply determined, near 0 when the frames do not determine it (None when not estimated).
    offset_px
        Offset of the axis from the image centre along the axis's normal, input pixels.
    residual
        Relative reprojection residual of a reconstruction of a subset of rows with this axis (the searches'
        score, here from a converged SIRT: :data:`REPORT_ITERATIONS`; noise and change over time keep it
        above 0).
    residual_rise_1deg
        Relative rise of ``residual`` 1 deg away from ``axis_deg`` (how sharply the data fix the direction).
    residual_untouched
        ``residual`` of the frames as they are (axis along y through the centre), for comparison.
    """

    axis_deg: float
    axis_from: str
    angle_contrast: float | None
    offset_px: float
    residual: float
    residual_rise_1deg: float
    residual_untouched: float

    def as_record(self) -> dict:
        """JSON-ready fields."""
        return asdict(self)


def _background_free(frames: np.ndarray) -> np.ndarray:
    """Frames minus their median, clipped at 0 (float64)."""
    frames = np.asarray(frames, dtype=np.float64)
    return np.clip(frames - np.median(frames, axis=(1, 2), keepdims=True), 0.0, None)


def search_bin(shape: tuple[int, ...]) -> int:
    """Binning factor that brings the larger frame edge to at most :data:`MAX_SEARCH_SIZE`."""
    return max(1, int(np.ceil(max(shape[-2:]) / MAX_SEARCH_SIZE)))


def _bin(frames: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return frames
    n, ny, nx = frames.shape
    ny, nx = ny // factor * factor, nx // factor * factor
    return frames[:, :ny, :nx].reshape(n, ny // factor, factor, nx // factor, factor).mean(axis=(2, 4))


def axis_profiles(frames: np.ndarray, axis_deg: float) -> np.ndarray:
    """Profiles (n, n_bins) of the frames along a candidate axis direction, each normalised to unit sum.

    Every pixel inside the centred disc of radius ``min(ny, nx) / 2 - 1`` is projected onto the axis
    (coordinate ``s``, 1-pixel bins, linear weights).
    """
    n, ny, nx = frames.shape
    rows, cols = np.mgrid[:ny, :nx]
    y, x = rows - (ny - 1) / 2.0, cols - (nx - 1) / 2.0
    radius = min(ny, nx) / 2.0 - 1.0
    inside = (x * x + y * y) <= radius * radius
    psi = np.deg2rad(axis_deg)
    s = (x * np.cos(psi) + y * np.sin(psi))[inside] + radius + 1.0
    lo = np.floor(s).astype(np.int64)
    frac = s - lo
    n_bins = int(2 * radius + 3)
    values = frames[:, inside]
    profiles = np.empty((n, n_bins))
    for i in range(n):
        profiles[i] = (np.bincount(lo, values[i] * (1 - frac), n_bins)
                       + np.bincount(lo + 1, values[i] * frac, n_bins))
    sums = profiles.sum(axis=1, keepdims=True)
    return profiles / np.where(sums > 0, sums, 1.0)


def profile_score(frames: np.ndarray, axis_deg: float) -> float:
    """Variance of the axis profiles over frames relative to their mean square (0: all profiles equal)."""
    profiles = axis_profiles(frames, axis_deg)
    mean = profiles.mean(axis=0)
    return float(profiles.var(axis=0).sum() / max((mean * mean).sum(), 1e-30))


def estimate_axis_directions(frames: np.ndarray, step_deg: float = 1.0,
                             spacing_deg: float = 15.0) -> tuple[list[float], float]:
    """Candidate directions of the tilt axis (degrees in [0, 180), best profile first) and the profiles'
    contrast, from the frames alone.

    The profile score can be low over a broad range of directions when the specimen looks alike from
    them (a needle along the axis with a round cross-section: every direction within 50 deg of the axis
    scores alike on the etspy needle, contrast 0.51, and the lowest was 45 deg off). Below a contrast of
    ``CLEAR_CONTRAST`` every direction on a ``spacing_deg`` grid whose score lies in the lower half
    between the best and the median is a candidate too; :func:`find_tilt_axis` picks among them by the
    reconstruction's consistency. (Simulated specimens give a contrast of 0.97-0.98: one candidate.)

    Parameters
    ----------
    frames
        Tilt series (n, ny, nx), roughly aligned along the axis, background removed or flat.
    step_deg
        Step of the coarse sweep over 0..180 deg; the best direction is refined to 0.01 deg.
    spacing_deg
        Spacing of the further candidates, degrees (a multiple of ``step_deg``).
    """
    candidates = np.arange(0.0, 180.0, step_deg)
    scores = np.array([profile_score(frames, a) for a in candidates])
    best = float(candidates[int(np.argmin(scores))])
    result = optimize.minimize_scalar(lambda a: profile_score(frames, a), bounds=(best - step_deg, best + step_deg),
                                      method="bounded", options={"xatol": 0.01})
    axis = float(result.x) % 180.0
    median = float(np.median(scores))
    contrast = 1.0 - float(result.fun) / median
    cut = float(result.fun) + 0.5 * (median - float(result.fun))
    directions = [axis]
    if contrast >= CLEAR_CONTRAST:
        return directions, contrast
    for a, score in zip(candidates, scores):  # the grid's scores come from the sweep above
        gap = min(abs(a - d) % 180.0 for d in directions)
        if np.isclose(a % spacing_deg, 0.0) and score <= cut and min(gap, 180.0 - gap) >= spacing_deg / 2.0:
            directions.append(float(a))
    return directions, contrast


def rotation_to_y_deg(axis_deg: float) -> float:
    """The in-plane rotation (degrees, in (-90, 90]) that takes an axis direction (mod 180) to the y axis."""
    rotation = (90.0 - axis_deg) % 180.0
    return rotation - 180.0 if rotation > 90.0 else rotation


def to_axis_frames(frames: np.ndarray, axis_deg: float, offset_px: float = 0.0, order: int = 3,
                   shifts_px: np.ndarray | None = None) -> np.ndarray:
    """Resample frames so the tilt axis runs along y through the image centre (docs/design.md 2).

    Output pixel ``(yo, xo)`` (centred) is read from the input at ``yo * a + (xo + offset_px) * m`` with ``a =
    (cos, sin)(axis_deg)`` and ``m = (sin, -cos)(axis_deg)`` in (x, y) components: ``axis_deg = 90``,
    ``offset_px = 0`` is the identity. The output keeps the input's shape, swapped when the rotation exceeds
    45 deg; outside the input the frame's median fills in. ``shifts_px`` (n, 2) (dy, dx), input pixels, moves
    each input frame's content first (as ``ndimage.shift``), in the same resampling.

    Returns
    -------
    np.ndarray
        (n, ny', nx') float32.
    """
    frames = np.asarray(frames, dtype=np.float64)
    n, ny, nx = frames.shape
    out_shape = (nx, ny) if abs(rotation_to_y_deg(axis_deg)) > 45.0 else (ny, nx)
    psi = np.deg2rad(axis_deg)
    a_x, a_y, m_x, m_y = np.cos(psi), np.sin(psi), np.sin(psi), -np.cos(psi)
    matrix = np.array([[a_y, m_y], [a_x, m_x]])  # (row, col) of the input per (yo, xo) of the output
    centre_out = (np.array(out_shape) - 1) / 2.0
    offset = (np.array([ny, nx]) - 1) / 2.0 - matrix @ centre_out + offset_px * np.array([m_y, m_x])
    shifts = np.zeros((n, 2)) if shifts_px is None else np.asarray(shifts_px, dtype=np.float64)
    return np.stack([ndimage.affine_transform(f, matrix, offset - s, output_shape=out_shape, order=order,
                                              mode="constant", cval=float(np.median(f)))
                     for f, s in zip(frames, shifts)]).astype(np.float32)


def axis_rows(frames: np.ndarray, axis_deg: float, offset_px: float, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of :func:`to_axis_frames` ``(frames, axis_deg, offset_px)`` (linear interpolation, 0
    outside), shape (n, len(rows), nx'), for the searches."""
    n, ny, nx = frames.shape
    out_ny, out_nx = (nx, ny) if abs(rotation_to_y_deg(axis_deg)) > 45.0 else (ny, nx)
    psi = np.deg2rad(axis_deg)
    yo = np.asarray(rows, dtype=np.float64)[:, None] - (out_ny - 1) / 2.0
    xo = np.arange(out_nx)[None, :] - (out_nx - 1) / 2.0 + offset_px
    col = (nx - 1) / 2.0 + yo * np.cos(psi) + xo * np.sin(psi)
    row = (ny - 1) / 2.0 + yo * np.sin(psi) - xo * np.cos(psi)
    return np.stack([ndimage.map_coordinates(f, [row, col], order=3, mode="constant", cval=0.0) for f in frames])


def consistency_residual(frames: np.ndarray, angles_deg: np.ndarray, axis_deg: float, offset_px: float,
                         rows: np.ndarray, iterations: int = SEARCH_ITERATIONS) -> float:
    """Relative reprojection residual of a non-negative SIRT (``iterations``) of ``rows`` of the frames
    resampled with the axis at ``axis_deg`` and ``offset_px`` (0: the frames are consistent with single-axis
    tilting there)."""
    from tiltstream.recon.projector import ParallelProjector
    from tiltstream.recon.sirt import sirt

    upright = axis_rows(frames, axis_deg, offset_px, rows)
    nx = upright.shape[2]
    shape = (nx, upright.shape[1], nx)
    volume = sirt(upright, angles_deg, shape, iterations=iterations, nonnegative=True)
    reprojection = ParallelProjector(angles_deg, shape)(volume)
    return float(np.linalg.norm(reprojection - upright) / max(np.linalg.norm(upright), 1e-30))


def _search_rows(frames: np.ndarray, axis_deg: float) -> np.ndarray:
    ny, nx = frames.shape[1:]
    out_ny = nx if abs(rotation_to_y_deg(axis_deg)) > 45.0 else ny
    return np.unique(np.linspace(out_ny * 0.2, out_ny * 0.8, SEARCH_ROWS).round())


def estimate_offset(frames: np.ndarray, angles_deg: np.ndarray, axis_deg: float) -> float:
    """Offset (pixels) of the axis at direction ``axis_deg`` that minimises :func:`consistency_residual`:
    a scan over +-1/4 of the frame (17 candidates or 1-pixel steps), then refined to 0.02 pixels."""
    rows = _search_rows(frames, axis_deg)
    limit = np.floor(min(frames.shape[1:]) / 4.0)
    step = max(1.0, np.floor(limit / 8.0))
    candidates = np.arange(-limit, limit + 1.0, step)
    scores = [consistency_residual(frames, angles_deg, axis_deg, c, rows) for c in candidates]
    best = float(candidates[int(np.argmin(scores))])
    result = optimize.minimize_scalar(lambda c: consistency_residual(frames, angles_deg, axis_deg, c, rows),
                                      bounds=(best - step, best + step), method="bounded", options={"xatol": 0.02})
    return float(result.x)


def refine_axis(frames: np.ndarray, angles_deg: np.ndarray, axis_deg: float, offset_px: float
                ) -> tuple[float, float]:
    """Direction and offset refined together (Nelder-Mead on :func:`consistency_residual`, to 0.05 deg / px)."""
    rows = _search_rows(frames, axis_deg)
    result = optimize.minimize(lambda p: consistency_residual(frames, angles_deg, p[0], p[1], rows),
                               np.array([axis_deg, offset_px]), method="Nelder-Mead",
                               options={"xatol": 0.05, "fatol": 1e-8, "maxiter": 120,
                                        "initial_simplex": [[axis_deg, offset_px], [axis_deg + 3.0, offset_px],
                                                            [axis_deg, offset_px + 1.5]]})
    return float(result.x[0]), float(result.x[1])


def _most_consistent(frames: np.ndarray, angles_deg: np.ndarray, directions: list[float]) -> tuple[float, float]:
    """Of candidate directions (this module's convention, each taken as the representative needing the smaller
    rotation), the one whose frames, at their best offset, are most consistent with single-axis tilting;
    returns it and that offset."""
    best: tuple[float, float, float] | None = None
    for direction in directions:
        axis_deg = 90.0 - rotation_to_y_deg(direction)
        offset = estimate_offset(frames, angles_deg, axis_deg)
        residual = consistency_residual(frames, angles_deg, axis_deg, offset, _search_rows(frames, axis_deg))
        if best is None or residual < best[0]:
            best = (residual, axis_deg, offset)
    assert best is not None
    return best[1], best[2]


def find_tilt_axis(frames: np.ndarray, angles_deg: np.ndarray, axis_deg: float | None = None,
                   axis_from: str = "estimated") -> TiltAxis:
    """The tilt axis of a series: the direction given (``axis_deg``, from ``axis_from``) or estimated, and its
    offset (always estimated).

    Parameters
    ----------
    frames
        Tilt series (n, ny, nx), any real dtype, roughly aligned (no drift along the axis).
    angles_deg
        Tilt angle of each frame, degrees, shape (n,).
    axis_deg
        Known direction (this module's convention); None estimates it: profiles give candidates (the best
        to a few degrees, others where they cannot tell), the most consistent candidate wins, then its
        direction and offset are refined together on the reconstruction's consistency.
    """
    frames = np.asarray(frames, dtype=np.float64)
    angles = np.asarray(angles_deg, dtype=np.float64).reshape(-1)
    if frames.ndim != 3 or angles.shape != (frames.shape[0],) or frames.shape[0] < 3:
        raise UserError(f"the tilt axis needs a series (n >= 3, ny, nx) with one angle per frame; got frames "
                        f"{frames.shape} and {angles.size} angles")
    factor = search_bin(frames.shape)
    small = ndimage.gaussian_filter(_background_free(_bin(frames, factor)), (0.0, SEARCH_SIGMA_PX, SEARCH_SIGMA_PX))
    contrast = None
    estimate = axis_deg is None
    if estimate:
        directions, contrast = estimate_axis_directions(small)
        axis_deg, offset = _most_consistent(small, angles, directions)
        axis_deg, offset = refine_axis(small, angles, axis_deg, offset)
    else:
        offset = estimate_offset(small, angles, axis_deg)
    rows = _search_rows(small, axis_deg)

    def reported(axis: float, shift: float, at: np.ndarray) -> float:
        return consistency_residual(small, angles, axis, shift, at, REPORT_ITERATIONS)

    residual = reported(axis_deg, offset, rows)
    rise = np.mean([reported(axis_deg + d, offset, rows) for d in (-1.0, 1.0)])
    return TiltAxis(axis_deg=float(axis_deg), axis_from=axis_from, angle_contrast=contrast,
                    offset_px=offset * factor, residual=residual, residual_rise_1deg=float(rise / residual - 1.0),
                    residual_untouched=reported(90.0, 0.0, _search_rows(small, 90.0)))
