"""Frame stream over real ZeroMQ sockets on loopback: live, late join, gaps, malformed messages, CURVE."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from tiltstream.acquire.publisher import TOPIC_ERROR, TOPIC_RESEND, CurveClientKeys, CurveServerKeys, FramePublisher
from tiltstream.acquire.session import SessionSettings, SessionWriter
from tiltstream.acquire.stream import TOPIC_FRAME, FrameHeader
from tiltstream.wire import encode
from tiltstream.acquire.subscriber import FrameSubscriber

pytestmark = pytest.mark.timeout(60)
LOOPBACK = "tcp://127.0.0.1:*"


def _frame(index: int) -> np.ndarray:
    return np.random.default_rng(index).random((8, 9)).astype(np.float32)


def _record(writer: SessionWriter, index: int):
    return writer.append(_frame(index), index=index, target_deg=float(index), angle_deg=float(index),
                         time_s=float(index), exposure_s=0.1, dose_e_per_A2=1.0)


def _check(frames: list, count: int, start: int = 0) -> None:
    assert [h.index for h, _ in frames] == list(range(start, count))
    for header, array in frames:
        np.testing.assert_array_equal(array, _frame(header.index))


def _publish_in_background(writer: SessionWriter, publisher: FramePublisher, indices, skip=(),
                           delay_s: float = 0.02) -> threading.Thread:
    def run() -> None:
        for index in indices:
            record = _record(writer, index)
            if index not in skip:
                publisher.publish(record, _frame(index))
            time.sleep(delay_s)
        publisher.close()
    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("catchup", ["session_dir", "resend"])
def test_late_subscriber_gets_every_frame_once_in_order(tmp_path: Path, catchup: str) -> None:
    """Frames 0..9 are published before the subscriber exists; 10..24 while it listens, 17 never published."""
    writer = SessionWriter.create(tmp_path / "run", SessionSettings())
    publisher = FramePublisher(LOOPBACK, writer.path, resend_endpoint=LOOPBACK)
    for index in range(10):
        publisher.publish(_record(writer, index), _frame(index))
    subscriber = FrameSubscriber(publisher.endpoint,
                                 session_dir=writer.path if catchup == "session_dir" else None,
                                 resend_endpoint=publisher.resend_endpoint)
    try:
        thread = _publish_in_background(writer, publisher, range(10, 25), skip={17})
        frames = list(subscriber.frames(timeout_s=10))
        thread.join(timeout=10)
    finally:
        subscriber.close()
    _check(frames, 25)
    assert subscriber.end_index == 25


def test_first_batch_returns_with_the_frames_it_has_and_loses_none(tmp_path: Path) -> None:
    """``first_batch``: a call with a 30 s timeout returns as soon as the frames one pass could deliver
    were yielded (not 30 s after the last of them); calls one after another still give every frame
    0..11 once, in order, and the call after the last frame returns at the publisher's end message."""
    writer = SessionWriter.create(tmp_path / "fb", SessionSettings())
    publisher = FramePublisher(LOOPBACK, writer.path, resend_endpoint=LOOPBACK)
    subscriber = FrameSubscriber(publisher.endpoint, session_dir=writer.path, poll_s=0.01)
    try:
        thread = _publish_in_background(writer, publisher, range(12), delay_s=0.3)
        frames, calls, started = [], 0, time.monotonic()
        while len(frames) < 12:
            batch = list(subscriber.frames(timeout_s=30, first_batch=True))
            calls += 1
            assert batch, "a call returned with no frame before its timeout"
            frames += batch
        waited_s = time.monotonic() - started
        thread.join(timeout=10)
        assert list(subscriber.frames(timeout_s=30, first_batch=True)) == []  # ends at the end message
    finally:
        subscriber.close()
    _check(frames, 12)
    assert subscriber.end_index == 12
    assert calls >= 6  # frames 0.3 s apart arrive in several calls, not one
    assert waited_s < 25  # without first_batch the first call alone would wait out its 30 s timeout


