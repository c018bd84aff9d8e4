"""``tiltstream replay``: stream a recorded session with its original timing, through the frame publisher.

Frame ``i`` goes out through :class:`tiltstream.acquire.publisher.FramePublisher` at
``(time_s[i] - time_s[0]) / speed`` seconds after the start, from a staging copy of the session so
the resend endpoint never hands out a frame before its time. The start waits for a subscriber unless
``wait`` is off. Light at import (the CLI imports it); zmq is imported when a replay runs.
How it fits: docs/architecture.md, "A frame's path".
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydantic

from tiltstream.command import register_command
from tiltstream.errors import UserError

log = logging.getLogger(__name__)


class ReplaySettings(pydantic.BaseModel):
    """``tiltstream replay`` (config/replay.toml)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    session: Path | None = pydantic.Field(default=None, description="recorded session directory to stream")
    publish: str = pydantic.Field(default="tcp://127.0.0.1:5555",
                                  description="frame stream endpoint to bind (PUB)")
    resend: str | None = pydantic.Field(default="tcp://127.0.0.1:5558",
                                        description="resend endpoint to bind (ROUTER); empty for none")
    speed: float = pydantic.Field(default=1.0, gt=0, description="time compression: 10 plays 10x faster")
    wait: bool = pydantic.Field(default=True, description="wait for the first subscriber before starting")
    wait_timeout_s: float | None = pydantic.Field(
        default=None, gt=0, description="give up waiting for a subscriber after this long, seconds")
    linger_s: float = pydantic.Field(
        default=1.0, ge=0, description="keep the resend endpoint up after the last frame, seconds")


def replay_session(session_dir: Path | str, publish: str, *, resend: str | None = None, speed: float = 1.0,
                   wait: bool = True, wait_timeout_s: float | None = None, linger_s: float = 0.0,
                   on_start: Callable[[str, str | None], None] | None = None,
                   on_publish: Callable[[int, float], None] | None = None) -> int:
    """Stream a recorded session; returns the number of frames published.

    Parameters
    ----------
    session_dir
        The recorded session (docs/design.md 5).
    publish, resend
        Endpoints to bind (PUB, and ROUTER for resend; None for no resend endpoint).
    speed
        Time compression factor (> 0): frame ``i`` goes out ``(time_s[i] - time_s[0]) / speed`` s after start.
    wait, wait_timeout_s
        Wait for the first subscriber (at most ``wait_timeout_s`` seconds; None: forever).
    linger_s
        Seconds to keep the endpoints up after the last frame (late resend requests).
    on_start
        Called with the bound PUB and resend endpoints once they are bound (before waiting).
    on_publish
        Called after each frame is sent with ``(index, t)``, ``t`` the ``time.monotonic()`` just before
        the frame became available (staging copy, then the stream).

    Raises
    ------
    UserError
        Not a session, no frames, a bad speed, or no subscriber within ``wait_timeout_s``.
    """
    import tempfile

    from tiltstream.progress import ProgressLine
    from tiltstream.acquire.publisher import FramePublisher
    from tiltstream.acquire.session import SessionWriter, read_session

    if not speed > 0:
        raise UserError(f"speed {speed} is not allowed; it must be > 0 (10 plays ten times faster)")
    session = read_session(session_dir)
    if not session.records:
        raise UserError(f"session {str(session_dir)!r} has no frames to replay")
    records = sorted(session.records, key=lambda r: r.index)
    with tempfile.TemporaryDirectory(prefix="tiltstream-replay-") as staging_root:
        staging = SessionWriter.create(Path(staging_root) / session.path.name,
                                       session.settings.model_copy(update={"scheme": {
                                           **session.settings.scheme, "start_index": records[0].index}}))
        publisher = FramePublisher(publish, staging.path, resend_endpoint=resend)
        sent = 0
        progress = ProgressLine()
        try:
            if on_start is not None:
                on_start(publisher.endpoint, publisher.resend_endpoint)
            log.info("replaying %d frames of %s on %s at %gx", len(records), session.path, publisher.endpoint,
                     speed)
            if wait:
                if not publisher.wait_for_subscriber(wait_timeout_s):
                    raise UserError(f"no subscriber connected to {publisher.endpoint} within {wait_timeout_s} s "
                                    "(use --no-wait to stream regardless)")
            start = time.monotonic()
            time0 = records[0].time_s
            for record in records:
                delay = start + (record.time_s - time0) / speed - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                frame = np.ascontiguousarray(session.load_frame(record))
                fields = record.model_dump(exclude={"file", "shape", "dtype"})
                released = time.monotonic()
                publisher.publish(staging.append(frame, **fields), frame)
                sent += 1
                if on_publish is not None:
                    on_publish(record.index, released)
                progress.update(f"replay: {sent}/{len(records)} frames, t = {record.time_s:.1f} s",
                                final=sent == len(records))
            time.sleep(linger_s)
        finally:
            progress.end()
            publisher.close(send_end=sent == len(records))
    return sent


def _run(settings: ReplaySettings, args: argparse.Namespace) -> int:
    if settings.session is None:
        raise UserError("no session to replay: give --session DIR")
    replay_session(settings.session, settings.publish, resend=settings.resend or None, speed=settings.speed,
                   wait=settings.wait, wait_timeout_s=settings.wait_timeout_s, linger_s=settings.linger_s)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``tiltstream replay``."""
    register_command(
        subparsers, "replay", settings=ReplaySettings, run=_run, config_name="replay",
        help="stream a recorded session over ZeroMQ with its original timing (scaled by --speed)",
        description="Publish a recorded session's frames through the frame publisher (PUB + resend "
        "endpoint), each at its recorded time divided by --speed, starting when the first subscriber "
        "connects (unless --no-wait).")
