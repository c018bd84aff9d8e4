"""Acquisition against the simulated microscope over HTTP (tiltstream.simulator.bridge_server.running_server)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from tiltstream.acquire.bridge import BridgeMicroscope, RetryPolicy
from tiltstream.errors import UserError
from tiltstream.acquire.executor import AcquisitionControl, BetweenFrames, Executor, ExecutorConfig, StageError
from tiltstream.acquire.microscope import AcquisitionParams
from tiltstream.acquire.scheme import TiltScheme, grs_angle_deg
from tiltstream.acquire.session import SessionSettings, SessionWriter, read_session
from tiltstream.acquire.subscriber import FrameSubscriber
from tiltstream.cli import main
from tiltstream.simulator.bridge_server import running_server
from tiltstream.simulator.clock import ManualClock
from tiltstream.simulator.microscope import SimulatedMicroscope
from tiltstream.simulator.settings import SimSettings

pytestmark = pytest.mark.timeout(60)


def _sim(**changes) -> SimulatedMicroscope:
    settings = SimSettings(size=16, steps=4, mode="instant", noise="none", device="cpu", **changes)
    return SimulatedMicroscope(settings, clock=ManualClock())


def _config(backlash_deg: float = 2.0, **changes) -> ExecutorConfig:
    values = dict(detector="HAADF", params=AcquisitionParams(dwell_time_s=1e-6), beam_current_pA=60.0,
                  pixel_size_nm=0.5, backlash_deg=backlash_deg, stage_timeout_s=2.0, poll_s=0.01)
    values.update(changes)
    return ExecutorConfig(**values)


def _approached_from_below(commanded_deg: list[float], targets_deg: list[float]) -> bool:
    """Every target is commanded right after a command at or below it (the stage starts at 0).

    Commanded angles went through radians on the wire, so they match targets to 1e-9 deg, not exactly."""
    position = 0.0
    remaining = list(targets_deg)
    for angle in commanded_deg:
        if remaining and abs(angle - remaining[0]) < 1e-9:
            if angle < position:
                return False
            remaining.pop(0)
        position = angle
    return not remaining


def test_cli_20_frames_grs_from_below_within_limits_all_streamed(tmp_path: Path) -> None:
    """Acceptance: GRS targets to 1e-9, every target approached from below (the simulator's record of
    commanded moves), no command outside the limits, every frame received by a subscriber."""
    sim = _sim(alpha_min_deg=-75.0, alpha_max_deg=75.0)
    session = tmp_path / "grs20"
    from tests.acquire.conftest import free_port
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    received: list = []
    with running_server(sim) as url:
        subscriber = FrameSubscriber(endpoint, session_dir=session)

        def consume() -> None:
            received.extend(subscriber.frames(timeout_s=20))

        thread = threading.Thread(target=consume)
        thread.start()
        try:
            code = main(["acquire", "--bridge", url, "--count", "20", "--min", "-70", "--max", "70",
                         "--detector", "HAADF", "--session", str(session), "--publish", endpoint,
                         "--dwell-time-s", "1e-6", "--pixel-size-nm", "0.5"])
            thread.join(timeout=30)
        finally:
            subscriber.close()
    assert code == 0
    records = read_session(session).records
    expected = [grs_angle_deg(i, -70.0, 70.0) for i in range(20)]
    np.testing.assert_allclose([r.target_deg for r in records], expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose([r.angle_deg for r in records], expected, rtol=0, atol=1e-9)
    commanded = [m.alpha_deg for m in sim.commanded_moves]
    assert all(m.accepted for m in sim.commanded_moves)
    assert all(-75.0 <= a <= 75.0 for a in commanded)
    assert _approached_from_below(commanded, expected)
    assert len(commanded) > 20  # some targets needed the overshoot
    np.testing.assert_allclose([f.true_deg for f in sim.frames], expected, atol=1e-9)  # no backlash error
    assert [h.index for h, _ in received] == list(range(20))
    for (header, frame), record in zip(received, records):
        np.testing.assert_array_equal(frame, read_session(session).load_frame(record))
    # dose: 60 pA * 1 us / e / (5 A)^2 = 14.98 e/A^2 per frame (tiltstream.acquire.dose, paper formula)
    assert records[0].dose_e_per_A2 == pytest.approx(14.9796, abs=1e-3)
    assert json.loads((session / "session.json").read_text())["scheme"]["count"] == 20


def _run(sim: SimulatedMicroscope, url: str, path: Path, backlash_deg: float) -> np.ndarray:
    writer = SessionWriter.create(path, SessionSettings())
    Executor(BridgeMicroscope(url, timeout_s=5), TiltScheme(count=12), writer, _config(backlash_deg)).run()
    return read_session(path).load_frames()


def test_without_backlash_correction_the_play_shows_in_the_images(tmp_path: Path) -> None:
    """Simulator play 1.5 deg: with correction off, frames reached from above are taken 1.5 deg high (the specimen lags)
    (they differ from the corrected run's frames); frames reached from below are identical."""
    corrected_sim, plain_sim = _sim(backlash_deg=1.5), _sim(backlash_deg=1.5)
    with running_server(corrected_sim) as url:
        corrected = _run(corrected_sim, url, tmp_path / "on", backlash_deg=2.0)
    with running_server(plain_sim) as url:
        plain = _run(plain_sim, url, tmp_path / "off", backlash_deg=0.0)
    targets = [grs_angle_deg(i, -70.0, 70.0) for i in range(12)]
    from_above = [i for i in range(12) if targets[i] < (targets[i - 1] if i else 0.0)]
    assert from_above and len(from_above) < 12
    true_plain = [f.true_deg for f in plain_sim.frames]
    for i in range(12):
        difference = np.abs(plain[i] - corrected[i]).max() / np.abs(corrected[i]).max()
        if i in from_above:
            assert true_plain[i] == pytest.approx(targets[i] + 1.5, abs=1e-9)
            assert difference > 1e-3
        else:
            assert true_plain[i] == pytest.approx(targets[i], abs=1e-9)
            assert difference == 0.0


def test_hook_pause_and_stop_after_current_frame(tmp_path: Path) -> None:
    """The between-frames hook sees each frame; a stop requested in it ends the run after that frame."""
    sim = _sim()
    seen: list[BetweenFrames] = []

    def hook(event: BetweenFrames) -> None:
        seen.append(event)
        if event.index == 4:
            event.control.stop()

    with running_server(sim) as url:
        writer = SessionWriter.create(tmp_path / "s", SessionSettings())
        summary = Executor(BridgeMicroscope(url, timeout_s=5), TiltScheme(), writer, _config(),
                           between_frames=hook).run()
        assert sim.get_beam_blanked() is True
    assert summary.ended == "stopped" and summary.frames == 5 and summary.next_index == 5
    assert [e.index for e in seen] == [0, 1, 2, 3, 4]
    assert seen[0].next_target_deg == pytest.approx(grs_angle_deg(1, -70, 70), abs=1e-12)
    assert seen[2].frame.shape == (16, 16)


def test_pause_holds_blanked_then_resume(tmp_path: Path) -> None:
    sim = _sim()
    control = AcquisitionControl()
    blanked_while_paused: list[bool] = []

    def hook(event: BetweenFrames) -> None:
        if event.index == 1:
            control.pause()
            threading.Timer(0.3, control.resume).start()

    def sleep(seconds: float) -> None:
        if control.pause_event.is_set():
            blanked_while_paused.append(sim.get_beam_blanked())
        threading.Event().wait(seconds)

    with running_server(sim) as url:
        writer = SessionWriter.create(tmp_path / "s", SessionSettings())
        Executor(BridgeMicroscope(url, timeout_s=5), TiltScheme(count=4), writer, _config(),
                 between_frames=hook, control=control, sleep=sleep).run()
    assert [r.index for r in writer.records] == [0, 1, 2, 3]
    assert blanked_while_paused and all(blanked_while_paused)


# -- faults ----------------------------------------------------------------------------------------
def test_transient_bridge_errors_are_retried(tmp_path: Path) -> None:
    sim = _sim()
    with running_server(sim) as url:
        scope = BridgeMicroscope(url, timeout_s=5, retry=RetryPolicy(attempts=4, backoff_s=0.01))
        sim.faults.fail("acquire", count=2)
        sim.faults.drop("stage_status", count=2)
        writer = SessionWriter.create(tmp_path / "s", SessionSettings())
        summary = Executor(scope, TiltScheme(count=3), writer, _config()).run()
    assert summary.frames == 3 and [r.index for r in writer.records] == [0, 1, 2]


def test_slow_bridge_times_out_then_retries(tmp_path: Path) -> None:
    sim = _sim()
    with running_server(sim) as url:
        scope = BridgeMicroscope(url, timeout_s=0.5, retry=RetryPolicy(attempts=3, backoff_s=0.01))
        sim.faults.delay("beam_blanked", seconds=2.0)
        with pytest.raises(UserError, match=r"blank beam failed 3 times; last: (TimeoutError|timeout)"):
            scope.set_beam_blanked(True)
        sim.faults.delay("beam_blanked", seconds=0)
        scope.set_beam_blanked(True)  # the client recovered after the timeouts
        assert sim.get_beam_blanked() is True


def test_detector_that_keeps_failing_ends_run_blanked_and_resumable(tmp_path: Path) -> None:
    sim = _sim()
    with running_server(sim) as url:
        scope = BridgeMicroscope(url, timeout_s=5, retry=RetryPolicy(attempts=3, backoff_s=0.01))
        writer = SessionWriter.create(tmp_path / "s", SessionSettings())

        def hook(event: BetweenFrames) -> None:
            if event.index == 2:
                sim.faults.fail("acquire", count=100)

        with pytest.raises(UserError, match=r"acquire on HAADF failed 3 times") as info:
            Executor(scope, TiltScheme(count=6), writer, _config(), between_frames=hook).run()
        assert "\n" not in str(info.value)
        assert sim.get_beam_blanked() is True
        sim.faults.clear()
        resumed = SessionWriter.resume(tmp_path / "s")
        assert resumed.next_index == 3
        Executor(scope, TiltScheme(count=6, start_index=3), resumed, _config()).run()
    assert [r.index for r in read_session(tmp_path / "s").records] == list(range(6))


def test_stuck_stage_ends_run_blanked(tmp_path: Path) -> None:
    sim = _sim()
    with running_server(sim) as url:
        writer = SessionWriter.create(tmp_path / "s", SessionSettings())

        def hook(event: BetweenFrames) -> None:
            sim.stage.stuck = True

        with pytest.raises(StageError, match=r"stage not READY 0.3 s after the move to .* \(status MOVING\)"):
            Executor(BridgeMicroscope(url, timeout_s=5), TiltScheme(count=5), writer,
                     _config(stage_timeout_s=0.3), between_frames=hook).run()
        assert sim.get_beam_blanked() is True
    assert [r.index for r in read_session(tmp_path / "s").records] == [0]


def test_stage_reporting_another_angle_ends_run(tmp_path: Path) -> None:
    """A tolerance below the simulated reading's error: the stage reports the target, so shift it."""
    sim = _sim()
    original = sim.get_stage_position

    def off_by_a_degree() -> dict:
        position = original()
        position["a"] += np.radians(1.0)
        return position

    sim.get_stage_position = off_by_a_degree  # the stage stops 1 deg away from where it was sent
    with running_server(sim) as url:
        writer = SessionWriter.create(tmp_path / "s", SessionSettings())
        with pytest.raises(StageError, match=r"stage reports -69.0000 deg after the move to -70.0000 deg"):
            Executor(BridgeMicroscope(url, timeout_s=5), TiltScheme(count=3), writer, _config()).run()
        assert sim.get_beam_blanked() is True
    assert read_session(tmp_path / "s").records == ()


def test_overshoot_outside_limits_refused_before_any_move(tmp_path: Path) -> None:
    sim = _sim(alpha_min_deg=-71.0, alpha_max_deg=71.0)
    with running_server(sim) as url:
        writer = SessionWriter.create(tmp_path / "s", SessionSettings())
        with pytest.raises(UserError, match=r"min -70 deg minus backlash 2 deg = -72 deg is outside the holder "
                                            r"limits \[-71, 71\] deg"):
            Executor(BridgeMicroscope(url, timeout_s=5), TiltScheme(count=3), writer, _config()).run()
    assert sim.commanded_moves == []


def test_the_calibrated_tilt_axis_is_recorded_for_the_geometry_step(tmp_path: Path) -> None:
    """``--tilt-axis-deg`` goes into session.json with its source, and the geometry step takes it from there;
    without it nothing is recorded and the axis is left to the estimate."""
    from tiltstream.recon.series_alignment import AlignSettings, axis_from_session

    sim = _sim(alpha_min_deg=-75.0, alpha_max_deg=75.0)
    base = ["acquire", "--count", "2", "--min", "-60", "--max", "60", "--detector", "HAADF",
            "--dwell-time-s", "1e-6", "--pixel-size-nm", "0.5"]
    with running_server(sim) as url:
        assert main([*base, "--bridge", url, "--session", str(tmp_path / "known"), "--tilt-axis-deg", "-3.25"]) == 0
        assert main([*base, "--bridge", url, "--session", str(tmp_path / "unknown")]) == 0
    known = read_session(tmp_path / "known").settings.model_extra
    assert known["tilt_axis_deg"] == -3.25 and known["tilt_axis_from"].startswith("tiltstream acquire")
    axis_deg, source = axis_from_session(AlignSettings(), known)
    assert axis_deg == -3.25 and "tiltstream acquire" in source
    unknown = read_session(tmp_path / "unknown").settings.model_extra
    assert "tilt_axis_deg" not in unknown
    assert axis_from_session(AlignSettings(), unknown)[0] is None
    assert main([*base, "--bridge", "http://127.0.0.1:9", "--session", str(tmp_path / "bad"),
                 "--tilt-axis-deg", "200"]) == 2
