"""A ramp filter along the detector for the data term, so its gradient is a filtered backprojection.

Rows are compared after a filter whose squared gain is ``(|k| + 1/2)`` times a window against shot
noise: :func:`hann_window`, or :func:`data_window` from the frames' statistics (:func:`row_power`,
:func:`frame_noise_variance`, :func:`window_from_statistics`). The method: docs/method.md 10; why the
window: docs/benchmarks/defaults.md, "The ramp filter's window".
"""

from __future__ import annotations

import math

import torch

MIN_FRAMES_FOR_NOISE = 16
"""Frames :func:`data_window` needs before it departs from the Hann window: the noise variance from
``F`` frame totals has a relative standard deviation of about ``2 / sqrt(F)`` (50 % at 16 frames)."""

NOISE_MARGIN = 2.0
"""Factor on the estimated noise power in the Wiener gain of :func:`data_window`: the estimate from 100
frames is within 40 % of the truth on the simulated sessions, and erring low would weight noise."""


def hann_window(n_det: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The Hann window ``(n_det + 1,)`` over the frequencies of a row padded to ``2 n_det``: 1 at
    frequency 0, 0 at the Nyquist frequency ``n_det``."""
    if n_det < 1:
        raise ValueError(f"a row needs at least one detector pixel; got {n_det}")
    k = torch.arange(n_det + 1, dtype=torch.float32, device=device)
    return 0.5 + 0.5 * torch.cos(math.pi * k / n_det)


def ramp_gains(n_det: int, device: torch.device | str = "cpu",
               window: torch.Tensor | None = None) -> torch.Tensor:
    """Gains ``(n_det + 1,)`` of :func:`ramp_filtered` for the real FFT of a row padded to ``2 n_det``.

    The gain of frequency index ``k`` (cycles per ``2 n_det`` pixels, ``0 <= k <= n_det``, ``n_det``
    the Nyquist frequency of the unpadded row) is ``sqrt((k + 1/2) / (n_det / 2) * w(k))``, ``w`` the
    ``window`` ``(n_det + 1,)`` with values in [0, 1] (default :func:`hann_window`).
    """
    if window is None:
        window = hann_window(n_det, device)
    elif tuple(window.shape) != (n_det + 1,):
        raise ValueError(f"a window for {n_det} detector pixels has {n_det + 1} values; "
                         f"got {tuple(window.shape)}")
    k = torch.arange(n_det + 1, dtype=torch.float32, device=device)
    return torch.sqrt((k + 0.5) / (n_det / 2.0) * window.to(device=device, dtype=torch.float32))


def ramp_filtered(rows: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """Rows ``(..., n_det)`` filtered along the last axis with ``gains`` from :func:`ramp_gains`; float32."""
    n_det = rows.shape[-1]
    spectrum = torch.fft.rfft(rows.float(), n=2 * n_det)
    return torch.fft.irfft(spectrum * gains, n=2 * n_det)[..., :n_det]


def frame_noise_variance(frames: torch.Tensor) -> float:
    """Mean noise variance of one pixel, frame units squared, from the totals of ``frames`` ``(F, ny, nx)``
    in time order (``F >= 3``): :func:`noise_variance_from_totals` of their sums.

    A parallel-beam projection holds the specimen's whole mass at every tilt (the projector conserves
    it to 1e-7), and the mass changes smoothly from frame to frame, so the second difference of the
    frame totals is noise: with noise independent between pixels and frames, its mean square is
    ``6 ny nx`` times the pixels' mean variance, whatever the noise's model (Poisson, read noise).
    Anything else that moves a total (shadowing at high tilt, a specimen leaving the field of view,
    abrupt changes) makes the estimate larger, never smaller.
    """
    if frames.ndim != 3 or frames.shape[0] < 3:
        raise ValueError(f"the noise estimate needs frames (F >= 3, ny, nx); got {tuple(frames.shape)}")
    return noise_variance_from_totals(frames.sum(dim=(1, 2), dtype=torch.float64),
                                      frames.shape[1] * frames.shape[2])


def noise_variance_from_totals(totals: torch.Tensor, pixels: int) -> float:
    """:func:`frame_noise_variance` from the frame totals ``(F,)`` in time order (``F >= 3``) of frames of
    ``pixels`` pixels each: the mean square of their second difference over ``6 pixels``."""
    totals = totals.double()
    second = totals[2:] - 2.0 * totals[1:-1] + totals[:-2]
    return float(second.square().mean() / (6.0 * pixels))


def row_power(frames: torch.Tensor) -> torch.Tensor:
    """Per frame of ``frames`` ``(F, ny, nx)``, the mean power spectrum of its rows zero-padded to ``2 nx``:
    ``(F, nx + 1)``, float64."""
    n_det = frames.shape[-1]
    return torch.fft.rfft(frames.double(), n=2 * n_det).abs().square().mean(dim=-2)


def data_window(frames: torch.Tensor) -> torch.Tensor:
    """The window ``(nx + 1,)`` of :func:`ramp_gains` for ``frames`` ``(F, ny, nx)`` in time order:
    :func:`window_from_statistics` of their :func:`row_power` and their totals."""
    return window_from_statistics(row_power(frames).mean(dim=0), frames.sum(dim=(1, 2), dtype=torch.float64),
                                  frames.shape[1] * frames.shape[2])


def window_from_statistics(power: torch.Tensor, totals: torch.Tensor, pixels: int) -> torch.Tensor:
    """The larger of :func:`hann_window` and the Wiener gain ``1 - NOISE_MARGIN * N / P(k)`` (clipped to
    [0, 1]), for frames of ``pixels`` pixels whose rows have the mean power spectrum ``power`` ``(n_det +
    1,)`` (:func:`row_power`) and whose totals in time order are ``totals`` ``(F,)``: ``N = n_det *``
    :func:`noise_variance_from_totals` is the power of white noise of the estimated pixel variance. The
    Hann window alone for fewer than :data:`MIN_FRAMES_FOR_NOISE` frames. Float32, on ``power``'s device."""
    n_det = power.shape[-1] - 1
    hann = hann_window(n_det, power.device)
    if totals.shape[0] < MIN_FRAMES_FOR_NOISE:
        return hann
    noise = n_det * noise_variance_from_totals(totals, pixels)
    wiener = (1.0 - NOISE_MARGIN * noise / power.clamp_min(1e-300)).clamp(0.0, 1.0)
    return torch.maximum(hann, wiener.float())
