"""Catch-up from a growing session directory reads frames.jsonl on from where it stopped, torn lines included."""

from __future__ import annotations

import numpy as np
import pytest

from tiltstream.acquire.session import RECORDS_FILE, SessionSettings, SessionWriter
from tiltstream.acquire.subscriber import FrameSubscriber


def _append(writer: SessionWriter, index: int) -> None:
    writer.append(np.full((4, 5), index, np.float32), index=index, target_deg=float(index),
                  angle_deg=float(index), time_s=2.0 * index, exposure_s=0.1, dose_e_per_A2=1.0)


@pytest.mark.timeout(30)
def test_catch_up_parses_only_new_records(tmp_path):
    """3 frames, then 2 more and a torn half-line: each pass delivers only the new frames, in order and once;
    the parsed offset is the file's intact length (the torn line is read again once completed)."""
    session = tmp_path / "session"
    writer = SessionWriter.create(session, SessionSettings())
    for index in range(3):
        _append(writer, index)
    with FrameSubscriber("tcp://127.0.0.1:1", session_dir=session, poll_s=0.01, catchup_interval_s=0.0) as sub:
        assert [h.index for h, _ in sub.frames(timeout_s=0.2)] == [0, 1, 2]
        records = session / RECORDS_FILE
        assert sub._records_offset == records.stat().st_size
        for index in (3, 4):
            _append(writer, index)
        intact = records.stat().st_size
        with open(records, "a") as handle:
            handle.write('{"index": 5, "fi')  # an append caught half-way
        delivered = list(sub.frames(timeout_s=0.2))
        assert [h.index for h, _ in delivered] == [3, 4]
        assert float(delivered[1][1][0, 0]) == 4.0 and delivered[1][0].time_s == 8.0
        assert sub._records_offset == intact
