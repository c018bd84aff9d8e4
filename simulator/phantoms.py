"""Dynamic phantoms: seeded volume-time series (T, Z, Y, X) of the paper's four specimens.

:func:`make_phantom` gives a float32 array ``(steps, size, size, size)`` of ``nanoshell``, ``nanorod``,
``nanostar`` or ``nanocube``; ``volumes[i]`` is the specimen after ``i`` deformation steps, in HAADF
mass-thickness units (Au 1.0, Ag 0.3, silica 0.05). One seeded CPU generator makes it the same on any
device; work is vectorised torch restricted to the box around the specimen (:func:`_box`). The
specimens: docs/method.md 4; speed and threads: docs/benchmarks/speed.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from tiltstream.errors import UserError

PHANTOMS = ("nanoshell", "nanorod", "nanostar", "nanocube")
MIN_SIZE = 8
MAX_SIZE = 512
AU = 1.0
AG = 0.3
SILICA = 0.05


def _grid(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centred voxel coordinates ``(z, y, x)``, each (size, size, size), voxels (centre at (n-1)/2)."""
    c = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2.0
    return torch.meshgrid(c, c, c, indexing="ij")


def _gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalised 3-D Gaussian (outer product of 1-D ones), radius ceil(3 sigma) voxels."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    g /= g.sum()
    return g[:, None, None] * g[None, :, None] * g[None, None, :]


def _compose(kernels: list[np.ndarray]) -> np.ndarray:
    """The kernel of applying ``kernels`` one after another (full convolution of odd-sized 3-D kernels)."""
    out = kernels[0]
    for kernel in kernels[1:]:
        shape = tuple(a + b - 1 for a, b in zip(out.shape, kernel.shape))
        out = np.fft.irfftn(np.fft.rfftn(out, shape, axes=(0, 1, 2)) * np.fft.rfftn(kernel, shape, axes=(0, 1, 2)),
                            shape, axes=(0, 1, 2))
    return out


def _convolve_same(volume: torch.Tensor, kernel_hat: torch.Tensor, fft_shape: tuple[int, ...],
                   reach: int) -> torch.Tensor:
    """Linear (zero-padded) convolution of ``volume`` with a kernel given by its rfftn over ``fft_shape``;
    returns the centred part, same shape as ``volume`` (``reach`` = kernel radius, voxels)."""
    spectrum = torch.fft.rfftn(volume, s=fft_shape) * kernel_hat
    full = torch.fft.irfftn(spectrum, s=fft_shape)
    nz, ny, nx = volume.shape
    return full[reach:reach + nz, reach:reach + ny, reach:reach + nx]


def _box(mask: torch.Tensor, margin: int) -> tuple[slice, slice, slice]:
    """Bounding box of the non-zero voxels of ``mask`` grown by ``margin`` voxels, clipped to the grid.

    Work done inside this box equals work on the whole grid when nothing outside it is non-zero and
    the operators reach at most ``margin`` voxels (zero padding at the box edge = zeros outside)."""
    slices = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hit = torch.nonzero(mask.abs().amax(dim=other) > 0).flatten()
        if hit.numel() == 0:
            slices.append(slice(0, mask.shape[axis]))
            continue
        lo = max(int(hit[0]) - margin, 0)
        hi = min(int(hit[-1]) + margin + 1, mask.shape[axis])
        slices.append(slice(lo, hi))
    return tuple(slices)  # type: ignore[return-value]


