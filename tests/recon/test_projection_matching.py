"""Projection matching (recon/projection_matching.py): known per-frame shifts and scan distortions of a
noiseless static phantom series are undone, up to the common shift no self-consistent alignment can fix."""

from __future__ import annotations

import numpy as np
import pytest

from tiltstream.errors import UserError
from tiltstream.recon.projection_matching import match_projections, warp
from tiltstream.recon.projector import ParallelProjector
from tiltstream.simulator.phantoms import make_phantom


@pytest.fixture(scope="module")
def series() -> tuple[np.ndarray, np.ndarray]:
    volume = np.pad(make_phantom("nanostar", 32, 1)[0], 4).astype(np.float32)
    angles = np.linspace(-70.0, 70.0, 40)
    return np.asarray(ParallelProjector(angles, volume.shape)(volume), dtype=np.float64), angles


def test_known_shifts_and_scan_distortions_are_recovered(series):
    frames, angles = series
    rng = np.random.default_rng(1)
    translations = rng.normal(0.0, 1.5, (len(frames), 2))  # pixels, applied as frame(matrix @ r + t)
    matrices = np.eye(2) + rng.normal(0.0, 0.01, (len(frames), 2, 2))  # skew and scale, ~1 % per frame
    distorted = np.stack([warp(f, m, t) for f, m, t in zip(frames, matrices, translations)])
    result = match_projections(distorted, angles, rounds=8)
    # aligned(r) = distorted(P r + Q) = frame(M P r + M Q + T): M Q + T is the remaining translation
    remaining = np.einsum("nij,nj->ni", matrices, result.translations_px) + translations
    remaining -= remaining.mean(axis=0)  # the common shift is not fixed by self-consistency
    error_px = np.abs(remaining).max()
    residuals = [float(np.median(r["residual"])) for r in result.rounds]
    print(f"translation error after removing the mean: max {error_px:.3f} px, rms "
          f"{np.sqrt(np.mean(remaining ** 2)):.3f} px (applied rms {translations.std():.2f} px); "
          f"{len(result.rounds)} rounds, median residual per round {np.round(residuals, 4).tolist()}")
    assert result.converged and error_px < 0.5
    assert residuals[-1] < 0.5 * residuals[0]


def test_bad_arguments_are_one_line(series):
    frames, angles = series
    with pytest.raises(UserError, match="one angle per frame"):
        match_projections(frames, angles[:-1])
    with pytest.raises(UserError, match="rounds"):
        match_projections(frames, angles, rounds=0)


@pytest.mark.parametrize("size_px", [28, 20])
def test_registration_on_resized_frames_recovers_the_full_size_transforms(series, size_px):
    """With ``size_px`` the rounds run on smaller frames; the transforms come back at full size, so the
    frames are registered to within half a full-size pixel as at full size."""
    frames, angles = series
    rng = np.random.default_rng(1)
    translations = rng.normal(0.0, 1.5, (len(frames), 2))
    matrices = np.eye(2) + rng.normal(0.0, 0.01, (len(frames), 2, 2))
    distorted = np.stack([warp(f, m, t) for f, m, t in zip(frames, matrices, translations)])
    result = match_projections(distorted, angles, rounds=8, size_px=size_px)
    assert result.frames.shape == frames.shape
    remaining = np.einsum("nij,nj->ni", matrices, result.translations_px) + translations
    remaining -= remaining.mean(axis=0)
    error_px = np.abs(remaining).max()
    print(f"size {size_px}: translation error max {error_px:.3f} px (full size)")
    assert error_px < 0.5
    np.testing.assert_allclose(np.einsum("nij,njk->nik", matrices, result.matrices).mean(axis=0), np.eye(2),
                               atol=0.02)
