"""Receives a session's frames exactly once and in index order, however late it starts or whatever it drops.

:class:`FrameSubscriber` listens to a :class:`tiltstream.acquire.publisher.FramePublisher` and fills everything it
did not receive live from a catch-up source: the session directory (same machine) or the publisher's
resend endpoint (another machine). Out-of-order frames wait in a buffer until the gap before them is
filled; duplicates are dropped; malformed messages are logged and skipped.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import zmq

from tiltstream.acquire.publisher import CurveClientKeys, apply_client_keys
from tiltstream.acquire.session import RECORDS_FILE, FrameRecord, Session, _parse_records, read_session
from tiltstream.acquire.stream import (TOPIC_END, TOPIC_ERROR, TOPIC_FRAME, TOPIC_RESENT, EndOfRun, ErrorReply,
                                       FrameHeader, ResendRequest, Resent, decode_control, decode_frame,
                                       encode_resend_request)
from tiltstream.wire import WireError

log = logging.getLogger(__name__)

Frame = tuple[FrameHeader, np.ndarray]


class SkippedMessages:
    """Messages a subscriber skipped (malformed, or another session's), said at most once a minute.

    The first skip is logged at once; later ones are counted by kind (the reason with its numbers
    folded) and summarised when a minute has passed since the last report, and at :meth:`report` (the
    subscriber's close), so a foreign publisher on the port costs one line a minute, not one per message.
    """

    KINDS_SHOWN = 6  # kinds a summary names, most frequent first

    def __init__(self, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self.clock = clock
        self.total = 0  # skipped since the subscriber started
        self._pending: dict[str, list] = {}  # kind -> [count, an example], since the last report
        self._last_report_s: float | None = None

    def skip(self, what: str) -> None:
        """Count one skipped message (``what``: which, and why); report when due."""
        self.total += 1
        entry = self._pending.setdefault(re.sub(r"\d+", "N", what), [0, what])
        entry[0] += 1
        entry[1] = what
        if self._last_report_s is None or self.clock() - self._last_report_s >= self.every_s:
            self.report()

    def report(self) -> None:
        """Log what was skipped since the last report (nothing when nothing was)."""
        count = sum(n for n, _ in self._pending.values())
        if count == 1:
            log.warning("skipped %s", next(iter(self._pending.values()))[1])
        elif count > 1:
            kinds = sorted(self._pending.values(), key=lambda entry: -entry[0])
            named = "; ".join(f"{n} x {example}" for n, example in kinds[:self.KINDS_SHOWN])
            more = f"; and {len(kinds) - self.KINDS_SHOWN} other kinds" if len(kinds) > self.KINDS_SHOWN else ""
            log.warning("skipped %d messages in the last %.0f s (%d since the start): %s%s", count,
                        self.clock() - (self._last_report_s or 0.0), self.total, named, more)
        self._pending = {}
        self._last_report_s = self.clock()


class FrameSubscriber:
    """Delivers every frame of a session from ``start_index`` on, exactly once and in index order.

    Parameters
    ----------
    endpoint
        The publisher's PUB endpoint, e.g. ``tcp://127.0.0.1:5555``.
    session_dir
        The session directory, when readable from here: catch-up and gap filling read it.
    resend_endpoint
        The publisher's resend endpoint (used when ``session_dir`` is None).
    start_index
        The first frame index wanted.
    curve
        CURVE client keys when the publisher uses CURVE.
    poll_s
        How long one wait for a live message lasts, seconds.
    catchup_interval_s
        How often, while no live frame arrives, the catch-up source is asked for frames, seconds.
    request_timeout_s
        How long one resend request may take before it is given up (and asked again later), seconds.
    """

    def __init__(self, endpoint: str, session_dir: Path | str | None = None,
                 resend_endpoint: str | None = None, start_index: int = 0, *,
                 curve: CurveClientKeys | None = None, poll_s: float = 0.1, catchup_interval_s: float = 0.5,
                 request_timeout_s: float = 5.0) -> None:
        self.session_dir = None if session_dir is None else Path(session_dir)
        self.session: str | None = None if self.session_dir is None else self.session_dir.name
        self.next_index = int(start_index)
        self.end_index: int | None = None
        self.poll_s = poll_s
        self.catchup_interval_s = catchup_interval_s
        self.request_timeout_s = request_timeout_s
        self._buffer: dict[int, Frame] = {}
        self.skipped = SkippedMessages()
        self._session_read: Session | None = None  # the session directory's settings, read once
        self._records_offset = 0  # bytes of frames.jsonl already parsed
        self._unread: list[FrameRecord] = []  # records parsed but not yet delivered (past a gap's end)
        self._last_catchup = float("-inf")
        self._request_id = 0
        self._context = zmq.Context()
        self._sub = self._context.socket(zmq.SUB)
        self._sub.linger = 0
        apply_client_keys(self._sub, curve)
        self._sub.subscribe(TOPIC_FRAME)
        self._sub.subscribe(TOPIC_END)
        self._sub.connect(endpoint)
        self._dealer: zmq.Socket | None = None
        if self.session_dir is None and resend_endpoint is not None:
            self._dealer = self._context.socket(zmq.DEALER)
            self._dealer.linger = 0
            # a DEALER with no connected peer (server down, or a CURVE handshake that failed) blocks
            # on send; give up after the request timeout instead of hanging the consumer
            self._dealer.sndtimeo = int(request_timeout_s * 1000)
            apply_client_keys(self._dealer, curve)
            self._dealer.connect(resend_endpoint)

    # -- public --------------------------------------------------------------------------------
    def frames(self, timeout_s: float | None = None, *, first_batch: bool = False) -> Iterator[Frame]:
        """Yield ``(header, frame)`` in index order, each index once, continuing where the last call stopped.

        Ends when the publisher announced the end of the run and every frame before it was delivered,
        or when no new frame could be delivered for ``timeout_s`` seconds (None: wait forever), or, with
        ``first_batch``, as soon as the frames one pass could deliver were yielded (a caller that waits
        for frames between other work gets them without waiting out ``timeout_s``).
        """
        last_progress = time.monotonic()
        while True:
            if self.end_index is not None and self.next_index >= self.end_index:
                return
            now = time.monotonic()
            # the catch-up clock spans calls, and the live socket is read on every pass: a caller polling
            # with a short timeout (a training loop) must still receive live frames
            if now - self._last_catchup >= self.catchup_interval_s:
                self._catch_up()
                self._last_catchup = time.monotonic()
            if self._sub.poll(int(self.poll_s * 1000)):
                self._receive_live()
                if self._buffer and min(self._buffer) > self.next_index:
                    self._catch_up(stop=min(self._buffer))  # a gap before a buffered frame
            delivered = False
            for frame in self._drain():
                delivered = True
                yield frame
            if delivered:
                if first_batch:
                    return
                last_progress = time.monotonic()
            elif timeout_s is not None and time.monotonic() - last_progress > timeout_s:
                return

    def close(self) -> None:
        """Close the sockets (nothing keeps running); say what was skipped since the last report."""
        self.skipped.report()
        self._sub.close(0)
        if self._dealer is not None:
            self._dealer.close(0)
        self._context.term()

    def __enter__(self) -> FrameSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------------
    def _drain(self) -> Iterator[Frame]:
        while self.next_index in self._buffer:
            frame = self._buffer.pop(self.next_index)
            self.next_index += 1
            yield frame

    def _accept(self, header: FrameHeader, array: np.ndarray) -> None:
        if self.session is None:
            self.session = header.session
        elif header.session != self.session:
            self.skipped.skip(f"frame {header.index} of session {header.session!r} (subscribed to "
                              f"{self.session!r})")
            return
        if header.index >= self.next_index and header.index not in self._buffer:
            self._buffer[header.index] = (header, array)

    def _receive_live(self) -> None:
        while True:
            try:
                parts = self._sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._handle(parts)

    def _handle(self, parts: list[bytes]) -> None:
        try:
            if parts and parts[0] == TOPIC_END:
                end = decode_control(parts, TOPIC_END, EndOfRun)
                if self.session is not None and end.session != self.session:
                    return
                self.end_index = end.next_index
                return
            header, array = decode_frame(parts)
        except (WireError, KeyError, TypeError, ValueError) as exc:
            self.skipped.skip(f"a malformed message: {exc}")
            return
        self._accept(header, array)

    def _catch_up(self, stop: int | None = None) -> None:
        if self.session_dir is not None:
            self._read_session_dir(stop)
        elif self._dealer is not None:
            self._request_resend(stop)

    def _read_session_dir(self, stop: int | None) -> None:
        """Catch up from the session directory; ``frames.jsonl`` is read on from where the last pass stopped."""
        try:
            if self._session_read is None:
                self._session_read = read_session(self.session_dir)  # type: ignore[arg-type]
            with open(self._session_read.path / RECORDS_FILE, "rb") as handle:
                handle.seek(self._records_offset)
                text = handle.read().decode("utf-8", errors="replace")
            records, intact_bytes = _parse_records(text, self._session_read.path / RECORDS_FILE)
        except Exception as exc:  # a session still being created, or unreadable: try again later
            log.warning("catch-up from %s failed: %s", self.session_dir, exc)
            return
        self._records_offset += intact_bytes  # only whole lines: a torn last line is read again next time
        self._unread.extend(records)
        later = []
        for record in self._unread:
            if record.index < self.next_index or record.index in self._buffer:
                continue
            if stop is not None and record.index >= stop:
                later.append(record)
                continue
            header = FrameHeader.from_record(record, self._session_read.path.name)
            self._accept(header, self._session_read.load_frame(record))
        self._unread = later

    def _request_resend(self, stop: int | None) -> None:
        assert self._dealer is not None
        start = self.next_index
        while True:
            self._request_id += 1
            request = ResendRequest(req=self._request_id, start=start, stop=stop)
            try:
                self._dealer.send_multipart(encode_resend_request(request))
            except zmq.Again:
                log.warning("resend endpoint not reachable within %.1f s (no connected peer; wrong CURVE "
                            "keys?); catching up from what arrives", self.request_timeout_s)
                return
            marker = self._await_marker(self._request_id)
            if marker is None:
                return
            until, next_index = marker.until, marker.next_index
            limit = next_index if stop is None else min(stop, next_index)
            if until <= start or until >= limit:
                return
            start = until

    def _await_marker(self, request_id: int) -> Resent | None:
        deadline = time.monotonic() + self.request_timeout_s
        assert self._dealer is not None
        while time.monotonic() < deadline:
            if not self._dealer.poll(int(max(1.0, (deadline - time.monotonic()) * 1000))):
                break
            parts = self._dealer.recv_multipart()
            if parts and parts[0] == TOPIC_ERROR:
                try:
                    refusal = decode_control(parts, TOPIC_ERROR, ErrorReply)
                except WireError as exc:
                    log.warning("skipped a malformed resend reply: %s", exc)
                    continue
                log.warning("resend refused: %s", refusal.error)
                return None
            if parts and parts[0] == TOPIC_RESENT:
                try:
                    marker = decode_control(parts, TOPIC_RESENT, Resent)
                except WireError as exc:
                    log.warning("skipped a malformed resend reply: %s", exc)
                    continue
                if marker.req == request_id:
                    return marker
                continue
            self._handle(parts)
        log.warning("resend request %d timed out after %.1f s", request_id, self.request_timeout_s)
        return None
