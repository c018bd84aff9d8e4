"""Detector model: exact projection without effects, Poisson statistics, shadowing, drift, BF contrast."""

from __future__ import annotations

import numpy as np
import pytest

from tiltstream.simulator.detector import DetectorConfig, DetectorModel, electrons_per_pixel, shadow_factor


def _blob() -> np.ndarray:
    y, x = np.mgrid[:32, :32]
    return (20.0 * np.exp(-((y - 15.5) ** 2 + (x - 12.0) ** 2) / 40.0)).astype(np.float32)


def test_no_effects_returns_the_projection():
    frame = DetectorModel(DetectorConfig(noise="none")).render(_blob(), 10.0, 40.0)
    np.testing.assert_allclose(frame, _blob(), rtol=1e-6, atol=1e-6)


def test_electrons_per_pixel():
    """40 e/A^2 on a 0.5 nm (5 A) pixel: 40 * 25 = 1000 electrons."""
    assert electrons_per_pixel(40.0, 0.5) == pytest.approx(1000.0, rel=1e-12)


def test_poisson_noise_is_unbiased_with_variance_of_counts():
    """Mean over 400 frames within 1 % of the projection where it is large; variance = mean/(N*eff)."""
    config = DetectorConfig(noise="poisson", efficiency=0.02, pixel_size_nm=0.5)
    model = DetectorModel(config, seed=11)
    frames = np.stack([model.render(_blob(), 0.0, 40.0) for _ in range(400)])
    bright = _blob() > 15
    np.testing.assert_allclose(frames.mean(axis=0)[bright], _blob()[bright], rtol=0.03)
    scale = electrons_per_pixel(40.0, 0.5) * 0.02
    ratio = frames.var(axis=0)[bright].mean() / (_blob()[bright].mean() / scale)
    assert 0.85 < ratio < 1.15


def test_shadowing_only_beyond_start():
    assert shadow_factor(59.0, 60.0, 0.4) == 1.0
    assert shadow_factor(-90.0, 60.0, 0.4) == pytest.approx(0.6)
    assert 0.6 < shadow_factor(70.0, 60.0, 0.4) < 1.0
    model = DetectorModel(DetectorConfig(noise="none", shadow_strength=0.4))
    np.testing.assert_allclose(model.render(_blob(), 90.0, 40.0), 0.6 * _blob(), rtol=1e-5, atol=1e-6)


def test_drift_moves_the_image_and_jitter_distorts_it():
    drifting = DetectorModel(DetectorConfig(noise="none", drift_px_per_frame=1.0), seed=2)
    frames = [drifting.render(_blob(), 0.0, 40.0) for _ in range(5)]
    com = [np.sum(np.arange(32) * f.sum(axis=0)) / f.sum() for f in frames]
    assert np.ptp(com) > 0.5
    jitter = DetectorModel(DetectorConfig(noise="none", scan_jitter=0.05), seed=2).render(_blob(), 0.0, 40.0)
    assert not np.allclose(jitter, _blob(), atol=1e-3)


def test_bright_field_is_complementary():
    frame = DetectorModel(DetectorConfig(noise="none")).render(_blob(), 0.0, 40.0, detector="BF")
    assert frame.max() == pytest.approx(1.0, abs=1e-6)  # vacuum transmits everything
    assert frame[15, 12] < frame[0, 31]
    np.testing.assert_allclose(frame, np.exp(-0.02 * _blob()), rtol=1e-6)
