"""Frames are checked against their recorded dose, and the pixel size and current come from the microscope."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from tiltstream.acquire.bridge import BridgeMicroscope, RetryPolicy
from tiltstream.acquire.calibration import read_calibration
from tiltstream.acquire.executor import Executor, ExecutorConfig
from tiltstream.acquire.frame_check import FrameCheck, detected_electron_step, implied_dose_e_per_A2
from tiltstream.acquire.microscope import AcquisitionParams
from tiltstream.acquire.scheme import TiltScheme
from tiltstream.acquire.session import SessionSettings, SessionWriter
from tiltstream.simulator.bridge_server import running_server
from tiltstream.simulator.clock import ManualClock
from tiltstream.simulator.microscope import SimulatedMicroscope
from tiltstream.simulator.settings import SimSettings

pytestmark = pytest.mark.timeout(60)


def _sim(**changes) -> SimulatedMicroscope:
    settings = SimSettings(phantom="nanorod", size=32, steps=4, mode="instant", device="cpu", **changes)
    return SimulatedMicroscope(settings, clock=ManualClock())


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_the_step_of_one_detected_electron_and_the_dose_it_implies() -> None:
    rng = np.random.default_rng(0)
    counts = rng.poisson(3.0, size=(32, 32))
    frame = (counts / 12.0).astype(np.float32)  # gain-normalised: 600 electrons per pixel x 0.02
    assert detected_electron_step(frame) == pytest.approx(1 / 12.0, rel=1e-6)
    assert implied_dose_e_per_A2(frame, 0.02, 0.5) == pytest.approx(24.0, rel=1e-5)  # 600 e / 25 A^2
    assert detected_electron_step(frame + rng.normal(0, 0.01, frame.shape)) is None  # read noise: not judged


def test_low_dose_frames_and_a_wrong_recorded_dose_are_each_reported_once(tmp_path: Path, caplog) -> None:
    """The simulator at 50 e/A^2/s delivers 0.08 e/A^2 a frame (1.6 us dwell, 32 x 32); the executor is told
    60 pA, which would be 24 e/A^2: both the empty frames and the disagreement are said, once each."""
    sim = _sim(dose_rate_e_per_A2_s=50.0)
    writer = SessionWriter.create(tmp_path / "s", SessionSettings(pixel_size_nm=0.5))
    config = ExecutorConfig(detector="HAADF", params=AcquisitionParams(dwell_time_s=1.6e-6), beam_current_pA=60.0,
                            pixel_size_nm=0.5, stage_timeout_s=2.0, poll_s=0.01)
    with caplog.at_level(logging.WARNING), running_server(sim) as url:
        Executor(BridgeMicroscope(url, retry=RetryPolicy(attempts=1)), TiltScheme(kind="grs", count=4), writer,
                 config).run()
    messages = _warnings(caplog)
    assert len(messages) == 2, messages
    assert "mostly empty" in messages[0] and "% of its 1024 pixels are zero" in messages[0]
    assert "implies 0.0819 e/A^2 but 24 e/A^2 is recorded" in messages[1]


def test_frames_at_the_default_dose_pass_without_a_word(caplog) -> None:
    sim = _sim()
    sim.set_stem_acquisition_param({"dwell_time(s)": 1.6e-6})
    check = FrameCheck(0.5, sim.get_stem_detectors()["HAADF"]["detected_fraction_per_unit"])
    with caplog.at_level(logging.WARNING):
        for index, alpha_deg in enumerate((-70.0, 0.0, 45.0)):
            sim.stage.command(alpha_deg)
            frame = sim.acquire("HAADF")["HAADF"]
            assert sim.frames[-1].dose_e_per_A2 == pytest.approx(23.97, rel=1e-3)  # 60 pA x 1.6 us over 25 A^2
            check.check(index, frame, sim.frames[-1].dose_e_per_A2)
    assert _warnings(caplog) == []


def test_calibration_comes_from_the_simulator_and_falls_back_with_one_warning_each(caplog) -> None:
    sim = _sim(pixel_size_nm=0.5, beam_current_pA=60.0)
    with caplog.at_level(logging.WARNING), running_server(sim) as url:
        scope = BridgeMicroscope(url, retry=RetryPolicy(attempts=1))
        scope.set_acquisition_params("HAADF", AcquisitionParams(image_size="HALF", dwell_time_s=1e-6))
        reported = read_calibration(scope, "HAADF", 0.44, 10.0)
        assert _warnings(caplog) == []
        scope.pixel_size_nm = lambda detector: None  # a microscope that reports neither
        scope.beam_current_pA = lambda: None
        fallback = read_calibration(scope, "HAADF", 0.44, 10.0)
    assert (reported.pixel_size_nm, reported.pixel_size_source) == (pytest.approx(1.0), "microscope")
    assert (reported.beam_current_pA, reported.beam_current_source) == (pytest.approx(60.0), "microscope")
    assert (fallback.pixel_size_nm, fallback.beam_current_pA) == (0.44, 10.0)
    assert fallback.record()["pixel_size_source"] == fallback.record()["beam_current_source"] == "configuration"
    messages = _warnings(caplog)
    assert len(messages) == 2 and "no pixel size" in messages[0] and "no beam current" in messages[1]
