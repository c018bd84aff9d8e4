"""Projector: exact adjoint, autograd = adjoint, alpha = 0 sum, mass conservation, no moire at oblique angles,
agreement with ASTRA (equal to its strip projector)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tiltstream.recon.projector import ParallelProjector, backproject, footprint_matrix, project, project_volume

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="no CUDA device on this machine")),
]


def _smooth_phantom(n: int) -> np.ndarray:
    """Two off-centre Gaussian blobs inside the central sphere (asymmetric in z and x), float32."""
    z, y, x = np.mgrid[:n, :n, :n] - (n - 1) / 2.0
    scale = n / 32.0
    blob = np.exp(-((x - 3 * scale) ** 2 + (z + 2 * scale) ** 2 + y**2) / (60 * scale**2))
    blob += 0.5 * np.exp(-((x + 6 * scale) ** 2 + (z - 5 * scale) ** 2 + (y - 3 * scale) ** 2) / (20 * scale**2))
    return blob.astype(np.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n_det", [None, 23])
def test_project_backproject_dot_product_float64(device, n_det):
    """<A x, y> == <x, A^T y> for random slices, angles and rows, float64, relative error < 1e-6."""
    gen = torch.Generator().manual_seed(1)
    slices = torch.rand(5, 3, 12, 17, dtype=torch.float64, generator=gen).to(device)
    angles = ((torch.rand(5, dtype=torch.float64, generator=gen) - 0.5) * 3.0).to(device)
    det = n_det or 17
    rows = torch.randn(5, 3, det, dtype=torch.float64, generator=gen).to(device)
    lhs = (project(slices, angles, det) * rows).sum()
    rhs = (slices * backproject(rows, angles, (12, 17))).sum()
    assert abs(lhs - rhs).item() / abs(lhs).item() < 1e-6


@pytest.mark.parametrize("device", DEVICES)
def test_parallel_projector_dot_product_float64(device):
    """The cached-matrix operator and its .T are exact transposes (float64, random inputs)."""
    gen = torch.Generator().manual_seed(2)
    op = ParallelProjector(np.linspace(-70, 70, 9) + 0.3, (11, 6, 13), n_det=15)
    vol = torch.rand(op.domain_shape, dtype=torch.float64, generator=gen).to(device)
    frames = torch.randn(op.range_shape, dtype=torch.float64, generator=gen).to(device)
    lhs = (op(vol) * frames).sum()
    rhs = (vol * op.T(frames)).sum()
    assert abs(lhs - rhs).item() / abs(lhs).item() < 1e-6
    assert op.T.T is op and op.T.domain_shape == op.range_shape


@pytest.mark.parametrize("device", DEVICES)
def test_autograd_gradient_is_adjoint_of_residual(device):
    """d/dx 0.5 ||A x - b||^2 == A^T (A x - b), for project() and for ParallelProjector."""
    gen = torch.Generator().manual_seed(3)
    angles = torch.tensor([-1.1, -0.2, 0.4, 1.2], dtype=torch.float64, device=device)
    x = torch.rand(4, 2, 10, 10, dtype=torch.float64, generator=gen).to(device).requires_grad_()
    b = torch.rand(4, 2, 10, dtype=torch.float64, generator=gen).to(device)
    residual = project(x, angles) - b
    (0.5 * (residual**2).sum()).backward()
    expected = backproject(residual.detach(), angles, (10, 10))
    torch.testing.assert_close(x.grad, expected, rtol=1e-12, atol=1e-12)

    op = ParallelProjector([-50.0, 5.0, 33.0], (8, 5, 9))
    vol = torch.rand(op.domain_shape, dtype=torch.float64, generator=gen).to(device).requires_grad_()
    target = torch.rand(op.range_shape, dtype=torch.float64, generator=gen).to(device)
    res = op(vol) - target
    (0.5 * (res**2).sum()).backward()
    torch.testing.assert_close(vol.grad, op.T(res.detach()), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_alpha_zero_is_sum_over_z(device):
    """At alpha = 0 a frame equals volume.sum(axis=0) (docs/design.md 2), on both code paths."""
    vol = np.random.default_rng(4).random((7, 5, 9)).astype(np.float32)
    np.testing.assert_allclose(project_volume(vol, 0.0), vol.sum(axis=0), rtol=1e-6)
    frames = ParallelProjector([0.0], vol.shape)(torch.from_numpy(vol).to(device))
    np.testing.assert_allclose(frames[0].cpu().numpy(), vol.sum(axis=0), rtol=1e-6)
    slices = torch.from_numpy(vol).permute(1, 0, 2)[None].to(device)
    rows = project(slices, torch.zeros(1, device=device))
    np.testing.assert_allclose(rows[0].cpu().numpy(), vol.sum(axis=0), rtol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_mass_conservation(device):
    """Every frame of a volume supported inside the inscribed cylinder sums to the volume's sum."""
    n = 16
    z, y, x = np.mgrid[:n, :n, :n] - (n - 1) / 2.0
    vol = np.random.default_rng(5).random((n, n, n)) * ((x**2 + z**2) < (n / 2 - 1) ** 2)
    op = ParallelProjector(np.linspace(-85, 85, 13), vol.shape)
    frames = op(torch.from_numpy(vol).to(device)).cpu().numpy()  # float64 in, float64 out
    np.testing.assert_allclose(frames.sum(axis=(1, 2)), vol.sum(), rtol=1e-12)


