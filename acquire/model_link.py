"""Asks the live process for its reconstruction's reprojection at one angle (torch-free client and wire codec).

Wire (docs/design.md 6 message shape ``[topic, header, buffer]``), over a ZeroMQ DEALER (this client)
connected to the live process's ROUTER request endpoint:

- request: topic ``b"reproject?"``, header :class:`ReprojectionRequest` (JSON), empty buffer;
- reply: topic ``b"reprojected"``, header :class:`ReprojectionReply` (an
  :class:`tiltstream.wire.ArrayHeader` plus ``request_id``, ``angle_deg``, ``time_s``), buffer the raw
  C-order float32 image (ny, nx) (:func:`tiltstream.wire.encode` / :func:`tiltstream.wire.decode_array`).

The ROUTER sees ``[identity, topic, header, buffer]`` and answers ``[identity, topic, header, buffer]``;
the DEALER adds and strips no delimiter frame. The reply also says how good the model is: the training
``step`` of the weights that answered and ``error_percent``, the model's recent prediction error (the
reprojection error of the newest frames before it trained on them, or of its held-out frames). A live
process with no model yet answers with an empty ``shape`` and a ``reason`` (an older one does not answer
at all); :meth:`ModelLink.answer` then says why there is no image (:class:`ModelAnswer`), and the tracker
falls back to the previous-frame reference.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

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
    step: int | None = pydantic.Field(None, description="training step of the weights that answered")
    error_percent: float | None = pydantic.Field(
        None, description="the model's recent prediction error, percent (None: not measured yet)")
    reason: str | None = pydantic.Field(None, description="why the image is empty (the model is not ready)")


@dataclass(frozen=True)
class ModelAnswer:
    """What the live process answered to one request.

    Attributes
    ----------
    image
        The reprojection, float32 (ny, nx); None when there is none (see ``reason``).
    reason
        Why there is no image: ``"timeout"`` (no answer in time) or the live process's reason (the model
        is not ready); None with an image.
    step
        Training step of the weights that answered (None: not said).
    error_percent
        The model's recent prediction error, percent (None: not measured yet).
    """

    image: np.ndarray | None
    reason: str | None = None
    step: int | None = None
    error_percent: float | None = None


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


def encode_reply(request: ReprojectionRequest, session: str, image: np.ndarray | None, *, step: int | None = None,
                 error_percent: float | None = None, reason: str | None = None) -> list[bytes | memoryview]:
    """The three message parts answering ``request`` with ``image`` (converted to float32, (ny, nx)); None
    answers with an empty image and ``reason`` (the model is not ready)."""
    if image is not None:
        image = np.ascontiguousarray(image, dtype=np.float32)
    header = ReprojectionReply(session=session, dtype="float32", shape=(0, 0) if image is None else image.shape,
                               request_id=request.request_id, angle_deg=request.angle_deg, time_s=request.time_s,
                               step=step, error_percent=error_percent, reason=reason)
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
        return self.answer(angle_deg, time_s).image

    def answer(self, angle_deg: float, time_s: float | None = None) -> ModelAnswer:
        """The live process's answer at ``angle_deg`` (and ``time_s``; None: the latest it knows): the image
        with the model's step and error, or why there is none."""
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
                return ModelAnswer(None, reason=f"malformed reply ({exc})")
            if header.request_id == request.request_id:
                if image.ndim == 2 and image.size:
                    return ModelAnswer(image.copy(), step=header.step, error_percent=header.error_percent)
                return ModelAnswer(None, reason=header.reason or "model not ready", step=header.step)
            deadline_ms = 0  # a stale reply; take only what is already there
        return ModelAnswer(None, reason="timeout")

    def close(self) -> None:
        """Close the socket (pending requests are dropped)."""
        self._socket.close(linger=0)
