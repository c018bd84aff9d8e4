"""The frame-stream wire format (DESIGN.md 6): a pure codec, no sockets (the publisher lives in acquire/publisher.py).

A message is three parts ``[topic, header, buffer]``: ``topic`` is ``b"frame"``, ``b"status"`` or
``b"reprojection"`` (and others a producer documents); ``header`` is UTF-8 JSON validated by a pydantic
model; ``buffer`` is the raw C-order array (empty when the message carries no array). Never pickle.
The control messages of the frame stream (``end``, and the resend endpoint's ``resent`` and ``error``
replies and two-part ``resend`` request) have pydantic models and codecs too, at the end of this module.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import numpy as np
import pydantic

from acquire.session import FrameRecord, StagePosition, TrackingRecord

WIRE_VERSION = 1
TOPIC_FRAME = b"frame"
TOPIC_STATUS = b"status"
TOPIC_REPROJECTION = b"reprojection"
ALLOWED_DTYPES = ("float32", "float64", "uint8", "uint16", "int16", "int32", "uint32")


class WireError(ValueError):
    """A message that does not follow the wire format; the text says which part and why."""


def _known_version(value: int) -> int:
    """The validator of every header's ``v``: only this wire version is understood."""
    if value != WIRE_VERSION:
        raise ValueError(f"wire version must be {WIRE_VERSION}")
    return value


class ArrayHeader(pydantic.BaseModel):
    """Header fields every message with an array buffer carries."""

    model_config = pydantic.ConfigDict(extra="allow", frozen=True)
    v: int = WIRE_VERSION
    session: str = pydantic.Field(description="session name (the session directory's name)")
    dtype: str
    shape: tuple[int, ...]

    @pydantic.field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        if value not in ALLOWED_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(ALLOWED_DTYPES)}")
        return value

    _check_version = pydantic.field_validator("v")(_known_version)


class FrameHeader(ArrayHeader):
    """Header of a ``frame`` message: the session record's fields plus ``v`` and ``session``."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    index: int = pydantic.Field(ge=0)
    target_deg: float
    angle_deg: float
    time_s: float
    exposure_s: float = 0.0
    dose_e_per_A2: float = 0.0
    temperature_C: float | None = None
    stage: StagePosition = pydantic.Field(default_factory=StagePosition)
    file: str = ""
    shape: tuple[int, int]
    tracking: TrackingRecord | None = None

    @classmethod
    def from_record(cls, record: FrameRecord, session: str) -> FrameHeader:
        """The header announcing a recorded frame."""
        return cls(session=session, **record.model_dump())


def encode(topic: bytes, header: pydantic.BaseModel, array: np.ndarray | None = None) -> list[bytes | memoryview]:
    """Encode a message. ``array`` must match ``header.dtype``/``header.shape`` when given."""
    if array is None:
        return [topic, header.model_dump_json().encode("utf-8"), b""]
    array = np.ascontiguousarray(array)
    dtype = getattr(header, "dtype", None)
    shape = getattr(header, "shape", None)
    if dtype != array.dtype.name or tuple(shape or ()) != array.shape:
        raise WireError(f"array {array.dtype.name}{array.shape} does not match its header {dtype}{shape}")
    return [topic, header.model_dump_json().encode("utf-8"), memoryview(array).cast("B")]


def decode_header(parts: list[bytes], expected_topic: bytes | None = None) -> tuple[bytes, dict[str, Any]]:
    """Split a message and parse its JSON header (not yet validated against a model)."""
    if len(parts) != 3:
        raise WireError(f"a message has 3 parts (topic, header, buffer); got {len(parts)}")
    topic = bytes(parts[0])
    if expected_topic is not None and topic != expected_topic:
        raise WireError(f"unexpected topic {topic!r}; expected {expected_topic!r}")
    try:
        header = json.loads(bytes(parts[1]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"header is not UTF-8 JSON: {exc}") from None
    if not isinstance(header, dict):
        raise WireError("header must be a JSON object")
    return topic, header


def decode_array(header: ArrayHeader, buffer: bytes | memoryview) -> np.ndarray:
    """The array of a message, checked against its header's dtype and shape (a read-only view)."""
    dtype = np.dtype(header.dtype)
    expected = int(np.prod(header.shape, dtype=np.int64)) * dtype.itemsize
    if len(buffer) != expected:
        raise WireError(f"buffer has {len(buffer)} bytes; header {header.dtype}{tuple(header.shape)} "
                        f"needs {expected}")
    return np.frombuffer(buffer, dtype=dtype).reshape(header.shape)


