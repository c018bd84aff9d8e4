"""The reprojection request/reply wire and the DEALER client against a ROUTER on loopback."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import zmq

from tiltstream.acquire.model_link import (ModelLink, ReprojectionRequest, decode_reply, decode_request, encode_reply,
                                encode_request)
from tiltstream.wire import WireError
from tests.acquire.conftest import free_port

pytestmark = pytest.mark.timeout(30)


def test_request_and_reply_round_trip() -> None:
    request = ReprojectionRequest(request_id="r1", angle_deg=-42.5, time_s=12.0)
    parts = [bytes(p) for p in encode_request(request)]
    assert parts[0] == b"reproject?" and parts[2] == b""
    assert decode_request(parts) == request
    image = np.arange(12, dtype=np.float64).reshape(3, 4)
    header, back = decode_reply([bytes(p) for p in encode_reply(request, "s", image)])
    assert header.request_id == "r1" and header.angle_deg == -42.5 and back.dtype == np.float32
    np.testing.assert_array_equal(back, image)
    with pytest.raises(WireError):
        decode_request([b"reprojected", parts[1], b""])


def _router(endpoint: str, answer: bool, ready: threading.Event, done: threading.Event) -> None:
    socket = zmq.Context.instance().socket(zmq.ROUTER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.bind(endpoint)
    ready.set()
    try:
        while not done.is_set():
            if not socket.poll(50):
                continue
            identity, *parts = socket.recv_multipart()
            request = decode_request(parts)
            if answer:
                image = np.full((4, 5), request.angle_deg, dtype=np.float32)
                socket.send_multipart([identity, *encode_reply(request, "s", image)])
    finally:
        socket.close(linger=0)


@pytest.mark.parametrize("answer", [True, False])
def test_model_link_gets_the_reprojection_or_none_after_timeout(answer: bool) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    ready, done = threading.Event(), threading.Event()
    thread = threading.Thread(target=_router, args=(endpoint, answer, ready, done))
    thread.start()
    ready.wait(5)
    link = ModelLink(endpoint, timeout_s=0.3)
    try:
        image = link.reprojection(30.0, time_s=None)
    finally:
        link.close()
        done.set()
        thread.join(5)
    if answer:
        assert image is not None and image.shape == (4, 5) and float(image[0, 0]) == 30.0
    else:
        assert image is None


def test_reply_without_image_says_why() -> None:
    """A live process with no model yet answers with an empty image and its reason; a model's answer carries
    the step of its weights and its prediction error."""
    request = ReprojectionRequest(request_id="r2", angle_deg=10.0)
    header, image = decode_reply([bytes(p) for p in encode_reply(request, "s", None, reason="no chunk yet")])
    assert image.size == 0 and header.reason == "no chunk yet"
    header, image = decode_reply([bytes(p) for p in encode_reply(request, "s", np.ones((2, 3)), step=7,
                                                                 error_percent=12.5)])
    assert image.shape == (2, 3) and header.step == 7 and header.error_percent == 12.5 and header.reason is None
