"""The frame stream's control messages (tiltstream.acquire.stream): end of run, resend request, resent marker, error reply.

Each round-trips through its codec to an equal model, and every malformed message raises WireError
with one line naming what is wrong; on sockets, a publisher's end and resend traffic decodes with them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from tiltstream.acquire.publisher import FramePublisher, end_message
from tiltstream.acquire.session import SessionSettings, SessionWriter
from tiltstream.acquire.stream import (TOPIC_END, TOPIC_ERROR, TOPIC_RESENT, EndOfRun, ErrorReply, FrameHeader,
                                       ResendRequest, Resent, decode_control, decode_frame, decode_resend_request,
                                       encode_resend_request)
from tiltstream.wire import WireError, encode

LOOPBACK = "tcp://127.0.0.1:*"


def _bytes(parts) -> list[bytes]:
    return [bytes(part) for part in parts]


@settings(max_examples=40, deadline=None)
@given(session=st.text(min_size=1, max_size=20), next_index=st.integers(0, 10**9))
def test_end_of_run_round_trip(session: str, next_index: int) -> None:
    parts = _bytes(end_message(session, next_index))
    assert parts[0] == TOPIC_END and parts[2] == b""
    assert decode_control(parts, TOPIC_END, EndOfRun) == EndOfRun(session=session, next_index=next_index)


@settings(max_examples=40, deadline=None)
@given(req=st.none() | st.integers(0, 10**6), start=st.integers(0, 10**6),
       stop=st.none() | st.integers(0, 10**6))
def test_resend_request_round_trip(req: int | None, start: int, stop: int | None) -> None:
    request = ResendRequest(req=req, start=start, stop=stop)
    parts = encode_resend_request(request)
    assert len(parts) == 2 and json.loads(parts[1]) == {"v": 1, "req": req, "start": start, "stop": stop}
    assert decode_resend_request(parts) == request


def test_resent_and_error_round_trip() -> None:
    marker = Resent(req=7, session="rod", start=3, until=10, next_index=12)
    assert decode_control(_bytes(encode(TOPIC_RESENT, marker)), TOPIC_RESENT, Resent) == marker
    refusal = ErrorReply(error="resend start must be >= 0; got -3")
    assert decode_control(_bytes(encode(TOPIC_ERROR, refusal)), TOPIC_ERROR, ErrorReply) == refusal


def test_a_minimal_request_of_older_clients_is_accepted() -> None:
    """Only ``start`` is required: version, request id and stop default (1, None, None)."""
    assert decode_resend_request([b"resend", b'{"start": 4}']) == ResendRequest(start=4)


END = [TOPIC_END, b'{"v": 1, "session": "s", "next_index": 5}', b""]


@pytest.mark.parametrize("parts, fragment", [
    (END[:2], "3 parts"),
    ([b"frame", END[1], b""], "unexpected topic"),
    ([TOPIC_END, b"{not json", b""], "not UTF-8 JSON"),
    ([TOPIC_END, b"[1, 2]", b""], "JSON object"),
    ([TOPIC_END, b'{"v": 1, "session": "s"}', b""], "field next_index: Field required"),
    ([TOPIC_END, b'{"v": 1, "session": "s", "next_index": -1}', b""], "field next_index"),
    ([TOPIC_END, b'{"v": 1, "session": "s", "next_index": "five"}', b""], "field next_index"),
    ([TOPIC_END, b'{"v": 2, "session": "s", "next_index": 5}', b""], "wire version must be 1"),
    ([TOPIC_END, b'{"v": 1, "session": "s", "next_index": 5, "extra": 1}', b""], "field extra"),
    ([TOPIC_END, END[1], b"\x00"], "carries no buffer"),
])
def test_malformed_end_of_run_is_a_wire_error(parts: list[bytes], fragment: str) -> None:
    with pytest.raises(WireError, match=fragment) as info:
        decode_control(parts, TOPIC_END, EndOfRun)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("parts, fragment", [
    ([b"resend"], "got 1 parts"),
    ([b"other", b'{"start": 0}'], "resend request is"),
    ([b"resend", b"\xff"], "not UTF-8 JSON"),
    ([b"resend", b'{"stop": 3}'], "field start: Field required"),
    ([b"resend", b'{"start": -3}'], "start must be >= 0; got -3"),
    ([b"resend", b'{"start": 0, "stop": "all"}'], "field stop"),
    ([b"resend", b'{"start": 0, "v": 9}'], "wire version must be 1"),
])
def test_malformed_resend_request_is_a_wire_error(parts: list[bytes], fragment: str) -> None:
    with pytest.raises(WireError, match=fragment):
        decode_resend_request(parts)


def test_malformed_resent_marker_is_a_wire_error() -> None:
    with pytest.raises(WireError, match="field until"):
        decode_control([TOPIC_RESENT, b'{"v": 1, "session": "s", "start": 0, "next_index": 3}', b""], TOPIC_RESENT,
                       Resent)


def test_publisher_traffic_decodes_with_the_models(tmp_path: Path) -> None:
    """A real publisher on loopback: resend replies (frames, then the marker) and the end message."""
    writer = SessionWriter.create(tmp_path / "sess", SessionSettings())
    for index in range(3):
        writer.append(np.full((4, 5), index, np.float32), index=index, target_deg=0.0, angle_deg=0.0,
                      time_s=float(index), exposure_s=1.0, dose_e_per_A2=1.0)
    publisher = FramePublisher(LOOPBACK, writer.path, resend_endpoint=LOOPBACK)
    context = zmq.Context()
    dealer, sub = context.socket(zmq.DEALER), context.socket(zmq.SUB)
    dealer.linger = sub.linger = 0
    closed = False
    try:
        sub.subscribe(TOPIC_END)
        sub.connect(publisher.endpoint)
        assert publisher.wait_for_subscriber(5.0)
        dealer.connect(publisher.resend_endpoint)
        dealer.send_multipart(encode_resend_request(ResendRequest(req=11, start=1)))
        replies = []
        while not replies or replies[-1][0] != TOPIC_RESENT:
            assert dealer.poll(5000)
            replies.append(dealer.recv_multipart())
        assert [decode_frame(parts)[0].index for parts in replies[:-1]] == [1, 2]
        assert isinstance(decode_frame(replies[0])[0], FrameHeader)
        assert decode_control(replies[-1], TOPIC_RESENT, Resent) == Resent(req=11, session="sess", start=1, until=3,
                                                                            next_index=3)
        publisher.close(next_index=3)
        closed = True
        assert sub.poll(5000)
        assert decode_control(sub.recv_multipart(), TOPIC_END, EndOfRun) == EndOfRun(session="sess", next_index=3)
    finally:
        dealer.close(0)
        sub.close(0)
        context.term()
        if not closed:
            publisher.close(send_end=False)
