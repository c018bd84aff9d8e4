"""Specimen tracking math: cosine stretch, eucentric-offset fit and prediction (pure).

Conventions: images are (ny, nx) with x along columns, perpendicular to the tilt axis (rows, y, run
along it); positions and corrections are ``(x, y)`` pairs in pixels or nanometres (the stage's and the
session record's order); shifts are measured by :func:`tiltstream.registration.register`, which returns
them in numpy's ``(y, x)`` order. Angles in degrees.

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

from tiltstream.registration import register


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


def edge_weight(gap_deg: float) -> float:
    """Trust in a shift measured between frames ``gap_deg`` degrees apart: 1 at 0, 1/2 at 5 degrees, falling as
    the inverse square (projections far apart in angle differ by more than a stretch)."""
    return 1.0 / (1.0 + (gap_deg / 5.0) ** 2)


def solve_positions(count: int, edges: list[tuple[int, int, float, float, float]]) -> np.ndarray:
    """Positions of ``count`` nodes from weighted relative measurements, node 0 fixed at the origin.

    Parameters
    ----------
    count
        Number of nodes (frames), >= 1.
    edges
        ``(i, j, dx, dy, weight)``: node i sits at node j plus (dx, dy); ``j = -1`` means an absolute
        measurement of node i (a model reference). Every node must be connected to node 0 or an anchor.

    Returns
    -------
    np.ndarray
        (count, 2) positions (x, y), the weighted least-squares solution.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import lsqr

    positions = np.zeros((count, 2))
    if count <= 1 or not edges:
        return positions
    rows, cols, values = [], [], []
    rhs = np.zeros((len(edges), 2))
    for row, (i, j, dx, dy, weight) in enumerate(edges):
        root = math.sqrt(weight)
        for node, sign in ((i, 1.0), (j, -1.0)):
            if node > 0:  # node 0 is fixed at the origin; -1 is the absolute frame
                rows.append(row)
                cols.append(node - 1)
                values.append(sign * root)
        rhs[row] = (root * dx, root * dy)
    matrix = coo_matrix((values, (rows, cols)), shape=(len(edges), count - 1)).tocsr()
    for axis in (0, 1):
        positions[1:, axis] = lsqr(matrix, rhs[:, axis], atol=1e-12, btol=1e-12)[0]
    return positions


