"""``tiltstream replay``: a recorded session streamed through the frame publisher, in order, never early."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tiltstream.errors import UserError
from tiltstream.acquire.session import read_session
from tiltstream.acquire.subscriber import FrameSubscriber
from tiltstream.simulator.replay_stream import replay_session


@pytest.mark.timeout(60)
def test_replay_streams_every_frame_once_in_order_and_never_early(small_session):
    """A subscriber with only the publisher's resend endpoint for catch-up (no session directory) gets
    every frame once, in index order, equal to the recorded frame and record; and no frame reaches it
    before replay published it (resend serves the staging copy, which holds only frames already sent)."""
    published: dict[int, float] = {}
    endpoints: dict[str, str] = {}
    ready = threading.Event()

    def on_start(pub, resend):
        endpoints.update(pub=pub, resend=resend)
        ready.set()

    thread = threading.Thread(target=replay_session, args=(small_session, "tcp://127.0.0.1:*"), kwargs=dict(
        resend="tcp://127.0.0.1:*", speed=20.0, wait=True, wait_timeout_s=30, on_start=on_start,
        on_publish=lambda index, t: published.__setitem__(index, t)))
    thread.start()
    try:
        assert ready.wait(20)
        received = []
        with FrameSubscriber(endpoints["pub"], resend_endpoint=endpoints["resend"]) as subscriber:
            for header, frame in subscriber.frames(timeout_s=20):
                received.append((header, np.array(frame), time.monotonic()))
    finally:
        thread.join(30)
    session = read_session(small_session)
    assert [h.index for h, _, _ in received] == [r.index for r in session.records] == list(range(10))
    for (header, frame, arrived), record in zip(received, session.records):
        np.testing.assert_array_equal(frame, session.load_frame(record))
        assert header.angle_deg == record.angle_deg and header.time_s == record.time_s
        assert header.session == small_session.name
        assert arrived >= published[header.index]


@pytest.mark.timeout(30)
def test_replay_without_subscriber_times_out_with_one_line(small_session):
    with pytest.raises(UserError, match="no subscriber connected .* --no-wait"):
        replay_session(small_session, "tcp://127.0.0.1:*", wait=True, wait_timeout_s=0.5)


def test_replay_rejects_bad_speed(small_session):
    with pytest.raises(UserError, match="speed 0.0 is not allowed"):
        replay_session(small_session, "tcp://127.0.0.1:*", speed=0.0)
