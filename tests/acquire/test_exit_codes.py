"""Exit codes that tell bad input (2) from a microscope fault (4), and one line naming a file that is missing.

A bridge fault mid-run (the simulator's detector failing every call, over HTTP) ends ``tiltstream acquire``
with exit 4 and one line saying the beam was blanked and the exact command that continues the session;
running that command completes it.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest

from tiltstream.acquire.session import SessionSettings, SessionWriter, read_session
from tiltstream.cli import EXIT_MICROSCOPE, EXIT_USAGE, main
from tiltstream.simulator.bridge_server import running_server
from tiltstream.simulator.clock import ManualClock
from tiltstream.simulator.microscope import SimulatedMicroscope
from tiltstream.simulator.settings import SimSettings

pytestmark = pytest.mark.timeout(120)


def test_a_bridge_fault_is_exit_4_with_the_beam_state_and_the_resume_command(tmp_path: Path, capsys) -> None:
    sim = SimulatedMicroscope(SimSettings(size=16, steps=2, mode="instant", noise="none", device="cpu",
                                          pixel_size_nm=1.0), clock=ManualClock())
    session = tmp_path / "my session"
    argv = ["acquire", "--session", str(session), "--count", "4", "--dwell-time-s", "1e-6", "--pixel-size-nm", "1.0",
            "--retries", "2", "--retry-backoff-s", "0"]
    with running_server(sim) as url:
        sim.faults.fail("acquire", count=100)
        code = main([*argv, "--bridge", url])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == EXIT_MICROSCOPE
        assert err[0].startswith("tiltstream acquire: session ")  # the first line, before any frame
        faults = [line for line in err if "microscope fault" in line]
        assert faults == [err[-1]] and err[-1].startswith("tiltstream acquire: microscope fault: ")
        assert "the beam was blanked" in err[-1] and "session" in err[-1] and "has 0 frames" in err[-1]
        assert sim.get_beam_blanked() is True
        command = err[-1].split("continue with: ", 1)[1]
        words = shlex.split(command)
        assert words[:2] == ["tiltstream", "acquire"] and "--resume" in words and str(session) in words
        sim.faults.clear()
        assert main(words[1:]) == 0
    assert [r.index for r in read_session(session).records] == [0, 1, 2, 3]


def test_a_missing_frame_file_is_one_line_naming_it(tmp_path: Path, capsys) -> None:
    writer = SessionWriter.create(tmp_path / "s", SessionSettings(pixel_size_nm=1.0))
    for i in range(3):
        writer.append(np.full((4, 4), i, np.float32), index=i, target_deg=float(i), angle_deg=float(i),
                      time_s=float(i), exposure_s=0.1, dose_e_per_A2=1.0)
    lost = writer.path / "frames" / "000001.tif"
    lost.unlink()
    code = main(["export", "--session", str(writer.path), "--imod", str(tmp_path / "out" / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USAGE
    assert err == [f"tiltstream export: error: {str(lost)!r} does not exist"]
