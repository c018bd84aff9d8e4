"""Acceptance: DIP-STER (``fast`` preset, CLI) beats non-negative moving-window SIRT on a dynamic nanorod, per time step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tiltstream.acquire.session import read_ground_truth, read_session
from tiltstream.recon import metrics
from tiltstream.recon.sirt import moving_window_sirt
from tiltstream.recon.volume_io import read_volumes
from tiltstream.simulator.tiltseries import write_synthetic_session

NANOROD_STEPS = 1000
NANOSHELL_STEPS = 2000
KPLANES_STEPS = 1300


def _ssim_dipster_and_sirt(tmp_path: Path, phantom: str, steps: int, preset: str = "fast"
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-step SSIM vs ground truth of ``recon train`` + ``recon volumes`` (preset ``preset``) and of
    non-negative moving-window SIRT (window 30, 30 iterations) on a 32^3 x 60 session (seed 0, Poisson
    noise at 40 e/A^2); plus the reconstructed volumes and the ground truth, (T, Z, Y, X) each."""
    session = write_synthetic_session(tmp_path / "s", phantom, 32, 60, seed=0)
    run = tmp_path / "run"
    train = subprocess.run([sys.executable, "-m", "tiltstream", "recon", "train", "--session", str(session),
                            "--out", str(run), "--steps", str(steps), "--eval-every", "500",
                            "--threads", "1", "--seed", "0", "--preset", preset], capture_output=True, text=True, timeout=500)
    assert train.returncode == 0, train.stderr
    out = tmp_path / "vol.tif"
    volumes = subprocess.run([sys.executable, "-m", "tiltstream", "recon", "volumes", "--run", str(run),
                              "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert volumes.returncode == 0, volumes.stderr
    dip, times = read_volumes(out)
    truth, truth_times = read_ground_truth(session)
    np.testing.assert_allclose(times, truth_times)
    rec = read_session(session)
    sirt = moving_window_sirt(rec.load_frames(), rec.angles_deg, truth.shape[1:], window=30, iterations=30,
                              nonnegative=True)
    ssim_dip = np.array([metrics.ssim(dip[i], truth[i]) for i in range(len(truth))])
    ssim_sirt = np.array([metrics.ssim(sirt[i], truth[i]) for i in range(len(truth))])
    margin = ssim_dip - ssim_sirt
    print(f"{phantom}: DIP-STER SSIM mean {ssim_dip.mean():.4f} min {ssim_dip.min():.4f}; SIRT mean "
          f"{ssim_sirt.mean():.4f}; wins {np.mean(margin > 0):.0%}; margin min {margin.min():.4f} median "
          f"{np.median(margin):.4f}")
    return ssim_dip, ssim_sirt, dip, truth


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_dipster_beats_windowed_sirt_on_nanorod(tmp_path: Path) -> None:
    """32^3 x 60 nanorod, ``recon train`` for 1000 steps: SSIM above non-negative SIRT's (window 30,
    30 iterations, clamped to >= 0: the strong baseline) at >= 90 % of the time steps, mean SSIM >= 0.93.

    The budget is in steps (deterministic) rather than minutes (``fast`` preset, one thread). Measured
    (seed 0, 2026-12-07): 1000 steps give mean SSIM 0.962 against SIRT's 0.797, above it at 100 % of the
    steps, smallest margin 0.132 (the test ran 2000 steps before, for 0.974). With the ramp filter, its
    window from the data and the 8x8 latent map (2026-12-04), 2000 steps: smallest margin 0.143 (with the Hann window: 0.973, 0.143); before them
    (y_bands=6, the weight average, Geman-McClure, Adam beta2 0.99, 4 rows per frame) 0.951 and 0.131.
    """
    ssim_dip, ssim_sirt, _, _ = _ssim_dipster_and_sirt(tmp_path, "nanorod", NANOROD_STEPS)
    assert np.mean(ssim_dip > ssim_sirt) >= 0.9
    assert ssim_dip.mean() >= 0.93


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_dipster_beats_windowed_sirt_on_nanoshell(tmp_path: Path) -> None:
    """32^3 x 60 nanoshell (a 2-voxel wall losing material), ``recon train`` for 2000 steps: SSIM
    above non-negative SIRT's at >= 90 % of the time steps, mean SSIM >= 0.90.

    Measured (seed 0, 2026-12-07): 2000 steps give mean SSIM 0.920 against SIRT's 0.731, above it at 100 %
    of the steps, smallest margin 0.156 (the test ran 3000 steps before). At 3000 steps, with the ramp filter, its window from the data and the 8x8 latent map
    (2026-12-04) DIP-STER mean SSIM 0.933, SIRT 0.731, above it at 100 % of the steps (median margin
    0.204); with the Hann window instead 0.898 (median margin 0.167), so the threshold holds the window's
    gain; before them
    (y_bands=6, the weight average, Geman-McClure, Adam beta2 0.99, 4 rows per frame) 0.813 (median
    margin 0.083). With 2 rows per frame it took 5000 steps for 0.814 and 100 % (95 % with beta2
    0.999). Before the Fourier bands of y this specimen was below SIRT at most time steps at 3000 steps
    (docs/benchmarks/ablations.md, "Quality ablations").
    """
    ssim_dip, ssim_sirt, _, _ = _ssim_dipster_and_sirt(tmp_path, "nanoshell", NANOSHELL_STEPS)
    assert np.mean(ssim_dip > ssim_sirt) >= 0.9
    assert ssim_dip.mean() >= 0.90


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kplanes_preset_reconstructs_the_nanoshell_wall_and_its_surface(tmp_path: Path) -> None:
    """32^3 x 60 nanoshell, ``recon train --preset kplanes`` for 1300 steps: SSIM above non-negative
    SIRT's at every time step, mean SSIM >= 0.85 and the surface/volume ratio within 10 % of the
    truth's on average (SIRT: -27 %).

    Measured (seed 0, the kplanes preset, 10 % of the frames held out as recon train does by
    default), 2026-12-07 at 1300 steps: mean SSIM 0.901 against SIRT's 0.731, smallest margin 0.126, S/V
    error -1.0 %; at 2000 steps (the test's budget before): mean SSIM 0.905, smallest margin 0.124, S/V
    error +0.8 %. The fast preset reaches 0.899 in 3000 steps (0.813 before 2026-12-04).
    """
    ssim_kp, ssim_sirt, volumes, truth = _ssim_dipster_and_sirt(tmp_path, "nanoshell", KPLANES_STEPS, "kplanes")
    sv_error = np.mean([metrics.surface_to_volume(v) / metrics.surface_to_volume(t) - 1.0
                        for v, t in zip(volumes, truth)])
    print(f"kplanes nanoshell: S/V error {100 * sv_error:+.1f} %")
    assert np.all(ssim_kp > ssim_sirt)
    assert ssim_kp.mean() >= 0.85
    assert abs(sv_error) < 0.10
