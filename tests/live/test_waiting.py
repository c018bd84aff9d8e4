"""Between frames the deterministic schedule, and the continuous one at its cap, wait on the stream:
they neither spin nor flood the status; the cap and the final steps give an exact step count."""

from __future__ import annotations

import json
import time

import pytest
import zmq

from tiltstream.live.run_state import ENDPOINTS_FILE
from tiltstream.live.status import StatusHeader, decode_status_message
from tiltstream.recon.trainer import Trainer
from tests.live.conftest import FRAMES, live_args, wait_for


@pytest.mark.timeout(120)
@pytest.mark.parametrize("schedule", ["--steps-per-frame", "--max-steps-per-frame"])
def test_the_schedule_waits_for_the_next_frame(small_session, tmp_path, processes, schedule):
    """``--steps-per-frame 5`` (deterministic) or ``--max-steps-per-frame 5`` (continuous, capped) with 10
    recorded frames of 20 expected: after training 5 steps for each frame it has, the process waits for
    frames that never come. Waiting, it publishes status a few times a second (the stream polled with a
    timeout), not in a busy loop (about a hundred a second before this was fixed), trains no further step,
    and gives up by ``--idle-timeout-s`` with its 10 frames and 50 steps."""
    run = tmp_path / "run"
    proc = processes.start(*live_args(small_session, run, "tcp://127.0.0.1:1", schedule, "5",
                                      "--expected-frames", str(2 * FRAMES), "--idle-timeout-s", "6",
                                      "--threads", "1"), log=tmp_path / "live.log")
    wait_for(lambda: (run / ENDPOINTS_FILE).is_file(), 60, "endpoints.json", proc)
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.linger = 0
    sub.subscribe(b"status")
    sub.connect(json.loads((run / ENDPOINTS_FILE).read_text())["status"])
    try:
        steps, counted, started = [], 0, None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if not sub.poll(100):
                continue
            message = decode_status_message(sub.recv_multipart())
            if (not isinstance(message, StatusHeader) or message.frames_in_model < FRAMES
                    or (started is None and message.step < 5 * FRAMES)):
                continue
            if started is None:  # every recorded frame in and trained for: from here on it only waits
                started = time.monotonic()
            steps.append(message.step)
            counted += 1
            if time.monotonic() - started >= 2.0:
                break
        elapsed_s = time.monotonic() - started
    finally:
        sub.close(0)
        context.term()
    assert started is not None and elapsed_s >= 2.0, (tmp_path / "live.log").read_text()[-2000:]
    assert counted / elapsed_s < 30, f"{counted} status messages in {elapsed_s:.1f} s while waiting"
    assert set(steps) == {5 * FRAMES}
    assert proc.wait(60) == 0, (tmp_path / "live.log").read_text()[-2000:]
    assert Trainer.load(run).steps_done == 5 * FRAMES


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("cap", "steps"), [(5, 5 * FRAMES + 7), (0, 7)])
def test_the_final_steps_follow_the_cap(small_session, tmp_path, processes, cap, steps):
    """Every expected frame recorded (caught up at once): capped at 5 steps per frame, the continuous
    schedule trains up to its cap (50 steps) and then ``--final-steps 7``; uncapped (0), only the final
    steps. It finishes by itself with exactly that many steps."""
    run = tmp_path / "run"
    proc = processes.start(*live_args(small_session, run, "tcp://127.0.0.1:1", "--max-steps-per-frame",
                                      str(cap), "--final-steps", "7", "--chunk-steps", "4", "--threads", "1"),
                           log=tmp_path / "live.log")
    assert proc.wait(90) == 0, (tmp_path / "live.log").read_text()[-2000:]
    assert Trainer.load(run).steps_done == steps
