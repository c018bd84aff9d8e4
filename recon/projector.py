"""Parallel-beam projector for the tiltstream geometry, with its exact adjoint, batched, differentiable.

Geometry: docs/design.md 2. The projection is voxel driven with the strip (area) footprint of each voxel
(mass conserving);
:class:`ProjectFunction` is the autograd wrapper whose backward is the exact adjoint, and
:class:`ParallelProjector` applies a cached sparse footprint matrix for a fixed angle set to whole
volumes. How and why: docs/method.md 10.
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import scipy.sparse
import torch


FOOTPRINT_PIXELS = 3  # detector pixels a voxel's footprint can touch (its width is at most sqrt(2) pixels)


def _trapezoid_cdf(t: torch.Tensor, wide: torch.Tensor, narrow: torch.Tensor) -> torch.Tensor:
    """Integral from -inf to ``t`` of a voxel's footprint: the unit-area trapezoid that is the convolution of
    two boxes of widths ``wide >= narrow`` (pixels), centred on 0. ``narrow`` may be 0 (a box).

    Summed over its three parts (rising over ``narrow``, flat over ``wide - narrow``, falling over
    ``narrow``), each clamped to its own interval, so nothing divides by a vanishing width."""
    inner = (wide - narrow) / 2.0
    ramp = narrow.clamp_min(1e-12)
    rising = (t + inner + narrow).clamp(min=0.0).minimum(narrow)
    falling = (t - inner).clamp(min=0.0).minimum(narrow)
    flat = (t + inner).clamp(min=0.0).minimum(wide - narrow)
    return (rising * rising / (2.0 * ramp) + flat + falling - falling * falling / (2.0 * ramp)) / wide


def _footprint(angles_rad: torch.Tensor, nz: int, nx: int, n_det: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Detector pixels and weights of every voxel of a ``(nz, nx)`` slice: the strip (area) model.

    A unit voxel seen along the ray at tilt ``alpha`` covers, on the detector, the trapezoid that is the
    convolution of two boxes of widths ``|cos alpha|`` and ``|sin alpha|``, centred on the voxel's
    coordinate ``u``; a pixel's weight is the trapezoid's area over that pixel, so the weights of a voxel
    sum to 1 (mass conserving) while its footprint is on the detector. At ``alpha = 0`` they are linear
    interpolation weights. (Splatting every voxel with linear weights instead leaves a moire of stripes in
    the projection of a smooth object at oblique angles: docs/method.md 10, "The projector".)

    Parameters
    ----------
    angles_rad
        Tilt angles, radians, shape (B,).

    Returns
    -------
    index : long tensor (B, FOOTPRINT_PIXELS, nz*nx)
        Detector pixels around each voxel (clamped into range).
    weight : tensor (B, FOOTPRINT_PIXELS, nz*nx)
        Their weights; zero where the pixel lies off the detector.
    """
    dtype, device = angles_rad.dtype, angles_rad.device
    z = torch.arange(nz, dtype=dtype, device=device) - (nz - 1) / 2.0
    x = torch.arange(nx, dtype=dtype, device=device) - (nx - 1) / 2.0
    cos = torch.cos(angles_rad)[:, None, None]
    sin = torch.sin(angles_rad)[:, None, None]
    u = x[None, None, :] * cos + z[None, :, None] * sin + (n_det - 1) / 2.0  # (B, nz, nx)
    u = u.reshape(angles_rad.shape[0], 1, nz * nx)
    wide = torch.maximum(cos.abs(), sin.abs()).reshape(-1, 1, 1)
    narrow = torch.minimum(cos.abs(), sin.abs()).reshape(-1, 1, 1)
    first = torch.round(u) - 1.0  # the pixels first, first + 1, first + 2 cover the footprint
    edges = first - 0.5 - u + torch.arange(FOOTPRINT_PIXELS + 1, dtype=dtype, device=device)[None, :, None]
    area = _trapezoid_cdf(edges, wide, narrow)  # (B, 4, nz*nx): up to each pixel edge
    weight = area[:, 1:] - area[:, :-1]
    index = first.long() + torch.arange(FOOTPRINT_PIXELS, device=device)[None, :, None]
    weight = torch.where((index >= 0) & (index < n_det), weight, torch.zeros_like(weight))
    return index.clamp(0, n_det - 1), weight


