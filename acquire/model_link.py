"""Asks the live process for its reconstruction's reprojection at one angle (torch-free client and wire codec).

Wire (docs/design.md 6 message shape ``[topic, header, buffer]``), over a ZeroMQ DEALER (this client)
connected to the live process's ROUTER request endpoint:

- request: topic ``b"reproject?"``, header :class:`ReprojectionRequest` (JSON), empty buffer;
- reply: topic ``b"reprojected"``, header :class:`ReprojectionReply` (an
  :class:`tiltstream.wire.ArrayHeader` plus ``request_id``, ``angle_deg``, ``time_s``), buffer the raw
  C-order float32 image (ny, nx) (:func:`tiltstream.wire.encode` / :func:`tiltstream.wire.decode_array`).

The ROUTER sees ``[identity, topic, header, buffer]`` and answers ``[identity, topic, header, buffer]``;
the DEALER adds and strips no delimiter frame. A live process with no model yet does not answer (or
answers with an empty ``shape``); :meth:`ModelLink.reprojection` then returns None after its timeout,
and the tracker falls back to the previous-frame reference.
"""

from __future__ import annotations

import logging
import uuid

import numpy as np
import pydantic

from tiltstream.wire import ArrayHeader, WireError, decode_array, decode_header, encode

log = logging.getLogger(__name__)

TOPIC_REQUEST = b"reproject?"
TOPIC_REPLY = b"reprojected"


class ReprojectionRequest(pydantic.BaseModel):
    """Header of a ``reproject?`` request: which angle (and time) the tracker wants the model projected at."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    v: int = pydantic.Field(1, description="wire version")
    request_id: str = pydantic.Field(description="identifies the request; the reply repeats it")
    angle_deg: float = pydantic.Field(allow_inf_nan=False, description="tilt angle of the reprojection, degrees")
    time_s: float | None = pydantic.Field(None, description="specimen time, seconds since session start "
                                                            "(None: the latest the model knows)")


class ReprojectionReply(ArrayHeader):
    """Header of a ``reprojected`` reply: an :class:`ArrayHeader` (float32, (ny, nx)) and the request it answers."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    request_id: str
    angle_deg: float
    time_s: float | None = None


def encode_request(request: ReprojectionRequest) -> list[bytes | memoryview]:
    """The three message parts of a request (empty buffer)."""
    return encode(TOPIC_REQUEST, request)


def decode_request(parts: list[bytes]) -> ReprojectionRequest:
    """Parse the three parts of a request (the ROUTER strips the identity first).

    Raises
    ------
    WireError
        Wrong topic, bad JSON or an invalid header.
    """
    _, raw = decode_header(parts, TOPIC_REQUEST)
    try:
        return ReprojectionRequest.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise WireError(f"invalid reprojection request: {exc.errors()[0]['msg']}") from None


def encode_reply(request: ReprojectionRequest, session: str, image: np.ndarray) -> list[bytes | memoryview]:
    """The three message parts answering ``request`` with ``image`` (converted to float32, (ny, nx))."""
    image = np.ascontiguousarray(image, dtype=np.float32)
    header = ReprojectionReply(session=session, dtype="float32", shape=image.shape, request_id=request.request_id,
                               angle_deg=request.angle_deg, time_s=request.time_s)
    return encode(TOPIC_REPLY, header, image)


def decode_reply(parts: list[bytes]) -> tuple[ReprojectionReply, np.ndarray]:
    """Parse the three parts of a reply into its header and float32 image (ny, nx).

    Raises
    ------
    WireError
        Wrong topic, bad JSON, an invalid header or a buffer that does not match it.
    """
    _, raw = decode_header(parts, TOPIC_REPLY)
    try:
        header = ReprojectionReply.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise WireError(f"invalid reprojection reply: {exc.errors()[0]['msg']}") from None
    return header, decode_array(header, parts[2])


class ModelLink:
    """A DEALER connected to the live process's request endpoint; one request at a time.

    Parameters
    ----------
    endpoint
        The live process's ROUTER endpoint, e.g. ``tcp://127.0.0.1:5557``.
    timeout_s
        Longest wait for a reply, seconds; a late reply is discarded on the next request.
    """

    def __init__(self, endpoint: str, timeout_s: float = 0.5) -> None:
        import zmq

        self.endpoint = endpoint
        self.timeout_s = float(timeout_s)
        self._context = zmq.Context.instance()
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.connect(endpoint)

    def reprojection(self, angle_deg: float, time_s: float | None = None) -> np.ndarray | None:
        """The model's reprojection at ``angle_deg`` (float32, (ny, nx)), or None (no answer in time, no model)."""
        import zmq

        while self._socket.poll(0):  # replies to requests that timed out earlier
            self._socket.recv_multipart()
        request = ReprojectionRequest(request_id=uuid.uuid4().hex, angle_deg=float(angle_deg), time_s=time_s)
        self._socket.send_multipart(encode_request(request))
        deadline_ms = int(self.timeout_s * 1000)
        while self._socket.poll(deadline_ms, zmq.POLLIN):
            try:
                header, image = decode_reply(self._socket.recv_multipart())
            except WireError as exc:
                log.warning("model link %s: %s", self.endpoint, exc)
                return None
            if header.request_id == request.request_id:
                return image.copy() if image.ndim == 2 and image.size else None
            deadline_ms = 0  # a stale reply; take only what is already there
        return None

    def close(self) -> None:
        """Close the socket (pending requests are dropped)."""
        self._socket.close(linger=0)
