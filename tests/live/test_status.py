"""The status-stream codec: round trips and every malformed case raise WireError (pure, no sockets)."""

from __future__ import annotations

import numpy as np
import pytest

from tiltstream.wire import WireError
from tiltstream.live.status import (HistoryHeader, Orthoslices, Reprojection, StatusHeader, decode_status_message,
                         decode_volume_request, encode_message, encode_volume_request, make_orthoslices,
                         make_reprojection)


def _wire(parts):
    return [bytes(p) for p in parts]


def test_round_trips():
    """Every message kind decodes to what was encoded; orthoslices are the central slices of the volume."""
    rng = np.random.default_rng(0)
    volume = rng.random((6, 5, 4), dtype=np.float32)
    slices = decode_status_message(_wire(encode_message(make_orthoslices("s", volume, 12.5, 7, request_id=3))))
    assert isinstance(slices, Orthoslices)
    np.testing.assert_array_equal(slices.xy, volume[3])
    np.testing.assert_array_equal(slices.xz, volume[:, 2, :])
    np.testing.assert_array_equal(slices.yz, volume[:, :, 2])
    assert slices.header.time_s == 12.5 and slices.header.request_id == 3

    measured = rng.random((5, 4), dtype=np.float32)
    rep = decode_status_message(_wire(encode_message(make_reprojection("s", 9, -31.5, 4.0, 100, measured, measured * 0.5))))
    assert isinstance(rep, Reprojection)
    np.testing.assert_array_equal(rep.residual, measured - measured * np.float32(0.5))
    assert rep.header.frame_index == 9 and rep.header.angle_deg == -31.5
    assert rep.header.error_percent == pytest.approx(50.0, rel=1e-6)

    status = StatusHeader(session="s", frames_seen=3, frames_in_model=2, step=10, loss=0.5, steps_per_s=4.0,
                          lag_frames=1, lag_s=0.2)
    assert decode_status_message(_wire(encode_message(status))) == status
    history = HistoryHeader(session="s", frame_index=[0, 1], time_s=[0.0, 2.0], angle_deg=[-70.0, 16.5],
                            dose_e_per_A2=[40.0, 40.0], temperature_C=[None, 21.0], loss_step=[1], loss=[0.3])
    assert decode_status_message(_wire(encode_message(history))) == history
    assert decode_volume_request(encode_volume_request(4, 8.0)).time_s == 8.0


@pytest.mark.parametrize("parts, reason", [
    ([b"bogus", b"{}", b""], "unknown status topic"),
    ([b"status", b"{not json", b""], "not UTF-8 JSON"),
    ([b"status", b"[1, 2]", b""], "JSON object"),
    ([b"status", b'{"session": "s"}', b""], "invalid StatusHeader"),
    ([b"only"], "3 parts"),
])
def test_malformed_headers_raise(parts, reason):
    with pytest.raises(WireError, match=reason):
        decode_status_message(parts)


def test_wrong_buffer_size_and_nan_raise():
    """A truncated buffer and a NaN reprojection are rejected with a reason."""
    frame = np.ones((4, 4), np.float32)
    topic, header, buffer = _wire(encode_message(make_reprojection("s", 1, 0.0, 0.0, 0, frame, frame)))
    with pytest.raises(WireError, match="buffer has 124 bytes"):
        decode_status_message([topic, header, buffer[:-4]])
    with pytest.raises(WireError, match="NaN"):
        decode_status_message([topic, header, np.full((2, 4, 4), np.nan, np.float32).tobytes()])
    with pytest.raises(WireError, match="invalid ReprojectionHeader"):
        decode_status_message([topic, header.replace(b'"float32"', b'"uint8"'), buffer])
