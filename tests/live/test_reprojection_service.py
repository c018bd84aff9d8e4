"""The live process answers reprojection requests and publishes a new frame's reprojection while it trains.

A long ``--chunk-steps`` makes each training chunk take seconds; the status stream says when a chunk ends
(a ``status`` message with a larger step). The tests measure when an answer or a reprojection came and
when the chunk it came in ended, and assert the order, not a number of milliseconds.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import zmq

from tests.live.conftest import live_args, wait_for
from tiltstream.acquire.model_link import ModelLink
from tiltstream.live.run_state import ENDPOINTS_FILE
from tiltstream.live.status import Reprojection, StatusHeader, decode_status_message

CHUNK_STEPS = "400"  # a chunk of seconds at 16^3 on a CPU
TRAIN_ON = ("--chunk-steps", CHUNK_STEPS, "--max-steps-per-frame", "0", "--final-steps", "100000", "--threads", "1")


class StatusStream:
    """A SUB on the live process's status stream: each message decoded, with the time it came."""

    def __init__(self, endpoint: str) -> None:
        self.socket = zmq.Context.instance().socket(zmq.SUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        self.socket.connect(endpoint)

    def next(self, timeout_s: float) -> tuple[float, object] | None:
        if not self.socket.poll(int(timeout_s * 1000)):
            return None
        message = decode_status_message(self.socket.recv_multipart())
        return time.monotonic(), message

    def chunk_end(self, after_step: int, timeout_s: float, seen: list | None = None) -> tuple[float, int]:
        """When the first status message with a step above ``after_step`` came, and its step; messages on the
        way go into ``seen``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.next(deadline - time.monotonic())
            if got is None:
                break
            if seen is not None:
                seen.append(got)
            if isinstance(got[1], StatusHeader) and got[1].step > after_step:
                return got[0], got[1].step
        raise AssertionError(f"no chunk ended after step {after_step} within {timeout_s} s")

    def close(self) -> None:
        self.socket.close(0)


def _endpoints(run: Path, proc) -> dict:
    wait_for(lambda: (run / ENDPOINTS_FILE).is_file(), 60, "endpoints.json", proc)
    return json.loads((run / ENDPOINTS_FILE).read_text())


@pytest.mark.timeout(240)
def test_reprojection_request_is_answered_mid_chunk(small_session, tmp_path, processes):
    """Right after a chunk ends, a ``reproject?`` request is answered (from that chunk's weights, with the
    model's prediction error) before the next chunk ends."""
    run = tmp_path / "run"
    proc = processes.start(*live_args(small_session, run, "tcp://127.0.0.1:1", *TRAIN_ON), log=tmp_path / "live.log")
    endpoints = _endpoints(run, proc)
    stream = StatusStream(endpoints["status"])
    link = ModelLink(endpoints["volume"], timeout_s=120)
    try:
        _, step = stream.chunk_end(0, 120)  # the first chunk: the service holds weights from now on
        ended_s, step = stream.chunk_end(step, 120)
        asked_s = time.monotonic()
        answer = link.answer(20.0)
        answered_s = time.monotonic()
        next_end_s, _ = stream.chunk_end(step, 120)
    finally:
        link.close()
        stream.close()
    assert answer.image is not None and answer.image.shape == (16, 16), answer.reason
    assert answer.step == step
    assert answer.error_percent is not None
    assert ended_s <= asked_s < answered_s < next_end_s, (asked_s - ended_s, answered_s - asked_s,
                                                          next_end_s - ended_s)


@pytest.mark.timeout(240)
def test_new_frame_reprojection_is_published_before_its_chunk_ends(small_session, tmp_path, processes):
    """The live process holds 5 of the session's 10 frames and trains; a sixth frame recorded right after a
    chunk ends has its reprojection (from that chunk's weights) on the status stream before the next
    chunk ends."""
    session = tmp_path / "session"
    shutil.copytree(small_session, session)
    lines = (session / "frames.jsonl").read_text().splitlines(keepends=True)
    (session / "frames.jsonl").write_text("".join(lines[:5]))
    run = tmp_path / "run"
    proc = processes.start(*live_args(session, run, "tcp://127.0.0.1:1", *TRAIN_ON), log=tmp_path / "live.log")
    stream = StatusStream(_endpoints(run, proc)["status"])
    try:
        _, step = stream.chunk_end(0, 120)
        ended_s, step = stream.chunk_end(step, 120)
        with open(session / "frames.jsonl", "a") as frames:
            frames.write(lines[5])
        seen: list = []
        next_end_s, _ = stream.chunk_end(step, 120, seen)
        while not any(isinstance(m, Reprojection) and m.header.frame_index == 5 for _, m in seen):
            got = stream.next(60)
            assert got is not None, "no reprojection of frame 5"
            seen.append(got)
    finally:
        stream.close()
    published_s, message = next((t, m) for t, m in seen if isinstance(m, Reprojection) and m.header.frame_index == 5)
    assert message.header.step == step
    assert ended_s < published_s < next_end_s, (published_s - ended_s, next_end_s - ended_s)
