"""A ramp filter along the detector for the data term, so its gradient is a filtered backprojection.

The data term compares predicted and measured rows. Its gradient with respect to a slice is the
backprojection of the row residual, and backprojection weights a spatial frequency ``k`` by about
``1 / |k|`` (the reason filtered backprojection applies a ramp ``|k|`` first): fine detail of the
volume gets a small gradient and is fitted last. Comparing rows after a filter whose squared gain is
a ramp makes the gradient ``A^T W^2 (A x - b)``, a filtered backprojection of the residual, in which
coarse and fine detail are fitted at a similar rate.

The squared gain is ``(|k| + 1/2)`` times a Hann window, ``(1 + cos(pi k / k_max)) / 2``, the filter
FBP users choose for noisy data: the ``1/2`` keeps the mean of a row (its projected mass) in the loss,
and the window takes the gain back to zero at the Nyquist frequency, where shot noise dominates. With
the bare ramp, a low-dose stream (the demo's 24^3 nanorod, 24 e/A^2 per frame, frames added one at a
time) was fitted to its noise: SSIM 0.82 against 0.97 for plain rows and 0.97 with the window.

The filter is linear and the same for prediction and data, so it changes which residuals the data
term weights most, not what a perfect fit is. Rows are zero-padded to twice their length before the
FFT, so the filter does not wrap one edge of a row onto the other.
"""

from __future__ import annotations

import math

import torch


def ramp_gains(n_det: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Gains ``(n_det + 1,)`` of :func:`ramp_filtered` for the real FFT of a row padded to ``2 n_det``.

    The gain of frequency index ``k`` (cycles per ``2 n_det`` pixels, ``0 <= k <= n_det``, ``n_det``
    the Nyquist frequency of the unpadded row) is ``sqrt((k + 1/2) / (n_det / 2) * (1 + cos(pi k /
    n_det)) / 2)``.
    """
    if n_det < 1:
        raise ValueError(f"a row needs at least one detector pixel; got {n_det}")
    k = torch.arange(n_det + 1, dtype=torch.float32, device=device)
    hann = 0.5 + 0.5 * torch.cos(math.pi * k / n_det)
    return torch.sqrt((k + 0.5) / (n_det / 2.0) * hann)


def ramp_filtered(rows: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """Rows ``(..., n_det)`` filtered along the last axis with ``gains`` from :func:`ramp_gains`; float32."""
    n_det = rows.shape[-1]
    spectrum = torch.fft.rfft(rows.float(), n=2 * n_det)
    return torch.fft.irfft(spectrum * gains, n=2 * n_det)[..., :n_det]
