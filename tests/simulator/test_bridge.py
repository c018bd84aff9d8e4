"""The simulated microscope over HTTP, driven by temscript.RemoteMicroscope exactly as the executor does."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from temscript import RemoteMicroscope

from tiltstream.simulator.bridge_server import running_server
from tiltstream.simulator.clock import WallClock
from tiltstream.simulator.microscope import SimulatedMicroscope

from .conftest import served, small_settings

pytestmark = pytest.mark.timeout(60)


def _go(remote, alpha_deg: float) -> None:
    remote.set_stage_position(a=math.radians(alpha_deg))


def _wait_ready(remote, limit_s: float = 10.0) -> list[str]:
    seen = []
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        seen.append(remote.get_stage_status())
        if seen[-1] == "READY":
            return seen
        time.sleep(0.01)
    raise AssertionError(f"stage never READY: {seen[-5:]}")


def test_realistic_move_wait_ready_and_acquire():
    """Realistic stage on a 20x clock: GOING while travelling 30 deg at 15 deg/s, then READY at the target;
    the HAADF image is non-constant and changes with alpha."""
    microscope = SimulatedMicroscope(small_settings(mode="realistic"), clock=WallClock(20.0))
    with served(microscope) as remote:
        assert remote.get_instrument_mode() == "STEM"
        assert set(remote.get_stem_detectors()) == {"HAADF", "BF"}
        low, high = remote.get_stage_limits()["a"]
        assert (math.degrees(low), math.degrees(high)) == pytest.approx((-80.0, 80.0), abs=1e-9)
        first = remote.acquire("HAADF")["HAADF"]
        _go(remote, 30.0)
        seen = _wait_ready(remote)
        assert seen[0] == "GOING" and seen[-1] == "READY"
        assert math.degrees(remote.get_stage_position()["a"]) == pytest.approx(30.0, abs=1e-9)
        second = remote.acquire("HAADF")["HAADF"]
    assert first.shape == (24, 24) and first.dtype == np.float32 and first.std() > 0
    assert np.abs(second - first).max() > 0.1 * first.max()


def test_image_changes_with_time(manual_microscope):
    microscope = manual_microscope(seconds_per_step=1.0)
    with served(microscope) as remote:
        before = remote.acquire("HAADF")["HAADF"]
        microscope.clock.advance(4.0)
        after = remote.acquire("HAADF")["HAADF"]
    assert microscope.specimen.step_at(4.0) == 4
    assert np.abs(after - before).max() > 1e-3 and after.sum() == pytest.approx(before.sum(), rel=1e-4)


@pytest.mark.parametrize("mode", ["instant", "realistic"])
def test_backlash_visible_from_above_absent_from_below(manual_microscope, mode):
    """From above (40 -> 20 deg) the specimen lags at 20.5 deg (play 0.5); from below (10 -> 20) it is at 20.
    Realistic mode: each move is waited out (manual clock advanced until READY) before the next."""
    microscope = manual_microscope(mode=mode, seconds_per_step=1e6)  # one specimen state throughout
    render = microscope.specimen.frame

    def go(remote, alpha_deg):
        _go(remote, alpha_deg)
        if mode == "realistic":
            assert remote.get_stage_status() == "GOING"
            microscope.clock.advance(10.0)
        assert remote.get_stage_status() == "READY"

    with served(microscope) as remote:
        go(remote, 40.0)
        go(remote, 20.0)
        from_above = remote.acquire("HAADF")["HAADF"]
        assert microscope.true_alpha_deg == pytest.approx(20.5, abs=1e-9)
        assert math.degrees(remote.get_stage_position()["a"]) == pytest.approx(20.0, abs=1e-9)
        go(remote, 10.0)
        go(remote, 15.0)
        go(remote, 20.0)
        from_below = remote.acquire("HAADF")["HAADF"]
    np.testing.assert_allclose(from_above, render(20.5, 0.0), rtol=1e-5, atol=1e-5)
    assert np.abs(from_above - render(20.0, 0.0)).max() > 1e-2
    np.testing.assert_allclose(from_below, render(20.0, 0.0), rtol=1e-5, atol=1e-5)
    assert [round(m.alpha_deg, 9) for m in microscope.commanded_moves] == [40.0, 20.0, 10.0, 15.0, 20.0]


def test_realistic_stage_travel_takes_time(manual_microscope):
    """15 deg/s and 0.5 s settling: a 30 deg move reports 15 deg after 1 s (GOING), READY after 2.5 s."""
    microscope = manual_microscope(mode="realistic", tilt_speed_deg_per_s=15.0, settle_s=0.5)
    with served(microscope) as remote:
        _go(remote, 30.0)
        microscope.clock.advance(1.0)
        assert math.degrees(remote.get_stage_position()["a"]) == pytest.approx(15.0, abs=1e-9)
        assert remote.get_stage_status() == "GOING"
        microscope.clock.advance(1.4)
        assert remote.get_stage_status() == "GOING"  # arrived, still settling
        microscope.clock.advance(0.2)
        assert remote.get_stage_status() == "READY"


def test_out_of_limit_command_refused_and_recorded(manual_microscope):
    microscope = manual_microscope()
    with served(microscope) as remote:
        _go(remote, 12.0)
        with pytest.raises(RuntimeError, match="outside the holder limits"):
            _go(remote, 81.0)
        assert math.degrees(remote.get_stage_position()["a"]) == pytest.approx(12.0, abs=1e-9)
    assert [m.accepted for m in microscope.commanded_moves] == [True, False]


def test_dose_counts_unblanked_beam_time(manual_microscope):
    """50 e/A^2/s: 2 s unblanked = 100, 3 s blanked = 0, then one instant frame of dwell 1e-4 s * 576 px."""
    microscope = manual_microscope(dose_rate_e_per_A2_s=50.0, dwell_time_s=1e-4)
    with served(microscope) as remote:
        microscope.clock.advance(2.0)
        remote.set_beam_blanked(True)
        microscope.clock.advance(3.0)
        assert remote.get_beam_blanked() is True
        assert not remote.acquire("HAADF")["HAADF"].any()  # blanked beam: no signal
        remote.set_beam_blanked(False)
        remote.acquire("HAADF")
    assert microscope.total_dose_e_per_A2 == pytest.approx(100.0 + 50.0 * 1e-4 * 576, rel=1e-9)


def test_image_size_half_and_bf(manual_microscope):
    with served(manual_microscope()) as remote:
        remote.set_stem_acquisition_param({"image_size": "HALF"})
        images = remote.acquire("HAADF", "BF")
    assert images["HAADF"].shape == images["BF"].shape == (12, 12)
    assert np.corrcoef(images["HAADF"].ravel(), images["BF"].ravel())[0, 1] < -0.9


def test_fault_acquire_errors_then_recovers(manual_microscope):
    microscope = manual_microscope()
    with served(microscope) as remote:
        microscope.faults.fail("acquire", count=2, status=500)
        for _ in range(2):
            with pytest.raises(RuntimeError, match="500"):
                remote.acquire("HAADF")
        assert remote.acquire("HAADF")["HAADF"].std() > 0


def test_fault_stage_stays_moving(manual_microscope):
    microscope = manual_microscope()
    with served(microscope) as remote:
        microscope.stage.stuck = True
        _go(remote, 5.0)
        assert {remote.get_stage_status() for _ in range(5)} == {"MOVING"}
        microscope.stage.stuck = False
        assert remote.get_stage_status() == "READY"


def test_fault_dropped_connection(manual_microscope):
    microscope = manual_microscope()
    with served(microscope) as remote:
        microscope.faults.drop("stage_status", count=1)
        with pytest.raises(ConnectionError):
            remote.get_stage_status()
        assert remote.get_stage_status() == "READY"


def test_fault_slow_response_times_out(manual_microscope):
    """A 1 s delay exceeds the client's 0.3 s timeout. temscript 2.1 drops its connection object after a
    timeout (later calls raise AttributeError), so the client reconnects with a new RemoteMicroscope."""
    microscope = manual_microscope()
    with served(microscope, timeout=0.3) as remote:
        microscope.faults.delay("stage_position", 1.0)
        with pytest.raises(TimeoutError):
            remote.get_stage_position()
        microscope.faults.delay("stage_position", 0.0)
        fresh = RemoteMicroscope(remote.address, timeout=5.0)
        assert fresh.get_stage_status() == "READY"


def test_server_stops_and_frees_port(manual_microscope):
    import socket
    import threading

    before = threading.active_count()
    with running_server(manual_microscope()) as url:
        port = int(url.rsplit(":", 1)[1])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))
    assert threading.active_count() == before
