"""`tiltstream acquire --track/--focus` and `--resume` of a session that has not started, on the simulator."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tiltstream.acquire.session import SessionSettings, SessionWriter, read_session
from tiltstream.cli import main
from tiltstream.simulator.bridge_server import running_server
from tiltstream.simulator.clock import ManualClock
from tiltstream.simulator.microscope import SimulatedMicroscope
from tiltstream.simulator.settings import SimSettings

pytestmark = pytest.mark.timeout(120)


def _sim() -> SimulatedMicroscope:
    sim = SimulatedMicroscope(SimSettings(size=32, steps=4, mode="instant", noise="none", device="cpu",
                                          pixel_size_nm=1.0, eucentric_offset_nm=8.0), clock=ManualClock())
    sim.set_image_shift([8e-9 * math.sin(math.radians(70.0)), 0.0])
    return sim


def _acquire(url: str, session: Path, *extra: str) -> int:
    return main(["acquire", "--bridge", url, "--session", str(session), "--dwell-time-s", "1e-6",
                 "--pixel-size-nm", "1.0", *extra])


def test_track_previous_and_focus_record_tracking_through_the_cli(tmp_path: Path, capsys) -> None:
    sim = _sim()
    with running_server(sim) as url:
        code = _acquire(url, tmp_path / "s", "--count", "8", "--track", "previous", "--focus", "tilt-model")
    assert code == 0
    records = read_session(tmp_path / "s").records
    assert len(records) == 8 and all(r.tracking is not None for r in records)
    assert records[-1].tracking.defocus_m == pytest.approx(sim.get_probe_defocus())
    assert "shift (" in capsys.readouterr().err


def test_track_model_without_endpoint_is_one_line(tmp_path: Path, capsys) -> None:
    assert main(["acquire", "--session", str(tmp_path / "s"), "--track", "model"]) != 0
    assert "--model-endpoint" in capsys.readouterr().err


@pytest.mark.parametrize("state", ["missing", "empty-dir", "frames-dir-only", "settings-only"])
def test_resume_starts_a_session_killed_before_its_first_frame(tmp_path: Path, state: str) -> None:
    session = tmp_path / "s"
    if state == "empty-dir":
        session.mkdir()
    elif state == "frames-dir-only":
        (session / "frames").mkdir(parents=True)
    elif state == "settings-only":
        SessionWriter.create(session, SessionSettings(scheme={"kind": "grs", "count": 3}, pixel_size_nm=1.0))
    sim = _sim()
    with running_server(sim) as url:
        code = _acquire(url, session, "--resume", "--count", "3")
    assert code == 0
    assert [r.index for r in read_session(session).records] == [0, 1, 2]


def test_resume_still_refuses_a_folder_that_holds_something_else(tmp_path: Path, capsys) -> None:
    session = tmp_path / "s"
    session.mkdir()
    (session / "notes.txt").write_text("mine")
    sim = _sim()
    with running_server(sim) as url:
        code = _acquire(url, session, "--resume", "--count", "3")
    assert code != 0 and (session / "notes.txt").exists()
    assert "not a session" in capsys.readouterr().err


def test_resume_continues_tracking_from_the_recorded_frames(tmp_path: Path) -> None:
    sim = _sim()
    with running_server(sim) as url:
        assert _acquire(url, tmp_path / "s", "--count", "8", "--track", "previous") == 0
        assert _acquire(url, tmp_path / "s", "--count", "14", "--track", "previous", "--resume", "--extend") == 0
    records = read_session(tmp_path / "s").records
    assert [r.index for r in records] == list(range(14))
    truth = [f.displacement_m[0] * 1e9 - sim.frames[0].displacement_m[0] * 1e9 for f in sim.frames]
    for record, true_px in zip(records[8:], truth[8:]):  # same origin as before the restart
        assert record.tracking.shift_px[0] == pytest.approx(true_px, abs=1.0)
    assert max(abs(t) for t in truth[8:]) < 1.5  # and still corrected


def test_track_model_falls_back_to_previous_when_no_model_answers(tmp_path: Path) -> None:
    from tests.acquire.conftest import free_port

    sim = _sim()
    with running_server(sim) as url:
        code = _acquire(url, tmp_path / "s", "--count", "6", "--track", "model", "--model-endpoint",
                        f"tcp://127.0.0.1:{free_port()}", "--model-timeout-s", "0.05")
    assert code == 0
    records = read_session(tmp_path / "s").records
    assert [r.tracking.mode for r in records] == ["previous"] * 6
    assert "image_shift" in {endpoint for method, endpoint in sim.requests if method == "PUT"}


def test_resume_with_another_count_is_refused_unless_extended(tmp_path: Path, capsys) -> None:
    sim = _sim()
    with running_server(sim) as url:
        assert _acquire(url, tmp_path / "s", "--count", "3") == 0
        capsys.readouterr()
        assert _acquire(url, tmp_path / "s", "--count", "5", "--resume") == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"tiltstream acquire: error: --count 5 differs from session {str(tmp_path / 's')!r}'s "
                       "count 3; leave --count out to continue it, or add --extend to change its count"]
        assert len(read_session(tmp_path / "s").records) == 3
        assert _acquire(url, tmp_path / "s", "--count", "3", "--resume") == 0  # the same count: nothing to do
        assert _acquire(url, tmp_path / "s", "--count", "5", "--resume", "--extend") == 0
    assert [r.index for r in read_session(tmp_path / "s").records] == [0, 1, 2, 3, 4]