def test_matrix_path_equals_scatter_path():
    """ParallelProjector's cached matrix gives the same frames and backprojection as project()."""
    vol = torch.from_numpy(_smooth_phantom(16))
    angles_deg = np.linspace(-70, 70, 7)
    op = ParallelProjector(angles_deg, vol.shape)
    angles_rad = torch.as_tensor(np.deg2rad(angles_deg), dtype=torch.float32)
    scatter = project(vol.permute(1, 0, 2)[None].expand(7, 16, 16, 16), angles_rad)
    torch.testing.assert_close(op(vol), scatter, rtol=1e-5, atol=1e-5)
    back = backproject(scatter, angles_rad, (16, 16)).sum(dim=0).permute(1, 0, 2)
    torch.testing.assert_close(op.T(scatter), back, rtol=1e-5, atol=1e-5)
    assert footprint_matrix(angles_rad.numpy(), 16, 16, 16).shape == (7 * 16, 16 * 16)


def test_numpy_in_numpy_out_and_shape_checks():
    op = ParallelProjector([10.0, 20.0], (4, 3, 5))
    frames = op(np.ones((4, 3, 5), dtype=np.float32))
    assert isinstance(frames, np.ndarray) and frames.shape == (2, 3, 5)
    with pytest.raises(ValueError, match="differs"):
        op(np.ones((4, 3, 6), dtype=np.float32))
    with pytest.raises(ValueError, match="differs"):
        op.T(np.ones((3, 3, 5), dtype=np.float32))


def test_a_disc_projects_to_its_chord_at_every_angle():
    """A uniform disc of radius 20 voxels in a 64^2 slice (area-sampled, 8x8 per voxel) projects to its chord
    2 sqrt(r^2 - u^2) within 2 % of the peak at every angle 0..90 deg in 0.5-deg steps, away from the rim
    (|u| < r - 2; what is left is the disc's voxelisation). Measured when written: at most 1.1 % (76.5 deg),
    median 0.43 %. Splatting each voxel with linear weights, as the projector did until 2026-12-07, left a
    moire of stripes of 10.4 % of the peak at 45 deg (median 0.53 %)."""
    n, radius, fine = 64, 20.0, 8
    grid = (np.mgrid[:n * fine, :n * fine] + 0.5) / fine - n / 2
    disc = ((grid[0] ** 2 + grid[1] ** 2) <= radius**2).reshape(n, fine, n, fine).mean(axis=(1, 3))
    u = np.arange(n) - (n - 1) / 2
    chord = 2 * np.sqrt(np.clip(radius**2 - u**2, 0, None))
    inner = np.abs(u) < radius - 2
    angles_rad = torch.from_numpy(np.deg2rad(np.arange(0.0, 90.5, 0.5)))
    rows = project(torch.from_numpy(disc)[None].expand(len(angles_rad), n, n), angles_rad).numpy()
    worst = np.abs(rows - chord)[:, inner].max(axis=1) / chord.max()
    assert worst.max() < 0.02, f"{worst.max():.4f} at {0.5 * int(np.argmax(worst))} deg"


def test_agrees_with_astra_projectors():
    """Frames equal ASTRA's 2-D parallel 'strip' projector at angle -alpha (rows = z, columns = x) and match
    its 'linear' (ray-driven Joseph) one up to interpolation.

    Reference: astra-toolbox 2.5 CPU, ``create_projector(kind, parallel geometry, vol_geom(n, n))`` per
    orthoslice. Both this projector and ASTRA's strip one weight a voxel by the area of its footprint over
    each detector pixel: measured relative L2 difference 1e-6 (float32); tolerance 1e-5. Against
    'linear': measured 0.6 % on this smooth phantom; tolerance 2 %. With +alpha the difference is far
    larger, which shows the sign convention is what is being tested.
    """
    astra = pytest.importorskip("astra", reason="astra-toolbox (test extra) not installed")
    n = 32
    vol = _smooth_phantom(n)
    angles_deg = np.linspace(-70, 70, 15)
    ours = ParallelProjector(angles_deg, vol.shape)(vol)  # (angles, ny, n)
    vol_geom = astra.create_vol_geom(n, n)

    def astra_frames(sign: float, kind: str = "linear") -> np.ndarray:
        proj_geom = astra.create_proj_geom("parallel", 1.0, n, np.deg2rad(sign * angles_deg))
        projector = astra.create_projector(kind, proj_geom, vol_geom)
        out = np.empty_like(ours)
        for k in range(n):
            sino_id, sino = astra.create_sino(vol[:, k, :], projector)
            out[:, k, :] = sino
            astra.data2d.delete(sino_id)
        astra.projector.delete(projector)
        return out

    assert np.linalg.norm(ours - astra_frames(-1.0, "strip")) / np.linalg.norm(ours) < 1e-5
    rel = np.linalg.norm(ours - astra_frames(-1.0)) / np.linalg.norm(ours)
    assert rel < 0.02
    wrong_sign = np.linalg.norm(ours - astra_frames(+1.0)) / np.linalg.norm(ours)
    assert wrong_sign > 10 * rel