def _alloy_step(au: torch.Tensor, metal: torch.Tensor, gaussian: np.ndarray,
                generator: torch.Generator) -> torch.Tensor:
    """One alloying step (paper Methods, Eq. 5) on the Au fraction ``au`` inside the mask ``metal``.

    The Au is isolated, filtered with the Gaussian ``gaussian`` (sigma 2.5 voxels at 128^3) and five
    convolutions with random normalised 3^3 kernels, giving ``D`` (the six filters are applied at once, as
    their composed kernel, by FFT: the same linear convolution); the outer shape is enforced by masking
    with ``metal`` and the total intensity by rescaling ``D`` so that the Au it holds is conserved (values
    are kept <= 1 by clipping and rescaling again). The caller forms ``I = AG (1 - D) + AU D``; with
    AU = 1 and AG = 0.3 this is Eq. 5, and conserving the Au conserves the total intensity.

    The paper isolates "intensities >= 1.0"; after one Gaussian no voxel is exactly 1.0 any more, so the
    quantity carried from step to step is the Au fraction ``D`` itself, which at step 0 is that core.
    """
    randoms = []
    for _ in range(5):
        kernel = torch.rand((3, 3, 3), generator=generator, dtype=torch.float64).numpy()
        randoms.append(kernel / kernel.sum())
    kernel = _compose([gaussian, *randoms])
    reach = kernel.shape[0] // 2
    fft_shape = tuple(n + 2 * reach for n in au.shape)
    kernel_hat = torch.fft.rfftn(torch.from_numpy(kernel).to(au.device, au.dtype), s=fft_shape)
    total = au.sum()
    d = torch.clamp(_convolve_same(au, kernel_hat, fft_shape, reach), min=0.0) * metal
    for _ in range(4):
        d = torch.clamp(d * (total / d.sum()), max=1.0)
    return d * (total / d.sum())