def decode_frame(parts: list[bytes]) -> tuple[FrameHeader, np.ndarray]:
    """Decode a ``frame`` message into its validated header and array.

    Raises
    ------
    WireError
        Wrong topic, bad JSON, a header that fails validation, a wrong buffer size, or non-finite data.
    """
    _, raw = decode_header(parts, TOPIC_FRAME)
    try:
        header = FrameHeader.model_validate(raw)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        raise WireError(f"invalid frame header field {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    array = decode_array(header, parts[2])
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise WireError(f"frame {header.index} contains NaN or infinite values")
    return header, array


# -- control messages: end of run and resend (DESIGN.md 6); headers only, no array ------------------
TOPIC_END = b"end"
TOPIC_RESEND = b"resend"
TOPIC_RESENT = b"resent"
TOPIC_ERROR = b"error"


class ControlHeader(pydantic.BaseModel):
    """Base of the control messages' headers: the wire version, and no unknown fields."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    v: int = WIRE_VERSION

    _check_version = pydantic.field_validator("v")(_known_version)


class EndOfRun(ControlHeader):
    """``[b"end", header, b""]`` on the frame stream: the run is over; a resumed session continues at ``next_index``."""

    session: str = pydantic.Field(description="session name (the session directory's name)")
    next_index: int = pydantic.Field(ge=0, description="the frame index after the last one published")


class ResendRequest(ControlHeader):
    """``[b"resend", header]`` from a DEALER: send the recorded frames ``start <= index < stop``."""

    req: int | None = pydantic.Field(default=None, description="request id, echoed in the reply's marker")
    start: int = pydantic.Field(description="first frame index wanted")
    stop: int | None = pydantic.Field(default=None, description="index after the last one wanted (None: all)")

    @pydantic.field_validator("start")
    @classmethod
    def _not_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"resend start must be >= 0; got {value}")
        return value


class Resent(ControlHeader):
    """``[b"resent", header, b""]``: frames ``start..until-1`` that were recorded have been sent."""

    req: int | None = pydantic.Field(default=None, description="the request's id")
    session: str = pydantic.Field(description="session name")
    start: int = pydantic.Field(ge=0, description="the request's first index")
    until: int = pydantic.Field(ge=0, description="ask again from here while it is below next_index")
    next_index: int = pydantic.Field(ge=0, description="the index the session continues with")


class ErrorReply(ControlHeader):
    """``[b"error", header, b""]``: a request that could not be answered, and why."""

    error: str = pydantic.Field(description="what was wrong with the request")


ControlMessage = TypeVar("ControlMessage", bound=ControlHeader)


def _validated(model: type[ControlMessage], raw: Any, what: str) -> ControlMessage:
    try:
        return model.model_validate(raw)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        message = err["msg"].removeprefix("Value error, ")
        raise WireError(f"invalid {what} field {'.'.join(map(str, err['loc'])) or 'header'}: {message}") from None


def decode_control(parts: list[bytes], topic: bytes, model: type[ControlMessage]) -> ControlMessage:
    """Decode an ``end``, ``resent`` or ``error`` message (three parts, empty buffer) into its model.

    Raises
    ------
    WireError
        Wrong part count or topic, bad JSON, a header that fails validation, or a non-empty buffer.
    """
    _, raw = decode_header(parts, topic)
    if len(parts[2]):
        raise WireError(f"a {topic.decode(errors='replace')} message carries no buffer; got {len(parts[2])} bytes")
    return _validated(model, raw, f"{topic.decode(errors='replace')} header")


def encode_resend_request(request: ResendRequest) -> list[bytes]:
    """The two-part request a DEALER sends to the resend endpoint."""
    return [TOPIC_RESEND, request.model_dump_json().encode("utf-8")]


def decode_resend_request(parts: list[bytes]) -> ResendRequest:
    """Decode a resend request (``[b"resend", header]``, as the ROUTER hands it on without the identity).

    Raises
    ------
    WireError
        Not two parts, another topic, bad JSON, or a header that fails validation (e.g. ``start < 0``).
    """
    if len(parts) != 2 or bytes(parts[0]) != TOPIC_RESEND:
        raise WireError(f"a resend request is [b'resend', header]; got {len(parts)} parts")
    try:
        raw = json.loads(bytes(parts[1]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"resend request header is not UTF-8 JSON: {exc}") from None
    return _validated(ResendRequest, raw, "resend request")
