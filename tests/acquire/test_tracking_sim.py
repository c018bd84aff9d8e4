"""Tracking and focus on the simulator through the real temscript client and server on loopback."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tiltstream.acquire.bridge import AllowListedRemote, BridgeMicroscope, NotAllowed, RetryPolicy
from tiltstream.acquire.corrections import CorrectionLimits, TrackingLoop
from tiltstream.acquire.executor import AcquisitionControl, Executor, ExecutorConfig
from tiltstream.acquire.microscope import AcquisitionParams
from tiltstream.acquire.scheme import TiltScheme
from tiltstream.acquire.session import SessionSettings, SessionWriter, read_session
from tiltstream.simulator.bridge_server import running_server
from tiltstream.simulator.clock import ManualClock
from tiltstream.simulator.microscope import SimulatedMicroscope
from tiltstream.simulator.settings import SimSettings

pytestmark = pytest.mark.timeout(120)
PIXEL_NM = 1.0
Z_NM = 8.0  # 7.5 px lateral at 70 deg, 5.3 nm height change


def _sim(centred: bool = True, **changes) -> SimulatedMicroscope:
    values = dict(size=32, steps=4, mode="instant", noise="none", device="cpu", pixel_size_nm=PIXEL_NM,
                  eucentric_offset_nm=Z_NM, drift_px_per_frame=0.2, seed=5)
    values.update(changes)
    sim = SimulatedMicroscope(SimSettings(**values), clock=ManualClock())
    # the operator centres the specimen at the first angle (-70 deg) before the series, as for any series
    if centred:
        sim.set_image_shift([-Z_NM * 1e-9 * math.sin(math.radians(-70.0)), 0.0])
    return sim


def _run(sim: SimulatedMicroscope, tmp_path: Path, count: int, loop: TrackingLoop | None,
         limits: CorrectionLimits = CorrectionLimits(), control: AcquisitionControl | None = None,
         pause_on_lost: bool = False):
    writer = SessionWriter.create(tmp_path / "s", SessionSettings(pixel_size_nm=PIXEL_NM))
    config = ExecutorConfig(detector="HAADF", params=AcquisitionParams(dwell_time_s=1e-6), beam_current_pA=60.0,
                            pixel_size_nm=PIXEL_NM, stage_timeout_s=2.0, poll_s=0.01)
    with running_server(sim) as url:
        scope = BridgeMicroscope(url, retry=RetryPolicy(attempts=1))
        executor = Executor(scope, TiltScheme(kind="grs", count=count), writer, config, tracking=loop,
                            limits=limits, control=control, pause_on_lost=pause_on_lost)
        summary = executor.run()
    return summary, executor, read_session(writer.path)


def _errors_px(sim: SimulatedMicroscope) -> np.ndarray:
    """True specimen position in each frame relative to the first (x, y), pixels, shape (n, 2)."""
    positions = np.array([[f.displacement_m[0] * 1e9 / PIXEL_NM + f.drift_px[0],
                           f.displacement_m[1] * 1e9 / PIXEL_NM + f.drift_px[1]] for f in sim.frames])
    return positions - positions[0]


def test_previous_tracking_keeps_the_specimen_put_and_focus_follows(tmp_path: Path) -> None:
    sim = _sim()
    summary, _, session = _run(sim, tmp_path, 16, TrackingLoop("previous", "tilt-model", PIXEL_NM))
    assert summary.frames == 16
    errors = np.hypot(*_errors_px(sim).T)  # 7.5 px at 70 deg, 15 px across the range without tracking
    assert errors[4:].max() < 1.5 and errors[8:].mean() < 0.6, errors.round(2)
    assert all(f.blur_px < 0.05 for f in sim.frames[6:]), [round(f.blur_px, 3) for f in sim.frames]
    # the record: measured position equals the true one, corrections and defocus are what was in effect
    for record, log_entry, error in zip(session.records[1:], sim.frames[1:], _errors_px(sim)[1:]):
        assert record.tracking is not None and record.tracking.mode == "previous"
        assert record.tracking.shift_px == pytest.approx(tuple(error), abs=3.0)
        assert record.tracking.shift_nm == pytest.approx(tuple(error * PIXEL_NM), abs=3.0)
    late = [(r.tracking.shift_px, e) for r, e in zip(session.records[8:], _errors_px(sim)[8:])]
    assert all(np.hypot(*(np.array(m) - e)) < 1.0 for m, e in late)
    assert session.records[-1].tracking.defocus_m == pytest.approx(sim.get_probe_defocus())
    # what reached the microscope: only allow-listed endpoints, and writes only of these
    puts = {endpoint for method, endpoint in sim.requests if method == "PUT"}
    assert puts <= {"stage_position", "beam_blanked", "stem_acquisition_param", "image_shift", "probe_defocus"}
    assert {"image_shift", "probe_defocus"} <= puts
    assert session.records[0].tracking.image_shift_m[0] == pytest.approx(Z_NM * 1e-9 * math.sin(math.radians(70)))


def test_without_tracking_the_specimen_wanders_and_records_have_no_tracking(tmp_path: Path) -> None:
    sim = _sim()
    _, _, session = _run(sim, tmp_path, 8, None)
    assert np.abs(_errors_px(sim)[:, 0]).max() > 5.0
    assert all(r.tracking is None for r in session.records)
    assert '"tracking"' not in (session.path / "frames.jsonl").read_text()


def test_a_correction_beyond_its_limit_pauses_with_the_beam_blanked_and_sends_nothing(tmp_path: Path) -> None:
    """Image shift limited to 1 nm and the stage to 2 nm of travel: the first lateral correction (several nm)
    is refused; the run pauses before exposing, beam blanked; a stop then ends it with the session intact."""
    sim = _sim(centred=False)
    control = AcquisitionControl()
    limits = CorrectionLimits(image_shift_m=1e-9, stage_xy_travel_m=2e-9)
    shifts_sent: list = []
    original = sim.set_image_shift

    def spy(pos):
        shifts_sent.append(tuple(pos))
        original(pos)

    sim.set_image_shift = spy
    paused_blanked: list[bool] = []

    def stop_when_paused() -> None:
        while not control.pause_event.is_set():
            if control.stop_event.wait(0.01):
                return
        paused_blanked.append(sim.get_beam_blanked())
        control.stop()

    import threading
    watcher = threading.Thread(target=stop_when_paused)
    watcher.start()
    summary, executor, session = _run(sim, tmp_path, 10, TrackingLoop("previous", "off", PIXEL_NM), limits, control)
    control.stop()
    watcher.join(5)
    assert summary.ended == "stopped" and 1 <= summary.frames < 10
    assert paused_blanked == [True] and sim.get_beam_blanked()
    assert "travel limit" in executor.pause_reason
    assert all(abs(x) <= limits.image_shift_m and abs(y) <= limits.image_shift_m for x, y in shifts_sent)
    assert sim.get_stage_position()["x"] == 0.0
    assert len(session.records) == summary.frames


def test_the_allow_list_refuses_anything_else_before_sending(tmp_path: Path) -> None:
    sim = _sim()
    with running_server(sim) as url:
        scope = BridgeMicroscope(url, retry=RetryPolicy(attempts=1))
        remote = scope._client(False)
        assert isinstance(remote, AllowListedRemote)
        for name in ("set_beam_shift", "set_column_valves_open", "set_defocus", "set_convergence_angle"):
            with pytest.raises(NotAllowed):
                getattr(remote, name)
        with pytest.raises(NotAllowed):
            remote.set_stage_position({"b": 0.1})
    assert sim.get_stage_position()["b"] == 0.0 and sim.get_convergence_angle() == pytest.approx(0.01)


def test_focus_measure_finds_a_height_error_by_sweep_and_counts_its_dose(tmp_path: Path) -> None:
    """The specimen starts 60 nm out of focus (stage z); the first sweep (every 4 frames, 50 nm steps) finds it."""
    sim = _sim(convergence_mrad=30.0)
    sim.set_stage_position({"z": 60e-9})
    loop = TrackingLoop("previous", "measure", PIXEL_NM, sweep_every=4, sweep_step_m=50e-9)
    summary, _, session = _run(sim, tmp_path, 6, loop)
    assert summary.frames == 6
    recorded = [f for f in sim.frames]
    assert len(recorded) == 6 + 2 * 5  # sweeps before frames 0 and 4
    assert recorded[5].blur_px < 0.3 * 60e-9 * 0.03 / 1e-9  # the first recorded frame, right after the sweep
    doses = [r.dose_e_per_A2 for r in session.records]
    assert doses[0] == pytest.approx(6 * doses[1]) and doses[4] == pytest.approx(6 * doses[1])


def test_a_lost_specimen_is_recorded_and_pauses_the_run_when_asked(tmp_path: Path) -> None:
    """A threshold no correlation reaches: frame 1 is lost (recorded with no shift); --pause-on-lost pauses."""
    import threading

    sim = _sim()
    control = AcquisitionControl()
    blanked_at_pause: list[bool] = []

    def stop_when_paused() -> None:
        while not control.pause_event.is_set():
            if control.stop_event.wait(0.01):
                return
        blanked_at_pause.append(sim.get_beam_blanked())
        control.stop()

    watcher = threading.Thread(target=stop_when_paused)
    watcher.start()
    loop = TrackingLoop("previous", "off", PIXEL_NM, lost_quality=1.01)
    summary, executor, session = _run(sim, tmp_path, 6, loop, control=control, pause_on_lost=True)
    control.stop()
    watcher.join(5)
    assert summary.ended == "stopped" and summary.frames == 2 and blanked_at_pause == [True]
    lost = session.records[1].tracking
    assert lost.lost and lost.shift_px is None and lost.peak_quality < 1.01
    assert "lost the specimen at frame 1" in executor.pause_reason