def test_resend_serves_in_batches_beyond_max_batch(tmp_path: Path) -> None:
    """150 recorded frames (more than MAX_BATCH=64 per reply) all arrive through the resend endpoint."""
    writer = SessionWriter.create(tmp_path / "big", SessionSettings())
    for index in range(150):
        _record(writer, index)
    publisher = FramePublisher(LOOPBACK, writer.path, resend_endpoint=LOOPBACK)
    subscriber = FrameSubscriber(publisher.endpoint, resend_endpoint=publisher.resend_endpoint, start_index=20)
    try:
        frames = list(subscriber.frames(timeout_s=2))
    finally:
        subscriber.close()
        publisher.close()
    _check(frames, 150, start=20)


def test_malformed_messages_are_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    writer = SessionWriter.create(tmp_path / "m", SessionSettings())
    context = zmq.Context.instance()
    pub = context.socket(zmq.PUB)
    pub.linger = 0
    pub.bind(LOOPBACK)
    subscriber = FrameSubscriber(pub.getsockopt_string(zmq.LAST_ENDPOINT), catchup_interval_s=60)
    try:
        time.sleep(0.3)  # let the subscription reach the PUB socket (no catch-up source here)
        good = [bytes(p) for p in encode(TOPIC_FRAME, FrameHeader.from_record(_record(writer, 0), "m"), _frame(0))]
        pub.send_multipart([TOPIC_FRAME, b"{broken", good[2]])
        pub.send_multipart([TOPIC_FRAME, good[1], good[2][:-4]])
        pub.send_multipart([TOPIC_FRAME, good[1]])
        pub.send_multipart(good)
        pub.send_multipart(good)  # duplicate
        with caplog.at_level(logging.WARNING, logger="tiltstream.acquire.subscriber"):
            frames = list(subscriber.frames(timeout_s=1.0))
    finally:
        subscriber.close()
        pub.close(0)
    _check(frames, 1)
    assert subscriber.skipped.total == 3
    # the first skip at once, the other two in one summary line at close (not one line per message)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and lines[0].startswith("skipped a malformed message")
    assert lines[1].startswith("skipped 2 messages") and "(3 since the start): 1 x a malformed" in lines[1]


def test_bad_resend_request_gets_an_error_reply(tmp_path: Path) -> None:
    writer = SessionWriter.create(tmp_path / "r", SessionSettings())
    publisher = FramePublisher(LOOPBACK, writer.path, resend_endpoint=LOOPBACK)
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.linger = 0
    try:
        dealer.connect(publisher.resend_endpoint)
        dealer.send_multipart([TOPIC_RESEND, b'{"start": -3}'])
        assert dealer.poll(5000)
        topic, header, _ = dealer.recv_multipart()
        assert topic == TOPIC_ERROR and "start must be >= 0" in json.loads(header)["error"]
    finally:
        dealer.close(0)
        publisher.close()


def test_curve_link_on_loopback(tmp_path: Path) -> None:
    """With CURVE keys both the live stream and resend work; a client without keys receives nothing."""
    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    writer = SessionWriter.create(tmp_path / "c", SessionSettings())
    publisher = FramePublisher(LOOPBACK, writer.path, resend_endpoint=LOOPBACK,
                               curve=CurveServerKeys(public=server_public, secret=server_secret))
    for index in range(3):
        publisher.publish(_record(writer, index), _frame(index))
    keys = CurveClientKeys(server_public=server_public, public=client_public, secret=client_secret)
    secure = FrameSubscriber(publisher.endpoint, resend_endpoint=publisher.resend_endpoint, curve=keys)
    plain = FrameSubscriber(publisher.endpoint, resend_endpoint=publisher.resend_endpoint,
                            request_timeout_s=0.5)
    try:
        thread = _publish_in_background(writer, publisher, range(3, 8))
        frames = list(secure.frames(timeout_s=10))
        thread.join(timeout=10)
        assert list(plain.frames(timeout_s=1.0)) == []
    finally:
        secure.close()
        plain.close()
    _check(frames, 8)
