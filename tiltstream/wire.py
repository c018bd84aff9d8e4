"""The wire codec every ZeroMQ message of tiltstream uses (docs/design.md 6): a pure codec, no sockets.

A message is three parts ``[topic, header, buffer]``: ``header`` is UTF-8 JSON validated by a pydantic
model; ``buffer`` is the raw C-order array (empty when the message carries no array). Never pickle.
Each producer owns its topics and header models (the frame stream: :mod:`tiltstream.acquire.stream`;
status and reprojections: :mod:`tiltstream.live.status`).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pydantic

WIRE_VERSION = 1
ALLOWED_DTYPES = ("float32", "float64", "uint8", "uint16", "int16", "int32", "uint32")


class WireError(ValueError):
    """A message that does not follow the wire format; the text says which part and why."""


def known_version(value: int) -> int:
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

    _check_version = pydantic.field_validator("v")(known_version)


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