@dataclass(frozen=True)
class Observation:
    """One tracked frame: its index, angle (deg), frame, the correction in effect (x, y nm, image shift plus
    stage x/y moved) and whether its measurement is trusted."""

    index: int
    alpha_deg: float
    frame: np.ndarray
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
        Index of the frame nearest in angle it was measured against (None: the first frame or the model).
    peak_quality
        Best normalised cross-correlation peak of its measurements (1 for the first frame).
        An untrusted (lost) frame's position is NaN.
    lost
        Every peak was below the tracker's threshold: the position is not trusted.
    """

    position_px: tuple[float, float]
    reference: int | None
    peak_quality: float
    lost: bool


@dataclass
class Tracker:
    """Keeps the specimen put: measures each recorded frame, fits the eucentric offset, predicts corrections.

    Each new frame is correlated with the trusted frames nearest in angle on either side (cosine-stretched)
    or with the model's reprojection; every measurement is an edge of a graph whose weighted least-squares
    solution (:func:`solve_positions`) gives all positions, so that early measurements across large angle
    gaps are outweighed as the series fills in.

    Parameters
    ----------
    pixel_size_nm
        Frame pixel size at the specimen, nanometres.
    lost_quality
        Peaks below this normalised correlation mark the specimen as lost (the frame is not used).
    max_shift_px
        Largest shift searched, pixels (None: half the frame).
    max_offset_fraction
        A frame whose specimen sits further than this fraction of the frame's width from its target
        position is partly cut off and measured poorly: it is recorded but neither fitted nor a reference.
    target_px
        Where the corrections aim to keep the specimen, relative to its first-frame position (x, y), pixels
        (not (0, 0) when centring: the frame centre).
    """

    pixel_size_nm: float
    lost_quality: float = 0.3
    max_shift_px: float | None = None
    max_offset_fraction: float = 0.25
    target_px: tuple[float, float] = (0.0, 0.0)
    observations: list[Observation] = field(default_factory=list)
    edges: list[tuple[int, int, float, float, float]] = field(default_factory=list)
    positions_px: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))

    def _neighbours(self, alpha_deg: float, shape: tuple[int, ...]) -> list[int]:
        """Node numbers of the trusted frames nearest in angle below and above ``alpha_deg`` (nearest first)."""
        below = [(alpha_deg - o.alpha_deg, n) for n, o in enumerate(self.observations)
                 if o.trusted and o.frame.shape == shape and o.alpha_deg <= alpha_deg]
        above = [(o.alpha_deg - alpha_deg, n) for n, o in enumerate(self.observations)
                 if o.trusted and o.frame.shape == shape and o.alpha_deg > alpha_deg]
        picks = [min(side) for side in (below, above) if side]
        return [n for _, n in sorted(picks)]

    def measure(self, index: int, alpha_deg: float, frame: np.ndarray, correction_nm: tuple[float, float],
                model_reference: np.ndarray | None = None) -> Measurement:
        """Measure ``frame`` (recorded at ``alpha_deg`` with ``correction_nm`` applied) and remember it.

        ``model_reference`` is the live model's reprojection at ``alpha_deg`` (aligned frames: the specimen
        at position 0); without it the trusted frames nearest in angle, cosine-stretched, are the references.
        """
        frame = np.asarray(frame, dtype=np.float64)
        node = len(self.observations)
        new_edges: list[tuple[int, int, float, float, float]] = []
        qualities: list[float] = []
        reference: int | None = None
        if model_reference is not None and model_reference.shape == frame.shape:
            found = register(model_reference, frame, self.max_shift_px)
            qualities.append(found.peak_quality)
            if node > 0:
                new_edges.append((node, -1, found.shift_px[1], found.shift_px[0], 1.0))
        for other in self._neighbours(alpha_deg, frame.shape):
            ref = self.observations[other]
            stretched = cosine_stretch(ref.frame, ref.alpha_deg, alpha_deg, specimen_centre_x_px(ref.frame))
            found = register(stretched, frame, self.max_shift_px)
            qualities.append(found.peak_quality)
            reference = ref.index if reference is None else reference
            if found.peak_quality >= self.lost_quality:
                y_px, x_px = found.shift_px
                new_edges.append((node, other, x_px, y_px, edge_weight(abs(alpha_deg - ref.alpha_deg))))
        quality = max(qualities) if qualities else 1.0
        lost = bool(qualities) and quality < self.lost_quality
        trusted = not lost and (node == 0 or bool(new_edges))
        correction = (float(correction_nm[0]), float(correction_nm[1]))
        self.observations.append(Observation(index, float(alpha_deg), frame, correction, trusted))
        if not trusted:
            self.positions_px = self._solve()
            return Measurement((math.nan, math.nan), reference, float(quality), True)
        self.edges.extend(new_edges)
        self.positions_px = self._solve()
        position = self.positions_px[node].copy()
        if math.hypot(position[0] - self.target_px[0], position[1] - self.target_px[1]) > \
                self.max_offset_fraction * min(frame.shape):
            self.observations[node] = Observation(index, float(alpha_deg), frame, correction, False)
            self.edges = [e for e in self.edges if node not in (e[0], e[1])]
            self.positions_px = self._solve()
        return Measurement((float(position[0]), float(position[1])), reference, float(quality), False)

    def add_known(self, index: int, alpha_deg: float, frame: np.ndarray, position_px: tuple[float, float],
                  correction_nm: tuple[float, float]) -> None:
        """Take a frame measured before (a resumed session): trusted, at its recorded position (the first one
        added is the origin, so it must be the session's first tracked frame)."""
        node = len(self.observations)
        self.observations.append(Observation(index, float(alpha_deg), np.asarray(frame, dtype=np.float64),
                                             (float(correction_nm[0]), float(correction_nm[1])), True))
        if node > 0:
            self.edges.append((node, -1, float(position_px[0]), float(position_px[1]), 1.0))
        self.positions_px = self._solve()

    def _solve(self) -> np.ndarray:
        """Positions (n, 2) px of all observations (untrusted ones get NaN)."""
        trusted = [n for n, o in enumerate(self.observations) if o.trusted]
        if not trusted:
            return np.full((len(self.observations), 2), np.nan)
        renumber = {n: k for k, n in enumerate(trusted)}  # the first trusted frame is the origin
        edges = [(renumber[i], -1 if j == -1 else renumber[j], dx, dy, w) for i, j, dx, dy, w in self.edges]
        solved = solve_positions(len(trusted), edges)
        positions = np.full((len(self.observations), 2), np.nan)
        positions[trusted] = solved
        return positions

    def _displacements_nm(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Angles (deg) and uncorrected displacements x, y (nm) of the trusted frames, each shape (n,)."""
        trusted = [n for n, o in enumerate(self.observations) if o.trusted]
        alpha = np.array([self.observations[n].alpha_deg for n in trusted])
        x_nm = np.array([self.positions_px[n, 0] * self.pixel_size_nm - self.observations[n].correction_nm[0]
                         for n in trusted])
        y_nm = np.array([self.positions_px[n, 1] * self.pixel_size_nm - self.observations[n].correction_nm[1]
                         for n in trusted])
        return alpha, x_nm, y_nm

    def fit(self) -> EucentricFit | None:
        """The eucentric fit of the uncorrected displacements of the trusted frames (None before any)."""
        alpha, x_nm, y_nm = self._displacements_nm()
        return fit_eucentric(alpha, x_nm, y_nm) if alpha.size else None

    def correction_for(self, alpha_deg: float) -> tuple[float, float] | None:
        """Correction (x, y) nm that puts the specimen back at its first-frame position at ``alpha_deg``.

        The last trusted frame's displacement moved along the fitted height to ``alpha_deg`` (drift is a
        random walk: where it was last is its best prediction), negated. None before the first trusted frame.
        """
        alpha, x_nm, y_nm = self._displacements_nm()
        if not alpha.size:
            return None
        z_nm = fit_eucentric(alpha, x_nm, y_nm).z_nm
        step = math.sin(math.radians(alpha_deg)) - math.sin(math.radians(float(alpha[-1])))
        return -(x_nm[-1] + z_nm * step), -float(y_nm[-1])
