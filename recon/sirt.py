"""SIRT and the paper's moving-window SIRT baseline, on whole volumes through :class:`ParallelProjector`.

SIRT (as ASTRA's ``SIRT``): ``x <- x + C * A^T (R * (b - A x))`` with ``R = 1 / row sums`` and
``C = 1 / column sums`` of the projector ``A`` (zero where a sum is zero), clamped to ``x >= 0``
after every iteration (ASTRA's ``MinConstraint = 0``; on by default, the strong baseline, off with
``nonnegative=False``). All slices of the volume are solved at once (the projector is batched over
the tilt axis ``y``).

Moving window (docs/method.md 3, "The comparison baseline"): the volume at frame ``i`` is reconstructed from
frames ``i - window//2 .. i + window//2`` (fewer at the ends of the series), each window with its own
SIRT run. ``warm_start=True`` starts a window from the previous window's volume; the paper's cold
start (zeros) is ``warm_start=False``, the default (see :func:`moving_window_sirt`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from tiltstream.errors import UserError
from tiltstream.recon.device import resolve_device
from tiltstream.recon.projector import ParallelProjector

EPS = 1e-6  # sums below this count as zero (ASTRA's threshold for ray lengths / pixel weights)


def _check_inputs(frames: np.ndarray, angles_deg: np.ndarray, volume_shape: Sequence[int]) -> None:
    if frames.ndim != 3 or min(frames.shape) < 1:
        raise UserError(f"frames must have shape (n, ny, nx) with n >= 1; got {frames.shape}")
    if angles_deg.shape != (frames.shape[0],):
        raise UserError(f"angles_deg must have one angle per frame ({frames.shape[0]}); got shape "
                        f"{angles_deg.shape}")
    if len(volume_shape) != 3 or min(volume_shape) < 1:
        raise UserError(f"volume_shape must be (nz, ny, nx) with positive sizes; got {tuple(volume_shape)}")
    if volume_shape[1] != frames.shape[1]:
        raise UserError(f"volume ny = {volume_shape[1]} differs from the frames' row count {frames.shape[1]}")
    if not np.all(np.isfinite(frames)):
        bad = sorted({int(i) for i in np.argwhere(~np.isfinite(frames))[:, 0]})
        raise UserError(f"frames {bad[:10]} hold NaN or infinite values; drop or repair them first")
    if not np.all(np.isfinite(angles_deg)):
        raise UserError("angles_deg holds NaN or infinite values")


class _Sirt:
    """SIRT on one fixed set of frames, on one device.

    Works in the projector's matrix layout (:meth:`ParallelProjector.matrices`): a volume is held as
    columns ``(nz * nx, ny)`` (one column per orthoslice) and frames as ``(n * n_det, ny)``, so every
    iteration is two sparse-dense products and in-place updates, with no transposes of the volume.
    """

    def __init__(self, frames: np.ndarray, angles_deg: np.ndarray, volume_shape: Sequence[int],
                 device: torch.device) -> None:
        self.shape = tuple(int(v) for v in volume_shape)
        op = ParallelProjector(angles_deg, self.shape, n_det=frames.shape[2])
        self.matrix, self.transpose = op.matrices(torch.float32, device)
        ny = self.shape[1]
        b = torch.as_tensor(frames, dtype=torch.float32).to(device)
        self.b = b.permute(0, 2, 1).reshape(-1, ny).contiguous()  # (n * n_det, ny)
        # every orthoslice sees the same operator, so the sums are one column, broadcast over y
        self.r = _safe_inverse(self.matrix @ torch.ones(self.matrix.shape[1], 1, device=device))
        self.c = _safe_inverse(self.transpose @ torch.ones(self.matrix.shape[0], 1, device=device))

    def to_columns(self, volume: torch.Tensor) -> torch.Tensor:
        nz, ny, nx = self.shape
        return volume.permute(0, 2, 1).reshape(nz * nx, ny).contiguous()

    def to_volume(self, columns: torch.Tensor) -> torch.Tensor:
        nz, ny, nx = self.shape
        return columns.reshape(nz, nx, ny).permute(0, 2, 1).contiguous()

    def run(self, x: torch.Tensor, iterations: int, nonnegative: bool) -> torch.Tensor:
        """``iterations`` SIRT updates of the volume ``x`` (nz, ny, nx); returns a new volume."""
        cols = self.to_columns(x)
        for _ in range(iterations):
            residual = self.b - self.matrix @ cols
            residual.mul_(self.r)
            update = self.transpose @ residual
            cols.addcmul_(update, self.c)
            if nonnegative:
                cols.clamp_(min=0.0)
        return self.to_volume(cols)


def _safe_inverse(sums: torch.Tensor) -> torch.Tensor:
    return torch.where(sums > EPS, 1.0 / sums.clamp_min(EPS), torch.zeros_like(sums))


def sirt(frames: np.ndarray, angles_deg: Sequence[float] | np.ndarray, volume_shape: Sequence[int],
         iterations: int = 30, x0: np.ndarray | None = None, nonnegative: bool = True,
         device: str | torch.device | None = "cpu") -> np.ndarray:
    """Reconstruct one volume from a tilt series with SIRT.

    Parameters
    ----------
    frames
        Projections, shape (n, ny, n_det), data units (line integrals in voxel units).
    angles_deg
        Tilt angle of each frame, degrees, shape (n,).
    volume_shape
        ``(nz, ny, nx)`` voxels; ``ny`` must equal the frames' row count.
    iterations
        SIRT iterations (the paper: 30).
    x0
        Starting volume (nz, ny, nx); zeros by default.
    nonnegative
        Clamp the volume to >= 0 after every iteration (ASTRA's ``MinConstraint = 0``); ``False``
        gives ASTRA's default, unconstrained SIRT.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    np.ndarray
        Volume (nz, ny, nx), float32, data units.
    """
    frames = np.asarray(frames, dtype=np.float32)
    angles = np.asarray(angles_deg, dtype=np.float64).reshape(-1)
    _check_inputs(frames, angles, volume_shape)
    if iterations < 0:
        raise UserError(f"iterations must be >= 0; got {iterations}")
    dev = resolve_device(device)
    solver = _Sirt(frames, angles, volume_shape, dev)
    x = _start(x0, volume_shape, dev)
    with torch.no_grad():
        return solver.run(x, iterations, nonnegative).cpu().numpy()


def _start(x0: np.ndarray | None, volume_shape: Sequence[int], device: torch.device) -> torch.Tensor:
    if x0 is None:
        return torch.zeros(tuple(volume_shape), dtype=torch.float32, device=device)
    if tuple(np.shape(x0)) != tuple(volume_shape):
        raise UserError(f"x0 shape {np.shape(x0)} differs from volume_shape {tuple(volume_shape)}")
    return torch.as_tensor(np.asarray(x0, dtype=np.float32)).to(device)


def window_bounds(index: int, count: int, window: int) -> tuple[int, int]:
    """Frames ``[start, stop)`` of the window centred on frame ``index`` (``index +- window//2``, clipped)."""
    half = window // 2
    return max(0, index - half), min(count, index + half + 1)


def moving_window_sirt(frames: np.ndarray, angles_deg: Sequence[float] | np.ndarray,
                       volume_shape: Sequence[int], window: int = 30, iterations: int = 30,
                       warm_start: bool = False, nonnegative: bool = True,
                       device: str | torch.device | None = "cpu",
                       progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """The paper's baseline: one SIRT volume per frame from the frames around it in time.

    Parameters
    ----------
    frames
        Projections in acquisition (time) order, shape (n, ny, n_det).
    angles_deg
        Tilt angle of each frame, degrees, shape (n,).
    volume_shape
        ``(nz, ny, nx)`` voxels.
    window
        Window width in frames: frame ``i`` uses frames ``i - window//2 .. i + window//2`` (31 frames
        for the paper's 30), fewer at the ends.
    iterations
        SIRT iterations per window (the paper: 30).
    warm_start
        Start each window from the previous window's volume instead of zeros. Off by default: the
        paper's baseline starts cold, and a warm start (in effect hundreds of iterations) helps sharp
        specimens but can amplify noise badly (docs/benchmarks/defaults.md, "Moving-window SIRT").
    nonnegative
        Clamp volumes to >= 0 after every iteration (ASTRA's ``MinConstraint = 0``). On by default:
        it is what ASTRA users run and the stronger baseline; ``False`` gives the plain algebraic SIRT.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    progress
        Called as ``progress(done, total)`` after each volume.

    Returns
    -------
    np.ndarray
        Volumes (n, nz, ny, nx), float32: the volume at frame ``i``'s time is ``result[i]``.
    """
    frames = np.asarray(frames, dtype=np.float32)
    angles = np.asarray(angles_deg, dtype=np.float64).reshape(-1)
    _check_inputs(frames, angles, volume_shape)
    if window < 1:
        raise UserError(f"window must be >= 1 frame; got {window}")
    if iterations < 0:
        raise UserError(f"iterations must be >= 0; got {iterations}")
    dev = resolve_device(device)
    count = frames.shape[0]
    out = np.empty((count, *tuple(volume_shape)), dtype=np.float32)
    x = _start(None, volume_shape, dev)
    with torch.no_grad():
        for i in range(count):
            start, stop = window_bounds(i, count, window)
            solver = _Sirt(frames[start:stop], angles[start:stop], volume_shape, dev)
            x = solver.run(x if warm_start else torch.zeros_like(x), iterations, nonnegative)
            out[i] = x.cpu().numpy()
            if progress is not None:
                progress(i + 1, count)
    return out