def _scatter(slices: torch.Tensor, index: torch.Tensor, weight: torch.Tensor, n_det: int) -> torch.Tensor:
    batch, stack, nz, nx = slices.shape
    flat = slices.reshape(batch, stack, nz * nx)
    out = torch.zeros(batch, stack, n_det, dtype=slices.dtype, device=slices.device)
    shape = (batch, stack, nz * nx)
    for k in range(FOOTPRINT_PIXELS):
        out.scatter_add_(2, index[:, None, k].expand(shape), flat * weight[:, None, k])
    return out


def _gather(rows: torch.Tensor, index: torch.Tensor, weight: torch.Tensor, nz: int, nx: int) -> torch.Tensor:
    batch, stack, _ = rows.shape
    shape = (batch, stack, nz * nx)
    back = sum(torch.gather(rows, 2, index[:, None, k].expand(shape)) * weight[:, None, k]
               for k in range(FOOTPRINT_PIXELS))
    return back.reshape(batch, stack, nz, nx)


def _adjoint(rows: torch.Tensor, angles_rad: torch.Tensor, nz: int, nx: int) -> torch.Tensor:
    return _gather(rows, *_footprint(angles_rad.to(rows.dtype), nz, nx, rows.shape[2]), nz, nx)


class ProjectFunction(torch.autograd.Function):
    """Autograd wrapper: forward projection whose backward is the exact adjoint (backprojection), with the
    footprint computed once for both."""

    @staticmethod
    def forward(ctx, slices: torch.Tensor, angles_rad: torch.Tensor, n_det: int) -> torch.Tensor:
        _, _, nz, nx = slices.shape
        index, weight = _footprint(angles_rad.to(slices.dtype), nz, nx, n_det)
        ctx.save_for_backward(index, weight)
        ctx.slice_shape = (nz, nx)
        return _scatter(slices, index, weight, n_det)

    @staticmethod
    def backward(ctx, grad_rows: torch.Tensor):
        index, weight = ctx.saved_tensors
        return _gather(grad_rows.contiguous(), index, weight.to(grad_rows.dtype), *ctx.slice_shape), None, None


def footprint_matrix(angles_rad: np.ndarray, nz: int, nx: int, n_det: int) -> scipy.sparse.csr_matrix:
    """The forward operator of one ``(nz, nx)`` slice at each angle as a float64 CSR matrix.

    Rows are ``angle * n_det + detector pixel``, columns ``z * nx + x``; the entries are the
    :func:`_footprint` weights (float64), so ``M @ slice.ravel()`` equals :func:`project` of the slice.
    """
    angles = torch.as_tensor(np.asarray(angles_rad, dtype=np.float64))
    index, weight = _footprint(angles, nz, nx, n_det)
    offset = (torch.arange(angles.shape[0]) * n_det)[:, None, None]
    rows = (index + offset).numpy().ravel()
    vals = weight.numpy().ravel()
    cols = np.tile(np.arange(nz * nx), FOOTPRINT_PIXELS * angles.shape[0])
    # zero weights are the off-detector (clamped) pixels and the pixels a narrow footprint misses: dropping
    # them leaves no duplicates (the three pixels of a voxel are distinct)
    keep = vals != 0
    return scipy.sparse.csr_matrix((vals[keep], (rows[keep], cols[keep])),
                                   shape=(angles.shape[0] * n_det, nz * nx))


def _torch_csr(matrix: scipy.sparse.csr_matrix, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    matrix = matrix.tocsr()
    matrix.sort_indices()
    with warnings.catch_warnings():  # torch flags its CSR support as beta; the product used here is stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(torch.from_numpy(matrix.indptr.astype(np.int64)),
                                       torch.from_numpy(matrix.indices.astype(np.int64)),
                                       torch.from_numpy(matrix.data).to(dtype), size=matrix.shape,
                                       check_invariants=False).to(device)


