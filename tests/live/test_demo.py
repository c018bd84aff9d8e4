"""``tiltstream demo`` end to end on a reduced configuration (slow: about two minutes on a shared 2-core CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tiltstream.live.run_state import VOLUMES_FILE
from tiltstream.recon.volume_io import read_volumes

REDUCED = ["--size", "24", "--frames", "40", "--time-factor", "4", "--seconds-per-step", "1.0",
           "--final-steps", "600", "--snapshot-interval-s", "10"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_headless_beats_moving_window_sirt(tmp_path):
    """24^3 nanorod x 40 GRS frames through the simulated microscope, acquisition, live process and
    headless snapshots. The report holds SSIM vs ground truth for DIP-STER and moving-window SIRT (window
    30, 30 iterations) of the same session, and DIP-STER's mean SSIM is higher; volumes (one per frame)
    and snapshots are written; the log's last lines summarise the report."""
    out = tmp_path / "demo"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, "-m", "tiltstream", "demo", "--headless", "--out", str(out), *REDUCED],
                          env=env, capture_output=True, text=True, timeout=290)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["frames"] == 40
    assert report["dose_total_e_per_A2"] == pytest.approx(40 * 24.0, rel=1e-6)
    assert report["dipster"]["ssim_mean"] > report["sirt"]["ssim_mean"]
    assert report["dipster_beats_sirt"] is True
    low_C, high_C = report["temperature_C_range"]
    assert 25.0 <= low_C < high_C <= 300.0
    volumes, times_s = read_volumes(out / "run" / VOLUMES_FILE)
    assert volumes.shape == (40, 24, 24, 24) and len(times_s) == 40
    assert (out / "snapshots" / "final.png").stat().st_size > 10_000
    assert sorted(json.loads((out / "snapshots" / "panels.json").read_text())) == sorted(
        ["angle", "dose", "loss", "measured", "reprojection", "residual", "temperature", "xy", "xz", "yz"])
    assert (out / "report.md").read_text().startswith("# tiltstream demo report")
    last = proc.stderr.strip().splitlines()[-1]
    assert "beats moving-window SIRT" in last and "report.md" in last


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_without_display_falls_back_to_headless(tmp_path):
    """No DISPLAY/WAYLAND_DISPLAY and no offscreen platform: the demo says so, runs headless and still
    writes its report (a tiny 16^3 x 8 configuration)."""
    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    proc = subprocess.run([sys.executable, "-m", "tiltstream", "demo", "--out", str(out), "--size", "16",
                           "--frames", "8", "--time-factor", "8", "--seconds-per-step", "1.0", "--final-steps",
                           "50", "--sirt-window", "4", "--sirt-iterations", "5"],
                          env=env, capture_output=True, text=True, timeout=290)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "running headless" in proc.stderr
    assert (out / "report.json").is_file() and (out / "snapshots" / "final.png").is_file()
