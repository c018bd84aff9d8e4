"""Skipped stream messages are said at most once a minute, and a torn last session record once per process."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tiltstream.acquire.session import RECORDS_FILE, SessionSettings, SessionWriter, read_session
from tiltstream.acquire.subscriber import SkippedMessages


def test_a_flood_of_foreign_messages_is_one_line_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    skipped = SkippedMessages(every_s=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="tiltstream.acquire.subscriber"):
        for k in range(16 * 150):  # 16 a second for 150 s
            now[0] = k / 16
            skipped.skip(f"frame {k} of session 'other' (subscribed to 'mine')")
        skipped.report()
    lines = [r.getMessage() for r in caplog.records]
    assert skipped.total == 2400
    assert len(lines) == 4  # at 0 s, 60 s, 120 s, and the rest at the end
    assert lines[0] == "skipped frame 0 of session 'other' (subscribed to 'mine')"
    assert lines[1] == ("skipped 960 messages in the last 60 s (961 since the start): 960 x frame 960 of "
                        "session 'other' (subscribed to 'mine')")  # one kind: the frame numbers folded
    assert lines[3].startswith("skipped 479 messages") and "(2400 since the start): 479 x frame 2399" in lines[3]


def test_a_torn_last_record_is_noted_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    writer = SessionWriter.create(tmp_path / "s", SessionSettings())
    with open(writer.path / RECORDS_FILE, "a") as handle:
        handle.write('{"index": 0, "fi')  # a crash mid-append
    with caplog.at_level(logging.WARNING, logger="tiltstream.acquire.session"):
        for _ in range(3):
            assert read_session(writer.path).records == ()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "the last record is incomplete" in lines[0] and "0 complete records" in lines[0]
