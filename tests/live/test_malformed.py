"""Malformed frames and volume requests reaching the live process are logged and skipped; it keeps running."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import zmq

from tiltstream.acquire.session import read_session
from tiltstream.acquire.stream import TOPIC_FRAME, FrameHeader
from tiltstream.live.run_state import ENDPOINTS_FILE
from tiltstream.recon.checkpoint import CHECKPOINT_FILE
from tiltstream.wire import encode
from tiltstream.live.status import TOPIC_ORTHOSLICES, decode_status_message, encode_volume_request
from tiltstream.recon.trainer import Trainer
from tests.live.conftest import FRAMES, live_args, wait_for


def _junk(session_dir) -> list[list[bytes]]:
    session = read_session(session_dir)
    record = session.records[3]
    good = [bytes(p) for p in encode(TOPIC_FRAME, FrameHeader.from_record(record, session_dir.name),
                                     session.load_frame(record))]
    nan = np.full(record.shape, np.nan, dtype=record.dtype).tobytes() if record.dtype.startswith("float") \
        else None
    junk = [[b"framez", good[1], good[2]],            # wrong topic (passes the SUB prefix filter)
            [TOPIC_FRAME, b"{not json", good[2]],     # bad JSON
            [TOPIC_FRAME, good[1], good[2][:-8]],     # wrong buffer size
            [TOPIC_FRAME, good[1]]]                   # missing part
    if nan is not None:
        junk.append([TOPIC_FRAME, good[1], nan])      # NaN frame
    return junk


@pytest.mark.timeout(120)
def test_live_survives_malformed_messages(small_session, tmp_path, processes):
    """A PUB socket sends only junk (wrong topic, bad JSON, wrong buffer size, missing part, NaN frame)
    every 50 ms; the frames themselves come from the session directory. Junk volume requests go to the
    ROUTER. The process logs each kind, answers a good volume request, and finishes with all 10 frames."""
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.linger = 0
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    junk = _junk(small_session)
    stop = threading.Event()

    def spam():
        while not stop.is_set():
            for parts in junk:
                pub.send_multipart(parts)
            stop.wait(0.05)

    thread = threading.Thread(target=spam)
    thread.start()
    run = tmp_path / "run"
    dealer = context.socket(zmq.DEALER)
    dealer.linger = 0
    try:
        proc = processes.start(*live_args(small_session, run, f"tcp://127.0.0.1:{port}", "--final-steps", "600",
                                          "--chunk-steps", "5", "--threads", "1"), log=tmp_path / "live.log")
        wait_for(lambda: (run / ENDPOINTS_FILE).is_file(), 60, "endpoints.json", proc)
        dealer.connect(json.loads((run / ENDPOINTS_FILE).read_text())["volume"])
        for bad in ([b"", b"volume-request", b"{oops", b""], [b"", b"nonsense"], [b"", b"volume-request",
                                                                               b'{"request_id": -1}', b""]):
            dealer.send_multipart(bad)
        for _ in range(60):  # requests before the first frame is in the model get no answer: ask again
            dealer.send_multipart([b""] + encode_volume_request(7, 5.0))
            if dealer.poll(1000):
                break
        else:
            raise AssertionError("no reply to a good volume request")
        reply = dealer.recv_multipart()
        assert reply[1] == TOPIC_ORTHOSLICES
        slices = decode_status_message(reply[1:])
        assert slices.header.request_id == 7 and slices.xy.shape == (16, 16)
        assert proc.wait(90) == 0
    finally:
        stop.set()
        thread.join(5)
        dealer.close(0)
        pub.close(0)
        context.term()
    log = (tmp_path / "live.log").read_text()
    for reason in ("unexpected topic", "not UTF-8 JSON", "buffer has", "3 parts", "NaN",
                   "skipped a malformed volume request"):
        assert reason in log, reason
    assert Trainer.load(run / CHECKPOINT_FILE).indices == list(range(FRAMES))
