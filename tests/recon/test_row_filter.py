"""The ramp filter of the data term (tiltstream.recon.row_filter): its gains and window, its arithmetic, its effect on the
gradient, and the noise estimate its window from the data rests on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tiltstream.acquire.scheme import grs_angle_deg
from tiltstream.recon.projector import project
from tiltstream.recon.row_filter import (MIN_FRAMES_FOR_NOISE, data_window, frame_noise_variance, hann_window,
                               ramp_filtered, ramp_gains)
from tiltstream.simulator.detector import DetectorConfig, DetectorModel
from tiltstream.simulator.tiltseries import project_at


def test_gains_are_a_hann_windowed_ramp_with_the_mean_kept() -> None:
    gains = ramp_gains(64)
    assert gains.shape == (65,)
    assert gains[0].item() == pytest.approx(np.sqrt(0.5 / 32.0), abs=1e-7)  # the mean stays in the loss
    assert gains[64].item() == pytest.approx(0.0, abs=1e-6)  # no weight at the Nyquist frequency
    k = np.arange(65)
    np.testing.assert_allclose(gains.numpy() ** 2, (k + 0.5) / 32.0 * (0.5 + 0.5 * np.cos(np.pi * k / 64)),
                               rtol=1e-5, atol=1e-7)
    assert int(np.argmax(gains.numpy())) in range(20, 30)  # rises as a ramp, then the window takes over
    with pytest.raises(ValueError, match="at least one detector pixel"):
        ramp_gains(0)


def test_filtered_rows_equal_a_numpy_zero_padded_filter() -> None:
    rows = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, 17)).astype(np.float32))
    got = ramp_filtered(rows, ramp_gains(17)).numpy()
    k = np.arange(18)
    gains = np.sqrt((k + 0.5) / 8.5 * (0.5 + 0.5 * np.cos(np.pi * k / 17)))
    spectrum = np.fft.rfft(rows.numpy().astype(np.float64), n=34) * gains
    np.testing.assert_allclose(got, np.fft.irfft(spectrum, n=34)[..., :17], atol=1e-6)
    assert ramp_filtered(torch.zeros(4, 17), ramp_gains(17)).abs().max().item() == 0.0


def test_the_filtered_data_term_lifts_fine_detail_in_the_gradient() -> None:
    """The gradient of 1/2 |W (A x - b)|^2 at x = 0 is a filtered backprojection of the data: its
    frequencies along x that draw the walls (n/8 to 3n/8) are larger relative to the coarsest (the mean
    and the first harmonic) than the plain backprojection's, 5.5x here: the reason the fast preset fits
    thin walls sooner."""
    n = 32
    truth = torch.zeros(1, 1, n, n)
    truth[0, 0, 8:24, 8:24] = 1.0
    truth[0, 0, 12:20, 12:20] = 0.0  # a square ring: coarse shape and 4-voxel walls
    angles = torch.tensor([0.0])  # rows along x

    def gradient(filtered: bool) -> np.ndarray:
        x = torch.zeros_like(truth, requires_grad=True)
        residual = project(x, angles, n) - project(truth, angles, n)
        if filtered:
            residual = ramp_filtered(residual, ramp_gains(n))
        (0.5 * residual.pow(2).sum()).backward()
        return x.grad[0, 0].numpy()

    def walls_to_coarsest(grad: np.ndarray) -> float:
        spectrum = np.abs(np.fft.rfft(grad.sum(axis=0)))  # along x
        return float(spectrum[n // 8:3 * n // 8 + 1].sum() / spectrum[:2].sum())

    plain, ramp = gradient(False), gradient(True)
    assert walls_to_coarsest(ramp) > 4.0 * walls_to_coarsest(plain)


def _grs_frames(volumes: list[torch.Tensor], dose_e_per_A2: float,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Poisson frames of ``volumes`` (one per frame) at golden-ratio angles, and their noise-free
    projections: (frames, clean), each (F, ny, nx), frame units (projected mass)."""
    model = DetectorModel(DetectorConfig(noise="poisson"), seed=seed)
    clean = np.stack([project_at(v, grs_angle_deg(i, -70.0, 70.0)) for i, v in enumerate(volumes)])
    frames = np.stack([model.render(c, 0.0, dose_e_per_A2) for c in clean])
    return frames.astype(np.float32), clean.astype(np.float64)


def _ball(n: int, radius: float) -> torch.Tensor:
    z, y, x = np.mgrid[:n, :n, :n] - (n - 1) / 2.0
    return torch.from_numpy((z * z + y * y + x * x <= radius * radius).astype(np.float32))


def test_noise_variance_from_the_frame_totals_matches_the_poisson_noise() -> None:
    """A growing ball (mass linear in time), 400 frames at 40 e/A^2: the estimate from the totals'
    second differences is within 30 % of the frames' true mean noise variance (its relative standard
    deviation is about 2 / sqrt(400) = 10 %), and the trend does not enter it."""
    n, count = 16, 400
    ball = _ball(n, 5.0)
    volumes = [ball * (1.0 + 0.5 * i / count) for i in range(count)]
    frames, clean = _grs_frames(volumes, 40.0)
    true_variance = float(((frames - clean) ** 2).mean())
    estimate = frame_noise_variance(torch.from_numpy(frames))
    assert estimate == pytest.approx(true_variance, rel=0.3)
    assert frame_noise_variance(torch.from_numpy(clean.astype(np.float32))) < 1e-3 * true_variance
    with pytest.raises(ValueError, match="F >= 3"):
        frame_noise_variance(torch.zeros(2, 4, 4))


def test_data_window_opens_where_frames_hold_signal_at_fine_detail_and_is_hann_where_noise_does() -> None:
    """Fine random texture at a high dose: signal above the noise up to the Nyquist frequency, so the
    window keeps at least a third of the gain there (Hann: none). The same texture at 1/400 the dose,
    and a smooth ball at the usual dose: the noise dominates the high frequencies and the window is the
    Hann window in the top half of the spectrum. Fewer than MIN_FRAMES_FOR_NOISE frames: the Hann window."""
    n, count = 16, 60
    rng = np.random.default_rng(1)
    texture = torch.from_numpy(rng.uniform(0.0, 1.0, size=(n, n, n)).astype(np.float32)) * _ball(n, 6.0)
    hann = hann_window(n).numpy()
    sharp = data_window(torch.from_numpy(_grs_frames([texture] * count, 4000.0)[0])).numpy()
    assert sharp.shape == (n + 1,) and sharp.min() >= 0.0 and sharp.max() <= 1.0
    assert sharp[n] >= 1.0 / 3.0 and hann[n] == pytest.approx(0.0, abs=1e-7)
    assert np.all(sharp >= hann - 1e-7)
    for volume, dose in ((texture, 10.0), (_ball(n, 5.0), 40.0)):
        window = data_window(torch.from_numpy(_grs_frames([volume] * count, dose)[0])).numpy()
        np.testing.assert_allclose(window[n // 2:], hann[n // 2:], atol=1e-6)
    few = torch.from_numpy(_grs_frames([texture] * (MIN_FRAMES_FOR_NOISE - 1), 4000.0)[0])
    np.testing.assert_array_equal(data_window(few).numpy(), hann)
    np.testing.assert_allclose(ramp_gains(n).numpy(), ramp_gains(n, window=hann_window(n)).numpy())
    with pytest.raises(ValueError, match="has 17 values"):
        ramp_gains(16, window=torch.ones(5))
