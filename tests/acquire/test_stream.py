"""The frame-stream codec (tiltstream.acquire.stream): round trips and every malformed message raising WireError."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiltstream.acquire.session import FrameRecord, StagePosition
from tiltstream.acquire.stream import TOPIC_FRAME, FrameHeader, decode_frame
from tiltstream.live.status import TOPIC_STATUS
from tiltstream.wire import ArrayHeader, WireError, decode_header, encode


def _record(index: int = 3, shape=(4, 5), dtype="float32") -> FrameRecord:
    return FrameRecord(index=index, file=f"frames/{index:06d}.tif", target_deg=-12.5, angle_deg=-12.4999,
                       time_s=31.25, exposure_s=1.5, dose_e_per_A2=30.9, temperature_C=220.5,
                       stage=StagePosition(x=1e-6, y=-2e-6, z=3e-7), shape=shape, dtype=dtype)


def _parts(array: np.ndarray, header: FrameHeader) -> list[bytes]:
    return [bytes(part) for part in encode(TOPIC_FRAME, header, array)]


@pytest.mark.parametrize("dtype", ["float32", "float64", "uint8", "uint16", "int16", "int32", "uint32"])
def test_round_trip_every_dtype(dtype: str) -> None:
    rng = np.random.default_rng(0)
    array = (rng.random((4, 5)) * 100).astype(dtype)
    header = FrameHeader.from_record(_record(dtype=dtype), session="S1")
    got_header, got = decode_frame(_parts(array, header))
    assert got_header == header
    assert got.dtype == array.dtype and np.array_equal(got, array)
    assert got_header.stage.y == -2e-6 and got_header.temperature_C == 220.5


@settings(max_examples=30, deadline=None)
@given(ny=st.integers(1, 9), nx=st.integers(1, 9), index=st.integers(0, 10**6),
       angle=st.floats(-80, 80, allow_nan=False))
def test_round_trip_property(ny: int, nx: int, index: int, angle: float) -> None:
    array = np.arange(ny * nx, dtype=np.float32).reshape(ny, nx)
    header = FrameHeader(session="s", index=index, target_deg=angle, angle_deg=angle, time_s=0.0,
                         dtype="float32", shape=(ny, nx))
    got_header, got = decode_frame(_parts(array, header))
    assert got_header.angle_deg == angle and np.array_equal(got, array)


def _good() -> list[bytes]:
    array = np.ones((4, 5), np.float32)
    return _parts(array, FrameHeader.from_record(_record(), session="S1"))


def _with_header(**changes) -> list[bytes]:
    parts = _good()
    raw = json.loads(parts[1])
    raw.update(changes)
    return [parts[0], json.dumps(raw).encode(), parts[2]]


MALFORMED = {
    "two parts": lambda: _good()[:2],
    "four parts": lambda: _good() + [b""],
    "wrong topic": lambda: [TOPIC_STATUS] + _good()[1:],
    "header not utf-8": lambda: [TOPIC_FRAME, b"\xff\xfe", _good()[2]],
    "header not json": lambda: [TOPIC_FRAME, b"{not json", _good()[2]],
    "header a list": lambda: [TOPIC_FRAME, b"[1, 2]", _good()[2]],
    "missing index": lambda: [TOPIC_FRAME, json.dumps({k: v for k, v in json.loads(_good()[1]).items()
                                                        if k != "index"}).encode(), _good()[2]],
    "negative index": lambda: _with_header(index=-1),
    "unknown field": lambda: _with_header(extra_field=1),
    "bad dtype": lambda: _with_header(dtype="object"),
    "complex dtype": lambda: _with_header(dtype="complex64"),
    "wrong version": lambda: _with_header(v=2),
    "3-D shape": lambda: _with_header(shape=[1, 4, 5]),
    "angle not a number": lambda: _with_header(angle_deg="up"),
    "short buffer": lambda: _good()[:2] + [_good()[2][:-1]],
    "long buffer": lambda: _good()[:2] + [_good()[2] + b"\0" * 4],
    "shape mismatch": lambda: _with_header(shape=[5, 5]),
    "nan data": lambda: _good()[:2] + [np.full((4, 5), np.nan, np.float32).tobytes()],
    "inf data": lambda: _good()[:2] + [np.full((4, 5), np.inf, np.float32).tobytes()],
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_raises_wire_error(case: str) -> None:
    with pytest.raises(WireError):
        decode_frame(MALFORMED[case]())


def test_encode_refuses_array_that_does_not_match_header() -> None:
    header = FrameHeader.from_record(_record(), session="S1")
    with pytest.raises(WireError, match="does not match"):
        encode(TOPIC_FRAME, header, np.ones((4, 5), np.float64))


def test_status_message_without_array() -> None:
    header = ArrayHeader(session="s", dtype="float32", shape=(0,))
    topic, raw = decode_header([bytes(p) for p in encode(TOPIC_STATUS, header)], TOPIC_STATUS)
    assert topic == TOPIC_STATUS and raw["session"] == "s"
