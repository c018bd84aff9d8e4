"""Metrics with numbers: identities, a known perturbation, a sphere's surface/volume, alloying, redistribution."""

from __future__ import annotations

import numpy as np
import pytest

from tiltstream.errors import UserError
from tiltstream.recon import metrics
from tiltstream.recon.metrics import (alloying_against_reference, alloying_degree, homogenised, metrics_table, otsu_mask,
                           rmse_paper, rmse_percent, ssim, ssim_paper, ssim_series, surface_to_volume,
                           volume_redistribution)


def _sphere(n: int, r: float, centre: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    z, y, x = np.mgrid[:n, :n, :n] - (n - 1) / 2.0
    cz, cy, cx = centre
    return (((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) <= r * r).astype(np.float32)


def _core_shell_series(steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A rod (shell 0.3) with a core (1.0) mixing linearly into its mean: (series, particle, mixing)."""
    n = 24
    z, y, x = np.mgrid[:n, :n, :n] - (n - 1) / 2.0
    radius = np.hypot(x, z)
    particle = (radius <= 7) & (np.abs(y) <= 9)
    core = (radius <= 3.5) & (np.abs(y) <= 6)
    start = np.where(core, 1.0, 0.3) * particle
    mean = start[particle].mean()
    mixing = np.linspace(0, 1, steps)
    series = np.stack([np.where(particle, (1 - a) * start + a * mean, 0.0) for a in mixing]).astype(np.float32)
    return series, particle, mixing


def test_identical_volumes():
    ref = _sphere(16, 5) * 2.0 + 0.1
    assert rmse_percent(ref, ref) == 0.0
    assert ssim(ref, ref) == pytest.approx(1.0, abs=1e-12)


def test_known_perturbation_gives_known_rmse():
    """ref: a unit sphere on zero; rec = ref * 1.05 -> 5 % of the range inside the (sphere) mask."""
    ref = _sphere(20, 6)
    assert rmse_percent(ref * 1.05, ref) == pytest.approx(5.0, rel=1e-6)
    mask = np.ones(ref.shape, dtype=bool)
    assert rmse_percent(ref + 0.02, ref, mask) == pytest.approx(2.0, rel=1e-5)
    noisy = ref + np.random.default_rng(0).normal(0, 0.1, ref.shape).astype(np.float32)
    assert rmse_percent(noisy, ref, mask) == pytest.approx(10.0, rel=0.02)
    assert 0.5 < ssim(noisy, ref) < 0.99


def test_paper_rmse_is_the_mean_absolute_difference_over_the_whole_box():
    """Eq. 8: a sphere 5 % too bright on a faint haze (removed by its own Otsu mask) gives 5 % times the
    sphere's fraction of the box (to 1e-6, relative); a larger box around the same sphere gives less,
    while the in-mask RMSE stays at 5 %."""
    for n in (20, 32):
        ref = _sphere(n, 6)
        rec = np.where(ref > 0, 1.05 * ref, 0.03).astype(np.float32)
        fraction = float(ref.mean())
        assert rmse_paper(rec, ref) == pytest.approx(5.0 * fraction, rel=1e-6)
        assert rmse_percent(rec, ref, ref > 0) == pytest.approx(5.0, rel=1e-6)
    assert rmse_paper(ref, ref) == 0.0
    assert metrics_table(ref[None], ref[None])[0]["rmse_paper"] == 0.0


def test_sphere_surface_to_volume_against_analytic():
    """Digital sphere of radius r: one 6-connected dilation adds the voxels within max(|n_i|) of the
    surface, so surface/volume -> 3 m (r + m/2)^2 / r^3 with m = E[max(|n_x|,|n_y|,|n_z|)] over the
    unit sphere (0.8312, computed here on a Fibonacci lattice); the continuum S/V is 3/r."""
    k = 200_000
    i = np.arange(k) + 0.5
    polar, azimuth = np.arccos(1 - 2 * i / k), np.pi * (1 + 5**0.5) * i
    normals = np.stack([np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)])
    m = np.abs(normals).max(axis=0).mean()
    assert m == pytest.approx(0.8312, abs=1e-3)
    for r in (10.0, 14.0):
        expected = 3 * m * (r + m / 2) ** 2 / r**3
        assert surface_to_volume(_sphere(32, r) * 0.8 + 0.05) == pytest.approx(expected, rel=0.04)


def test_volume_redistribution_of_a_moving_sphere():
    series = np.stack([_sphere(20, 5), _sphere(20, 5, (0, 0, 1)), _sphere(20, 5, (0, 0, 1))])
    expected = np.logical_xor(series[0] > 0.5, series[1] > 0.5).sum() * 0.87**3
    got = volume_redistribution(series, voxel_size_nm=0.87)
    assert got.shape == (2,)
    assert got[0] == pytest.approx(expected, rel=1e-12) and got[0] > 0
    assert got[1] == 0.0


def test_alloying_degree_zero_at_start_one_at_end():
    series, particle, mixing = _core_shell_series(6)
    degree = alloying_degree(series)
    assert degree[0] == 0.0 and degree[-1] == pytest.approx(1.0, abs=1e-12)
    assert np.all(np.diff(degree) > 0)
    # inside the particle itself the spread is (1 - a) sigma_0, so Eq. 10 returns the mixing exactly
    np.testing.assert_allclose(alloying_degree(series, masks=particle), mixing, atol=1e-6)


def _block_particle(centre: float, shell: float) -> np.ndarray:
    """9^3 zeros with a 3^3 particle in the middle: ``centre`` at its centre voxel, ``shell`` on the 26 others."""
    volume = np.zeros((9, 9, 9), dtype=np.float32)
    volume[3:6, 3:6, 3:6] = shell
    volume[4, 4, 4] = centre
    return volume


def _spread(values_counts: list[tuple[float, int]]) -> float:
    """Population standard deviation of ``count`` copies of each value."""
    n = sum(c for _, c in values_counts)
    mean = sum(v * c for v, c in values_counts) / n
    return float(np.sqrt(sum(c * (v - mean) ** 2 for v, c in values_counts) / n))


def test_alloying_against_reference_by_hand():
    """Eq. 10 as the paper's Methods measure it, computed by hand on a 3^3 particle.

    Ground-truth mask: Otsu (between 0 and the particle) dilated once = the 27 particle voxels plus
    6 x 9 face neighbours = 81 voxels. sigma_0: 1 x 1.0, 26 x 0.3, 54 x 0. sigma_inf (homogeneous
    particle, same total 8.8): 27 x 8.8/27, 54 x 0. Ground truth at t = 1: centre 0.65, shell
    0.3 + 0.35/26 (same total). Reconstruction: 1.2 x the truth at t = 0 (more contrast than the
    truth: a negative degree) and, at t = 1, a block of 0.4 with centre 0.5 plus 0.05 on one face
    neighbour (inside the mask). Both of its sigma_i are measured against the truth's sigma_0.
    """
    ref = np.stack([_block_particle(1.0, 0.3), _block_particle(0.65, 0.3 + 0.35 / 26)])
    rec = np.stack([1.2 * ref[0], _block_particle(0.5, 0.4)])
    rec[1, 2, 4, 4] = 0.05
    sigma_0 = _spread([(1.0, 1), (0.3, 26), (0.0, 54)])
    sigma_inf = _spread([(8.8 / 27, 27), (0.0, 54)])
    sigma_ref_1 = _spread([(0.65, 1), (0.3 + 0.35 / 26, 26), (0.0, 54)])
    sigma_rec_0 = 1.2 * sigma_0
    sigma_rec_1 = _spread([(0.5, 1), (0.4, 26), (0.05, 1), (0.0, 53)])
    alloy_ref, alloy_rec = alloying_against_reference(rec, ref)
    span = sigma_inf - sigma_0
    np.testing.assert_allclose(alloy_ref, [0.0, (sigma_ref_1 - sigma_0) / span], atol=1e-6)
    np.testing.assert_allclose(alloy_rec, [(sigma_rec_0 - sigma_0) / span, (sigma_rec_1 - sigma_0) / span],
                               atol=1e-6)
    assert alloy_rec[0] == pytest.approx(0.2 * sigma_0 / span, abs=1e-6) and alloy_rec[0] < 0
    assert alloy_ref[1] == pytest.approx(0.7588, abs=1e-4)  # half the core's excess moved: 0.76, not 0.5
    # a fully homogeneous particle has degree 1, and the numbers reach the metrics table
    np.testing.assert_allclose(alloying_against_reference(ref, np.stack([ref[0], homogenised(ref[0])]))[0],
                               [0.0, 1.0], atol=1e-6)
    rows = metrics_table(rec, ref)
    assert [r["alloying_degree"] for r in rows] == pytest.approx(list(alloy_rec), abs=1e-6)


def test_metrics_table_identical_and_mismatched():
    series, _, _ = _core_shell_series(4)
    rows = metrics_table(series, series, times_s=np.arange(4) * 30.0, voxel_size_nm=0.5)
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    assert rows[2]["time_s"] == 60.0
    for row in rows:
        assert row["rmse_percent"] == 0.0
        assert row["ssim"] == pytest.approx(1.0, abs=1e-12)
        assert row["surface_to_volume"] == row["surface_to_volume_ref"]
        assert row["alloying_degree"] == pytest.approx(row["alloying_degree_ref"], abs=1e-12)
    assert rows[0]["redistribution_nm3"] is None and rows[1]["redistribution_nm3"] == 0.0
    assert rows[-1]["alloying_degree_ref"] == pytest.approx(1.0)
    with pytest.raises(UserError, match="differ in shape or time count"):
        metrics_table(series[:3], series)
    with pytest.raises(UserError, match="NaN"):
        rmse_percent(np.full((8, 8, 8), np.nan), np.ones((8, 8, 8)))


def test_ssim_series_in_worker_processes_equals_each_volume_ssim():
    series, _, _ = _core_shell_series(4)
    blurred = series * 0.9 + 0.05 * series.mean()
    expected = [ssim(blurred[i], series[i]) for i in range(4)]
    np.testing.assert_allclose(ssim_series(blurred, series, workers=2), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ssim_series(blurred, series), expected, rtol=0, atol=1e-12)
    assert min(expected) < 0.999  # the series differ, so equality is not trivial
    with pytest.raises(UserError, match="differ in shape or time count"):
        ssim_series(series[:3], series)


def test_otsu_mask_of_constant_volume_is_empty():
    assert not otsu_mask(np.ones((4, 4, 4))).any()
    assert np.isnan(surface_to_volume(np.ones((4, 4, 4))))


def test_paper_ssim_masks_the_reconstruction_and_counts_the_background():
    """The paper's SSIM: what lies outside the reconstruction's Otsu mask is removed first (a sphere on
    a faint haze scores 1 to 1e-12, where the in-mask mean sees the haze at the sphere's rim), and the
    zero background counts as agreement, so the same blurred sphere scores higher in a larger box while
    the in-mask SSIM stays put."""
    from scipy import ndimage

    ref = _sphere(24, 6)
    hazy = np.where(ref > 0, ref, 0.05).astype(np.float32)
    assert ssim_paper(hazy, ref) == pytest.approx(1.0, abs=1e-12)
    assert ssim(hazy, ref) < 0.999
    scores = {}
    for n in (24, 40):
        big = _sphere(n, 6)
        blurred = ndimage.gaussian_filter(big, 1.0)
        scores[n] = (ssim(blurred, big), ssim_paper(blurred, big))
    assert scores[40][1] > scores[24][1] + 0.02  # more background, higher paper SSIM
    assert abs(scores[40][0] - scores[24][0]) < 0.02  # the in-mask mean hardly moves
    assert scores[24][1] > scores[24][0]
    row = metrics_table(ref[None], ref[None])[0]
    assert row["ssim_paper"] == pytest.approx(1.0, abs=1e-12)


def test_reprojection_error_and_heldout_metrics_are_one_measure() -> None:
    """RMS(reprojection - frame) / RMS(frame) in percent; the held-out metrics average it (and SSIM) over
    frames, None without frames."""
    frame = np.full((8, 8), 2.0, dtype=np.float32)
    assert metrics.reprojection_error_percent(frame, 0.5 * frame) == pytest.approx(50.0)
    found = metrics.heldout_metrics([(frame, 0.5 * frame), (frame, frame)])
    assert found["heldout_rmse_percent"] == pytest.approx(25.0)
    assert found["heldout_ssim"] <= 1.0
    assert metrics.heldout_metrics([]) is None
