"""A centred start: ``acquire --track`` brings the specimen to the frame centre and pre-corrects the first GRS jumps.

The simulator runs over HTTP on loopback (the real temscript client and server); the error of a frame is the
true image position of the specimen relative to the frame centre (the simulator's displacement plus drift;
the nanorod phantom is centred in its volume), pixels. Nobody centres the specimen by hand before the series.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tiltstream.acquire.bridge import BridgeMicroscope, RetryPolicy
from tiltstream.acquire.centring import specimen_offset_px
from tiltstream.acquire.corrections import TrackingLoop
from tiltstream.acquire.executor import Executor, ExecutorConfig
from tiltstream.acquire.microscope import AcquisitionParams
from tiltstream.acquire.scheme import TiltScheme, grs_angle_deg
from tiltstream.acquire.session import SessionSettings, SessionWriter
from tiltstream.cli import main
from tiltstream.simulator.bridge_server import running_server
from tiltstream.simulator.clock import ManualClock
from tiltstream.simulator.microscope import SimulatedMicroscope
from tiltstream.simulator.settings import SimSettings

pytestmark = pytest.mark.timeout(120)
FRAMES = 30


def _sim(pixel_nm: float, size: int, offset_nm: float, drift_px: float) -> SimulatedMicroscope:
    return SimulatedMicroscope(SimSettings(
        phantom="nanorod", size=size, steps=4, mode="instant", device="cpu", pixel_size_nm=pixel_nm,
        eucentric_offset_nm=offset_nm, drift_px_per_frame=drift_px, seed=0), clock=ManualClock())


def _off_centre_px(sim: SimulatedMicroscope) -> np.ndarray:
    """|true specimen position - frame centre| of every frame, pixels, shape (n,)."""
    pixel_nm = sim.settings.pixel_size_nm
    return np.array([math.hypot(f.displacement_m[0] * 1e9 / pixel_nm + f.drift_px[0],
                                f.displacement_m[1] * 1e9 / pixel_nm + f.drift_px[1]) for f in sim.frames])


def test_centre_of_mass_of_a_shifted_specimen() -> None:
    frame = np.zeros((32, 32), dtype=np.float32)
    frame[10:14, 20:26] = 5.0  # centre (x 22.5, y 11.5); the frame centre is (15.5, 15.5)
    assert specimen_offset_px(frame) == pytest.approx((7.0, -4.0), abs=0.05)
    frame[0:3, 0:3] = 5.0  # something on the edge: neither axis is measured
    assert all(math.isnan(v) for v in specimen_offset_px(frame))


def test_acquire_track_centres_a_specimen_200_nm_off_the_eucentric_height(tmp_path: Path) -> None:
    """8 nm pixels, 64 px frames, 200 nm eucentric offset, 0.3 px/frame drift: the first frame (-70 deg) has the
    specimen 23 px off-centre, cut by the frame edge. ``--track previous`` (centring on by default) brings it
    to the centre: measured at most 3.9 px off from frame 4 on, 1.2 px at frame 4 (frames 1-3 move before the
    height is fitted: 7, 22, 12 px; from frame 8 on the tracker's own error, as without centring, dominates).
    Without centring it settles 20-27 px off-centre (from frame 10 on), where the first frame had it."""
    results = {}
    for centre in ("--centre", "--no-centre"):
        sim = _sim(8.0, 64, 200.0, 0.3)
        with running_server(sim) as url:
            code = main(["acquire", "--bridge", url, "--session", str(tmp_path / centre), "--count", str(FRAMES),
                         "--track", "previous", centre])
        assert code == 0
        results[centre] = _off_centre_px(sim)
        image_shift = sim.get_image_shift()
        assert max(abs(image_shift[0]), abs(image_shift[1])) <= 2e-6 and sim.get_stage_position()["x"] == 0.0
    centred, uncentred = results["--centre"], results["--no-centre"]
    assert centred[0] == pytest.approx(200 * math.sin(math.radians(70)) / 8.0, abs=1.0)  # 23.5 px
    assert centred[4:].max() < 5.0 and centred[4] < 2.0, centred.round(1)
    assert uncentred[10:].min() > 15.0, uncentred.round(1)


def _run(sim: SimulatedMicroscope, tmp_path: Path, loop: TrackingLoop) -> None:
    pixel_nm = sim.settings.pixel_size_nm
    writer = SessionWriter.create(tmp_path, SessionSettings(pixel_size_nm=pixel_nm))
    config = ExecutorConfig(detector="HAADF", params=AcquisitionParams(dwell_time_s=1.6e-6), beam_current_pA=60.0,
                            pixel_size_nm=pixel_nm, stage_timeout_s=2.0, poll_s=0.01)
    with running_server(sim) as url:
        Executor(BridgeMicroscope(url, retry=RetryPolicy(attempts=1)), TiltScheme(kind="grs", count=FRAMES), writer,
                 config, tracking=loop).run()


def test_the_first_grs_jumps_are_pre_corrected_once_two_angles_are_in(tmp_path: Path) -> None:
    """5 nm eucentric offset, 0.5 nm pixels, 30 GRS frames. Measured against the target (the first frame's
    position without centring, the centre with it): frame 3 (49.6 deg) 11.1 px off before, 0.2 px with
    centring; from frame 3 on at most 0.6 px. Frame 1 (16.5 deg) is the second angle: nothing knows the
    height before it, so it moves by Z (sin 16.5 - sin -70) = 12.2 px either way."""
    plain = _sim(0.5, 32, 5.0, 0.0)
    _run(plain, tmp_path / "plain", TrackingLoop("previous", "off", 0.5))
    positions = np.array([f.displacement_m[0] * 1e9 / 0.5 for f in plain.frames])
    before = np.abs(positions - positions[0])
    centred = _sim(0.5, 32, 5.0, 0.0)
    _run(centred, tmp_path / "centred", TrackingLoop("previous", "off", 0.5, centre=True))
    after = _off_centre_px(centred)
    jump_px = 5.0 * (math.sin(math.radians(grs_angle_deg(1, -70, 70))) + math.sin(math.radians(70))) / 0.5
    assert before[1] == pytest.approx(jump_px, abs=0.5) and after[1] == pytest.approx(jump_px, abs=0.5)
    assert before[3] > 10.0 and after[3] < 1.0, (before.round(1), after.round(1))
    assert after[3:].max() < 1.0, after.round(1)