class SparseApply(torch.autograd.Function):
    """``matrix @ dense`` whose backward is ``transpose @ grad`` with a precomputed ``transpose``."""

    @staticmethod
    def forward(ctx, dense: torch.Tensor, matrix: torch.Tensor, transpose: torch.Tensor) -> torch.Tensor:
        ctx.transpose = transpose
        return matrix @ dense

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return ctx.transpose @ grad.contiguous(), None, None


def _check_batch(name: str, tensor: torch.Tensor, ndim: int, angles_rad: torch.Tensor) -> None:
    if tensor.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions; got shape {tuple(tensor.shape)}")
    if angles_rad.ndim != 1 or angles_rad.shape[0] != tensor.shape[0]:
        raise ValueError(f"angles_rad must have shape ({tensor.shape[0]},) to match {name}; "
                         f"got {tuple(angles_rad.shape)}")


def project(slices: torch.Tensor, angles_rad: torch.Tensor, n_det: int | None = None) -> torch.Tensor:
    """Forward-project orthoslices, differentiably.

    Parameters
    ----------
    slices
        Shape (B, S, nz, nx) or (B, nz, nx): batch B of S slices each, all of batch item b at angle b.
    angles_rad
        Tilt angles, radians, shape (B,).
    n_det
        Detector pixels per row; ``nx`` by default.

    Returns
    -------
    torch.Tensor
        Rows, shape (B, S, n_det) or (B, n_det), sums in voxel units.
    """
    squeeze = slices.ndim == 3
    slices4 = slices[:, None] if squeeze else slices
    _check_batch("slices", slices4, 4, angles_rad)
    rows = ProjectFunction.apply(slices4, angles_rad, int(n_det or slices4.shape[-1]))
    return rows[:, 0] if squeeze else rows


def backproject(rows: torch.Tensor, angles_rad: torch.Tensor, slice_shape: tuple[int, int]) -> torch.Tensor:
    """The exact adjoint of :func:`project`: rows (B, S, n_det) or (B, n_det) -> slices (B, S, nz, nx)."""
    squeeze = rows.ndim == 2
    rows3 = rows[:, None] if squeeze else rows
    _check_batch("rows", rows3, 3, angles_rad)
    back = _adjoint(rows3.contiguous(), angles_rad, *slice_shape)
    return back[:, 0] if squeeze else back


RECENT_OPERATORS = 2  # slice operators shared between projectors (a 128^2 slice at 77 angles: ~60 MB with its transpose)
_RECENT: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
_RECENT_LOCK = threading.Lock()


