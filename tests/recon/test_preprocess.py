"""Preprocessing with numbers: known shifts recovered, 1/cos correction restores intensities, each step."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from tiltstream.errors import UserError
from tiltstream.recon.preprocess import PreprocessConfig, apply, bin_frames
from tiltstream.recon.projector import ParallelProjector

OFF = dict(subtract_background=False, mask_otsu_fraction=None, normalise=False, align=False, centre=False)


def _projections(angles_deg: np.ndarray, n: int = 32) -> np.ndarray:
    """Frames of an asymmetric three-blob specimen (n^3) at the given angles."""
    z, y, x = np.mgrid[:n, :n, :n] - (n - 1) / 2.0
    vol = (np.exp(-((x - 3) ** 2 + (z + 2) ** 2 + (y - 2) ** 2) / 12.0)
           + 0.7 * np.exp(-((x + 5) ** 2 + (z - 3) ** 2 + (y + 5) ** 2) / 6.0)
           + 0.5 * np.exp(-((x + 1) ** 2 + (z - 1) ** 2 + (y - 8) ** 2) / 4.0))
    return ParallelProjector(angles_deg, vol.shape)(vol.astype(np.float32)).astype(np.float64)


def _axially_symmetric_projections(angles_deg: np.ndarray, n: int = 32) -> np.ndarray:
    """Frames of a specimen symmetric about the tilt axis (its projection is the same at every angle)."""
    z, y, x = np.mgrid[:n, :n, :n] - (n - 1) / 2.0
    radius = np.hypot(x - 0.0, z)
    vol = np.exp(-(radius**2) / 18.0) * (1 + 0.8 * np.exp(-((y - 5) ** 2) / 8.0)) * np.exp(-((y / 9) ** 4))
    vol += 0.6 * np.exp(-(radius - 7) ** 2 / 2.0) * np.exp(-((y + 4) ** 2) / 6.0)
    return ParallelProjector(angles_deg, vol.shape)(vol.astype(np.float32)).astype(np.float64)


@pytest.mark.parametrize("specimen, tol_y, tol_x", [
    (_axially_symmetric_projections, 0.1, 0.1),
    # projections change with the angle: along the tilt axis (y) the shift is still exact; across it (x)
    # the chained correlation picks up the changing shape (measured up to 0.43 px with 4 deg steps)
    (_projections, 0.15, 0.6),
])
def test_alignment_recovers_known_shifts(specimen, tol_y, tol_x):
    """Known subpixel shifts (up to 3 px) are found relative to the frame nearest 0 deg."""
    angles = np.arange(-20.0, 21.0, 4.0)
    clean = specimen(angles)
    applied = np.random.default_rng(0).uniform(-3, 3, (len(angles), 2))
    shifted = np.stack([ndimage.shift(f, s, order=3) for f, s in zip(clean, applied)])
    out, report = apply(shifted, angles, PreprocessConfig(**{**OFF, "align": True}))
    ref = int(np.argmin(np.abs(angles)))
    found = np.array(report["align_shifts_px"])
    np.testing.assert_allclose(found[:, 0], -(applied[:, 0] - applied[ref, 0]), atol=tol_y)
    np.testing.assert_allclose(found[:, 1], -(applied[:, 1] - applied[ref, 1]), atol=tol_x)
    if tol_x <= 0.1:
        expected = np.stack([ndimage.shift(f, applied[ref], order=3) for f in clean])
        inner = (slice(None), slice(5, -5), slice(5, -5))
        assert np.abs(out[inner] - expected[inner]).max() < 0.05 * clean.max()


def test_high_tilt_correction_restores_intensities():
    """Background b/cos(theta) (variance a/cos(theta)) plus a particle; frames at >= 60 deg are distorted by
    0.6 f + 3 (detector gain/offset drift). The correction restores their background mean to 2 % and the
    particle intensity to 3 % of the undistorted frames."""
    rng = np.random.default_rng(1)
    angles = np.array([-70, -65, -55, -40, -20, 0, 15, 30, 45, 58, 62, 68], dtype=float)
    yy, xx = np.mgrid[:48, :48]
    particle = 100.0 * ((yy - 24) ** 2 + (xx - 24) ** 2 < 100)
    inv_cos = 1 / np.cos(np.deg2rad(angles))
    clean = np.stack([10 * c + rng.normal(0, np.sqrt(2 * c), (48, 48)) + particle for c in inv_cos])
    high = np.abs(angles) >= 60
    distorted = clean.copy()
    distorted[high] = 0.6 * clean[high] + 3.0
    out, report = apply(distorted, angles, PreprocessConfig(**OFF, high_tilt_correction=True))
    assert report["high_tilt"]["rescaled_frames"] == np.flatnonzero(high).tolist()
    background, inside = particle == 0, particle > 0
    for i in np.flatnonzero(high):
        assert out[i][background].mean() == pytest.approx(10 * inv_cos[i], rel=0.02)
        assert out[i][inside].mean() == pytest.approx(clean[i][inside].mean(), rel=0.03)
    np.testing.assert_allclose(out[~high], distorted[~high], rtol=1e-6)  # fitted frames untouched
    slope = report["high_tilt"]["mean_fit"][1]
    assert slope == pytest.approx(10.0, rel=0.05)


def test_background_mask_normalise_centre_crop_rescale():
    angles = np.array([-30.0, 0.0, 30.0])
    frames = _projections(angles) * np.array([1.0, 2.0, 0.5])[:, None, None] + 4.0
    out, report = apply(frames, angles, PreprocessConfig(align=False, crop_shape=(24, 24), rescale_shape=(12, 12)))
    assert report["steps"] == ["subtract_background", "mask", "normalise", "centre", "crop", "rescale"]
    assert out.shape == (3, 12, 12) and out.dtype == np.float32
    np.testing.assert_allclose(report["background_medians"], np.median(frames, axis=(1, 2)))
    json.dumps(report)  # a run directory stores it

    normalised, rep = apply(frames, angles, PreprocessConfig(align=False, centre=False))
    np.testing.assert_allclose(normalised.std(axis=(1, 2)), 1.0, rtol=1e-5)
    np.testing.assert_allclose(normalised.mean(axis=(1, 2)), rep["normalise"]["common_mean"], rtol=1e-5)

    masked, rep = apply(frames, angles, PreprocessConfig(**{**OFF, "mask_otsu_fraction": 0.9}))
    low = frames < np.array(rep["mask_thresholds"])[:, None, None]
    assert np.all(masked[low] == 0) and np.all(masked[~low] == frames[~low].astype(np.float32))

    off_centre = np.stack([ndimage.shift(f, (3.0, -4.0), order=1) for f in _projections(angles)])
    centred, rep = apply(off_centre, angles, PreprocessConfig(**{**OFF, "centre": True}))
    com = ndimage.center_of_mass(centred.mean(axis=0) - centred.mean(axis=0).min())
    np.testing.assert_allclose(com, (15.5, 15.5), atol=0.1)

    resized, _ = apply(frames, angles, PreprocessConfig(**{**OFF, "rescale_shape": (16, 16)}))
    # voxels twice as large: a line integral in voxel units halves, and so does the mean value
    np.testing.assert_allclose(resized.mean(), frames.mean() / 2, rtol=0.02)


def test_binning_is_block_mean():
    frames = np.arange(2 * 5 * 6, dtype=float).reshape(2, 5, 6)
    binned = bin_frames(frames, 2)
    assert binned.shape == (2, 2, 3)
    assert binned[0, 0, 0] == np.mean([0, 1, 6, 7]) / 2  # line integral in voxels twice as large
    out, report = apply(frames, np.array([0.0, 10.0]), PreprocessConfig(**OFF, bin_factor=2))
    np.testing.assert_allclose(out, binned)


def test_bad_input():
    frames = np.ones((2, 8, 8))
    frames[1, 2, 2] = np.nan
    with pytest.raises(UserError, match=r"frames \[1\]"):
        apply(frames, np.array([0.0, 5.0]), PreprocessConfig())
    with pytest.raises(UserError, match="one angle per frame"):
        apply(np.ones((2, 8, 8)), np.array([0.0]), PreprocessConfig())
    with pytest.raises(UserError, match="crop_shape"):
        apply(np.random.default_rng(0).random((2, 8, 8)), np.array([0.0, 5.0]),
              PreprocessConfig(**OFF, crop_shape=(9, 4)))
    with pytest.raises(UserError, match="two or more"):
        apply(np.random.default_rng(0).random((2, 8, 8)), np.array([0.0, 65.0]),
              PreprocessConfig(**OFF, high_tilt_correction=True))
