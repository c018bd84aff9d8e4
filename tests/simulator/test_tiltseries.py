"""Synthetic sessions: frames are projections of the ground truth at their recorded GRS angle and time."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tiltstream.errors import UserError
from tiltstream.acquire.scheme import grs_angle_deg
from tiltstream.acquire.session import read_ground_truth, read_session
from tiltstream.recon.projector import project_volume
from tiltstream.simulator.tiltseries import write_synthetic_session


def test_noise_free_frames_equal_projections_of_ground_truth(tmp_path):
    path = write_synthetic_session(tmp_path / "s", "nanoshell", 20, 12, noise="none", seed=1,
                                   seconds_per_step=5.0)
    session = read_session(path)
    volumes, times_s = read_ground_truth(path)
    assert volumes.shape == (12, 20, 20, 20)
    np.testing.assert_allclose(times_s, 5.0 * np.arange(12), rtol=0, atol=1e-12)
    for record, frame in zip(session.records, session.load_frames()):
        assert record.angle_deg == pytest.approx(grs_angle_deg(record.index, -70.0, 70.0), abs=1e-9)
        step = int(np.argmin(np.abs(times_s - record.time_s)))
        assert step == record.index
        reference = project_volume(volumes[step], record.angle_deg)
        assert np.abs(frame - reference).max() <= 1e-4 * np.abs(reference).max()


def test_poisson_frames_are_noisy_but_unbiased(tmp_path):
    path = write_synthetic_session(tmp_path / "p", "nanorod", 20, 3, noise="poisson", dose_e_per_A2=400.0)
    session = read_session(path)
    volumes, _ = read_ground_truth(path)
    frame = session.load_frames()[0]
    reference = project_volume(volumes[0], session.records[0].angle_deg)
    assert not np.allclose(frame, reference)
    assert frame.sum() == pytest.approx(reference.sum(), rel=0.03)


def test_bad_dose_and_existing_session(tmp_path):
    with pytest.raises(UserError, match="negative"):
        write_synthetic_session(tmp_path / "a", "nanorod", 16, 2, dose_e_per_A2=-1.0)
    write_synthetic_session(tmp_path / "b", "nanorod", 16, 2, noise="none")
    with pytest.raises(UserError, match="already exists"):
        write_synthetic_session(tmp_path / "b", "nanorod", 16, 2, noise="none")


def test_cli_writes_session(tmp_path):
    out = tmp_path / "cli"
    result = subprocess.run([sys.executable, "-m", "tiltstream", "sim", "tiltseries", "--phantom", "nanostar",
                             "--size", "16", "--count", "5", "--noise", "none", "--seed", "2", "--out", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(read_session(out).records) == 5
    assert read_ground_truth(out)[0].shape == (5, 16, 16, 16)