class ParallelProjector:
    """A projection operator for a fixed set of tilt angles over whole volumes (tomosipo-style).

    Maps a volume ``(nz, ny, nx)`` to a stack of frames ``(n_angles, ny, n_det)``; ``.T`` is the exact
    adjoint. Works on numpy arrays (returns numpy) and torch tensors (returns torch, same device).

    Parameters
    ----------
    angles_deg
        Tilt angles, degrees.
    volume_shape
        ``(nz, ny, nx)`` voxels.
    n_det
        Detector pixels per row; ``nx`` by default.
    """

    def __init__(self, angles_deg: Sequence[float] | np.ndarray, volume_shape: tuple[int, int, int],
                 n_det: int | None = None) -> None:
        self.angles_deg = np.asarray(angles_deg, dtype=np.float64).reshape(-1)
        if len(volume_shape) != 3 or min(volume_shape) < 1:
            raise ValueError(f"volume_shape must be (nz, ny, nx) with positive sizes; got {volume_shape}")
        self.volume_shape = tuple(int(n) for n in volume_shape)
        self.n_det = int(n_det or self.volume_shape[2])
        self._own: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def matrices(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The slice operator ``M`` and its transpose as torch CSR tensors, shared by every projector of the
        same angles, shape, dtype and device among the last :data:`RECENT_OPERATORS` built (searches that
        reconstruct the same geometry hundreds of times build it once); this projector keeps its own."""
        own_key = (dtype, torch.device(device))
        if own_key not in self._own:
            nz, _, nx = self.volume_shape
            key = (self.angles_deg.tobytes(), nz, nx, self.n_det, *own_key)
            with _RECENT_LOCK:
                shared = _RECENT.get(key)
                if shared is not None:
                    _RECENT.move_to_end(key)
            if shared is None:
                matrix = footprint_matrix(np.deg2rad(self.angles_deg), nz, nx, self.n_det)
                shared = (_torch_csr(matrix, dtype, own_key[1]), _torch_csr(matrix.T.tocsr(), dtype, own_key[1]))
                with _RECENT_LOCK:
                    _RECENT[key] = shared
                    while len(_RECENT) > RECENT_OPERATORS:
                        _RECENT.popitem(last=False)
            self._own[own_key] = shared
        return self._own[own_key]

    @property
    def domain_shape(self) -> tuple[int, int, int]:
        """Volume shape (nz, ny, nx)."""
        return self.volume_shape  # type: ignore[return-value]

    @property
    def range_shape(self) -> tuple[int, int, int]:
        """Frame stack shape (n_angles, ny, n_det)."""
        return (len(self.angles_deg), self.volume_shape[1], self.n_det)

    @property
    def T(self) -> _AdjointProjector:
        """The adjoint (backprojection) operator."""
        return _AdjointProjector(self)

    def __call__(self, volume: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        as_numpy = isinstance(volume, np.ndarray)
        vol = torch.from_numpy(np.ascontiguousarray(volume)) if as_numpy else volume
        if tuple(vol.shape) != self.domain_shape:
            raise ValueError(f"volume shape {tuple(vol.shape)} differs from the operator's {self.domain_shape}")
        nz, ny, nx = self.volume_shape
        matrix, transpose = self.matrices(vol.dtype, vol.device)
        columns = vol.permute(0, 2, 1).reshape(nz * nx, ny)  # one column per orthoslice
        rows = SparseApply.apply(columns, matrix, transpose)  # (n_angles * n_det, ny)
        frames = rows.reshape(len(self.angles_deg), self.n_det, ny).permute(0, 2, 1).contiguous()
        return frames.numpy() if as_numpy else frames

    def __repr__(self) -> str:
        return (f"ParallelProjector(angles_deg={self.angles_deg.tolist()!r}, "
                f"volume_shape={self.volume_shape!r}, n_det={self.n_det!r})")


class _AdjointProjector:
    """Backprojection of a frame stack (n_angles, ny, n_det) into a volume (nz, ny, nx)."""

    def __init__(self, forward: ParallelProjector) -> None:
        self.forward = forward

    @property
    def domain_shape(self) -> tuple[int, int, int]:
        return self.forward.range_shape

    @property
    def range_shape(self) -> tuple[int, int, int]:
        return self.forward.domain_shape

    @property
    def T(self) -> ParallelProjector:
        return self.forward

    def __call__(self, frames: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        as_numpy = isinstance(frames, np.ndarray)
        fr = torch.from_numpy(np.ascontiguousarray(frames)) if as_numpy else frames
        if tuple(fr.shape) != self.domain_shape:
            raise ValueError(f"frames shape {tuple(fr.shape)} differs from the operator's {self.domain_shape}")
        nz, ny, nx = self.forward.volume_shape
        matrix, transpose = self.forward.matrices(fr.dtype, fr.device)
        columns = fr.permute(0, 2, 1).reshape(-1, ny)  # (n_angles * n_det, ny)
        back = SparseApply.apply(columns, transpose, matrix)  # (nz * nx, ny)
        volume = back.reshape(nz, nx, ny).permute(0, 2, 1).contiguous()
        return volume.numpy() if as_numpy else volume


def project_volume(volume: np.ndarray, angle_deg: float) -> np.ndarray:
    """One frame (ny, n_det=nx) of a volume (nz, ny, nx) at tilt ``angle_deg``, float32 numpy."""
    frames = ParallelProjector([angle_deg], volume.shape)(np.asarray(volume, dtype=np.float32))
    return np.asarray(frames[0])