def _nanorod_initial(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Au fraction and metal mask of two coaxial rods (axis along x), lengths/radii scaled with size."""
    z, y, x = _grid(size, device)
    s = size / 128.0
    r = torch.sqrt(z * z + y * y)
    shell = (r <= 16.0 * s) & (x.abs() <= 44.0 * s)
    core = (r <= 8.0 * s) & (x.abs() <= 30.0 * s)
    return core.float(), shell.float()


def _nanocube_initial(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Au fraction, metal mask and silica mask of a silica-coated Au@Ag cube (cube faces along axes)."""
    z, y, x = _grid(size, device)
    s = size / 128.0
    cheb = torch.maximum(torch.maximum(z.abs(), y.abs()), x.abs())
    core = cheb <= 14.0 * s
    metal = cheb <= 26.0 * s
    coat = (cheb <= 36.0 * s) & ~metal
    return core.float(), metal.float(), coat.float()


def _alloy_series(au: torch.Tensor, metal: torch.Tensor, background: torch.Tensor, steps: int,
                  sigma: float, rate: float, generator: torch.Generator, out: np.ndarray,
                  progress: Callable[[int], None] | None) -> None:
    """Alloy for ``steps`` steps, writing ``(AG (1 - D) + AU D) * metal + background`` into ``out``.

    Each time step moves ``D`` a fraction ``rate`` of the way to one Eq. 5 step:
    ``D <- (1 - rate) D + rate step(D)``. One full Eq. 5 step (the filters' reach is a few voxels
    whatever the grid, since the five 3^3 kernels are not scaled) alloys a 32^3-64^3 rod 70-95 % at
    once, leaving a specimen that is static after step 1; with the default ``rate = 3 / steps`` the
    alloying degree (Eq. 10) rises gradually to about 95 % over the series (measured at 32^3 x 60 and
    64^3 x 100), like the paper's Fig. 3. The mix is convex, so the Au and the outer shape stay conserved.

    All work happens in the box around the metal grown by the filters' reach (exact, see :func:`_box`)."""
    gaussian = _gaussian_kernel(sigma)
    box = _box(metal, gaussian.shape[0] // 2 + 5)  # Gaussian radius + five 3^3 kernels
    au, metal = au[box].contiguous(), metal[box].contiguous()
    base = background.cpu().numpy()
    background = background[box]
    for step in range(steps):
        if step > 0:
            au = (1.0 - rate) * au + rate * _alloy_step(au, metal, gaussian, generator)
        out[step] = base
        out[step][box] = ((AG * (1.0 - au) + AU * au) * metal + background).cpu().numpy()
        if progress:
            progress(step + 1)


def _nanoshell_initial(size: int, device: torch.device) -> torch.Tensor:
    """Occupancy (0/1) of a hollow spherical Au cage with six circular windows along the axes."""
    z, y, x = _grid(size, device)
    s = size / 128.0
    r = torch.sqrt(z * z + y * y + x * x)
    shell = (r <= 40.0 * s) & (r >= 33.0 * s)
    window = 14.0 * s
    for a, b in ((y, x), (z, x), (z, y)):  # windows where the shell crosses each axis
        shell &= torch.sqrt(a * a + b * b) > window
    return shell.float()


def _knock_on(occ: torch.Tensor, strength: float, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Remove surface voxels with probability ``strength * rate * exposed / 6`` (exposed empty 6-neighbours)."""
    padded = F.pad(occ, (1, 1, 1, 1, 1, 1))
    neighbours = (padded[:-2, 1:-1, 1:-1] + padded[2:, 1:-1, 1:-1] + padded[1:-1, :-2, 1:-1]
                  + padded[1:-1, 2:, 1:-1] + padded[1:-1, 1:-1, :-2] + padded[1:-1, 1:-1, 2:])
    probability = strength * rate * (6.0 - neighbours) / 6.0
    draw = torch.rand(occ.shape, generator=generator).to(occ.device)
    return occ * (draw >= probability).float()


def _elastic(occ: torch.Tensor, amplitude_vox: float, generator: torch.Generator) -> torch.Tensor:
    """Warp by a smooth random displacement field (max ``amplitude_vox`` voxels), keep the voxel count."""
    count = int(occ.sum().item())
    if amplitude_vox <= 0 or count == 0:
        return occ
    box = _box(occ, int(math.ceil(amplitude_vox)) + 2)  # material moves at most the amplitude
    crop = occ[box]
    shape = crop.shape
    coarse = tuple(max(2, math.ceil(n / 16) + 1) for n in shape)  # control points ~16 voxels apart
    noise = torch.randn((1, 3, *coarse), generator=generator).to(occ.device)
    field = F.interpolate(noise, size=shape, mode="trilinear", align_corners=True)[0]
    field = field * (amplitude_vox / field.abs().amax().clamp_min(1e-12))
    axes = [torch.linspace(-1.0, 1.0, n, device=occ.device) for n in shape]
    gz, gy, gx = torch.meshgrid(*axes, indexing="ij")
    scales = [2.0 / max(n - 1, 1) for n in shape]  # voxels -> normalised coordinates
    grid = torch.stack((gx + field[2] * scales[2], gy + field[1] * scales[1], gz + field[0] * scales[0]),
                       dim=-1)
    warped = F.grid_sample(crop[None, None], grid[None], mode="bilinear", padding_mode="zeros",
                           align_corners=True)[0, 0]
    flat = warped.reshape(-1) + crop.reshape(-1) * 1e-4  # ties resolved toward the old shape
    keep = torch.topk(flat, count).indices
    kept = torch.zeros_like(flat)
    kept[keep] = 1.0
    out = torch.zeros_like(occ)
    out[box] = kept.reshape(shape)
    return out


def _nanoshell_series(size: int, steps: int, generator: torch.Generator, device: torch.device,
                      out: np.ndarray, progress: Callable[[int], None] | None, knock_on: float = 0.5,
                      elastic: float = 0.55, knock_on_rate: float = 0.06) -> None:
    occ = _nanoshell_initial(size, device)
    for step in range(steps):
        if step > 0:
            box = _box(occ, 1)
            eroded = torch.zeros_like(occ)
            eroded[box] = _knock_on(occ[box], knock_on, knock_on_rate, generator)
            occ = eroded
            occ = _elastic(occ, elastic * size / 128.0, generator)
        out[step] = occ.cpu().numpy()
        if progress:
            progress(step + 1)


def _nanostar_series(size: int, steps: int, generator: torch.Generator, device: torch.device,
                     out: np.ndarray, progress: Callable[[int], None] | None, branches: int = 8,
                     shrink: float = 0.8) -> None:
    """Branches (tapered cones) shrink linearly to ``1 - shrink`` of their length; the core takes the rest."""
    z, y, x = _grid(size, device)
    s = size / 128.0
    core_r0, length0, width0 = 14.0 * s, 54.0 * s, 7.0 * s
    directions = torch.randn((branches, 3), generator=generator)
    directions = (directions / directions.norm(dim=1, keepdim=True)).to(device)
    points = torch.stack((z, y, x), dim=-1).reshape(-1, 3)
    radius = points.norm(dim=1)
    order = torch.argsort(radius, stable=True)  # voxels nearest the centre first: the core grows outward
    # a shorter cone lies inside the longer one, so only voxels of the initial cones are ever tested
    cones = []
    for direction in directions:
        along = points @ direction
        across = torch.sqrt(torch.clamp((points * points).sum(dim=1) - along * along, min=0.0))
        inside = torch.nonzero((along >= 0) & (along <= length0)
                               & (across <= width0 * (1.0 - along / length0))).flatten()
        cones.append((inside, along[inside], across[inside]))

    def branch_mask(length: float) -> torch.Tensor:
        mask = torch.zeros(points.shape[0], dtype=torch.bool, device=device)
        for inside, along, across in cones:
            keep = (along <= length) & (across <= width0 * torch.clamp(1.0 - along / length, min=0.0))
            mask[inside[keep]] = True
        return mask

    start = branch_mask(length0) | (radius <= core_r0)
    target = int(start.sum().item())
    for step in range(steps):
        fraction = step / max(steps - 1, 1)
        branch = branch_mask(length0 * (1.0 - shrink * fraction))
        in_branch = int(branch.sum().item())
        need = max(target - in_branch, 0)
        candidates = order[:need + in_branch]
        occ = branch.clone()
        occ[candidates[~branch[candidates]][:need]] = True
        out[step] = occ.reshape(size, size, size).float().cpu().numpy()
        if progress:
            progress(step + 1)


def check_phantom_args(name: str, size: int, steps: int) -> None:
    """Validate a phantom request before any work; raises :class:`UserError` naming the bad value."""
    if name not in PHANTOMS:
        raise UserError(f"unknown phantom {name!r}; allowed: {', '.join(PHANTOMS)}")
    if not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise UserError(f"phantom size {size} is out of range; allowed {MIN_SIZE}..{MAX_SIZE} voxels")
    if int(steps) < 1:
        raise UserError(f"phantom steps {steps} must be at least 1")


def make_phantom(name: str, size: int, steps: int, seed: int = 0, device: str | torch.device = "cpu",
                 progress: Callable[[int], None] | None = None, **params: float) -> np.ndarray:
    """A seeded volume-time series of one of the four specimens.

    Parameters
    ----------
    name
        ``nanoshell``, ``nanorod``, ``nanostar`` or ``nanocube``.
    size
        Edge of the cubic grid, voxels (8..512).
    steps
        Number of time steps T (volume 0 is the initial specimen).
    seed
        Seed of every random draw.
    device
        Torch device to compute on (``cpu``, ``cuda``); the result is numpy either way.
    progress
        Called with the number of steps done after each step.
    **params
        Per-phantom strengths: nanoshell ``knock_on`` (0.5), ``elastic`` (0.55, displacement amplitude in
        voxels at 128^3), ``knock_on_rate`` (0.06); nanorod/nanocube ``sigma`` (2.5 voxels at 128^3) and
        ``alloy_rate`` (fraction of one Eq. 5 step applied per time step; default ``min(1, 3 / steps)``, see
        :func:`_alloy_series`);
        nanostar ``branches`` (8), ``shrink`` (0.8, fraction of branch length lost by the last step).

    Returns
    -------
    np.ndarray
        float32, shape (steps, size, size, size) = (T, Z, Y, X).
    """
    check_phantom_args(name, size, steps)
    size, steps = int(size), int(steps)
    device = torch.device(device)
    generator = torch.Generator().manual_seed(int(seed))
    out = np.empty((steps, size, size, size), dtype=np.float32)
    try:
        with torch.no_grad():
            if name == "nanoshell":
                _nanoshell_series(size, steps, generator, device, out, progress, **params)
            elif name == "nanostar":
                _nanostar_series(size, steps, generator, device, out, progress, **params)
            else:
                sigma = float(params.pop("sigma", 2.5)) * size / 128.0
                rate = float(params.pop("alloy_rate", min(1.0, 3.0 / steps)))
                if not 0.0 < rate <= 1.0:
                    raise UserError(f"alloy_rate must be in (0, 1]; got {rate}")
                if params:
                    raise TypeError(f"unexpected parameters {sorted(params)}")
                if name == "nanorod":
                    au, metal = _nanorod_initial(size, device)
                    background = torch.zeros_like(au)
                else:
                    au, metal, coat = _nanocube_initial(size, device)
                    background = SILICA * coat
                _alloy_series(au, metal, background, steps, sigma, rate, generator, out, progress)
    except TypeError as exc:
        raise UserError(f"bad parameter for phantom {name!r}: {exc}") from None
    return out
