"""The frame stream's messages (docs/design.md 6): ``frame`` and its control messages, over :mod:`tiltstream.wire`.

A ``frame`` message is ``[b"frame", header, buffer]`` with a :class:`FrameHeader` (the session record's
fields) and the raw frame; the control messages (``end``, and the resend endpoint's ``resent`` and
``error`` replies and two-part ``resend`` request) have pydantic models and codecs too.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import numpy as np
import pydantic

from tiltstream.acquire.session import FrameRecord, StagePosition, TrackingRecord
from tiltstream.wire import WIRE_VERSION, ArrayHeader, WireError, decode_array, decode_header, known_version

TOPIC_FRAME = b"frame"


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


# -- control messages: end of run and resend (docs/design.md 6); headers only, no array ------------------
TOPIC_END = b"end"
TOPIC_RESEND = b"resend"
TOPIC_RESENT = b"resent"
TOPIC_ERROR = b"error"


class ControlHeader(pydantic.BaseModel):
    """Base of the control messages' headers: the wire version, and no unknown fields."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    v: int = WIRE_VERSION

    _check_version = pydantic.field_validator("v")(known_version)


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
