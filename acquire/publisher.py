"""Publishes each recorded frame on a ZeroMQ PUB socket and serves missed frames by index (docs/design.md 6).

Live stream (PUB): ``[b"frame", header, buffer]`` per frame once it is durable in the session
directory, ``[b"end", ...]`` at the end of a run; the headers' models are in :mod:`tiltstream.acquire.stream`.
A ROUTER resend endpoint, served by a background thread from the session directory, answers a late or
lossy consumer in batches of at most :data:`MAX_BATCH` frames (the protocol: docs/design.md 6).
Endpoints bind to loopback unless told otherwise; with :class:`CurveServerKeys` both are CURVE servers.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from tiltstream.errors import UserError
from tiltstream.acquire.session import FrameRecord, read_session
from tiltstream.acquire.stream import (TOPIC_END, TOPIC_ERROR, TOPIC_FRAME, TOPIC_RESEND, TOPIC_RESENT, EndOfRun,
                                       ErrorReply, FrameHeader, Resent, decode_resend_request)
from tiltstream.wire import WireError, encode

log = logging.getLogger(__name__)

__all__ = ["TOPIC_END", "TOPIC_ERROR", "TOPIC_RESEND", "TOPIC_RESENT", "MAX_BATCH", "CurveClientKeys",
           "CurveServerKeys", "FramePublisher", "apply_client_keys", "apply_server_keys", "end_message",
           "load_server_keys"]

MAX_BATCH = 64


@dataclass(frozen=True)
class CurveServerKeys:
    """The publisher's CURVE key pair (Z85 bytes, as ``zmq.curve_keypair`` or ``zmq.auth`` give)."""

    public: bytes
    secret: bytes


@dataclass(frozen=True)
class CurveClientKeys:
    """A subscriber's CURVE keys: the server's public key and its own key pair (Z85 bytes)."""

    server_public: bytes
    public: bytes
    secret: bytes


def load_server_keys(secret_file: Path | str) -> CurveServerKeys:
    """Read a key pair from a ``zmq.auth.create_certificates`` secret certificate file."""
    import zmq.auth

    public, secret = zmq.auth.load_certificate(str(secret_file))
    if secret is None:
        raise UserError(f"{secret_file}: no secret key in this certificate (give the .key_secret file)")
    return CurveServerKeys(public=public, secret=secret)


def apply_server_keys(socket: zmq.Socket, keys: CurveServerKeys | None) -> None:
    """Make ``socket`` a CURVE server (before bind) when keys are given."""
    if keys is not None:
        socket.curve_server = True
        socket.curve_publickey = keys.public
        socket.curve_secretkey = keys.secret


def apply_client_keys(socket: zmq.Socket, keys: CurveClientKeys | None) -> None:
    """Make ``socket`` a CURVE client (before connect) when keys are given."""
    if keys is not None:
        socket.curve_serverkey = keys.server_public
        socket.curve_publickey = keys.public
        socket.curve_secretkey = keys.secret


def end_message(session: str, next_index: int) -> list[bytes | memoryview]:
    """The end-of-run message: the session continues (if resumed) at ``next_index``."""
    return encode(TOPIC_END, EndOfRun(session=session, next_index=int(next_index)))


class FramePublisher:
    """PUB-like (XPUB) socket for live frames plus an optional resend ROUTER served from the session directory.

    The frame socket is an XPUB so that :meth:`wait_for_subscriber` can see a consumer's subscription
    arrive; for sending it behaves exactly as a PUB socket.

    Parameters
    ----------
    endpoint
        Where the PUB socket binds, e.g. ``tcp://127.0.0.1:5555`` (``:*`` picks a free port; see
        :attr:`endpoint` for the bound one).
    session_dir
        The session directory the frames are recorded in (resend reads it; its name is the session name).
    resend_endpoint
        Where the resend ROUTER binds (None: no resend endpoint).
    curve
        Server keys for CURVE encryption of both sockets (None: plain TCP, for loopback).
    """

    def __init__(self, endpoint: str, session_dir: Path | str, resend_endpoint: str | None = None,
                 curve: CurveServerKeys | None = None) -> None:
        self.session_dir = Path(session_dir)
        self.session = self.session_dir.name
        self._context = zmq.Context()
        self._pub = self._context.socket(zmq.XPUB)
        self._pub.linger = 1000
        apply_server_keys(self._pub, curve)
        try:
            self._pub.bind(endpoint)
        except zmq.ZMQError as exc:
            self._pub.close(0)
            self._context.term()
            raise UserError(f"cannot bind the frame publisher to {endpoint!r}: {exc}") from None
        self.endpoint: str = self._pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.resend_endpoint: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_index = 0
        if resend_endpoint is not None:
            router = self._context.socket(zmq.ROUTER)
            router.linger = 0
            apply_server_keys(router, curve)
            try:
                router.bind(resend_endpoint)
            except zmq.ZMQError as exc:
                router.close(0)
                self.close(send_end=False)
                raise UserError(f"cannot bind the resend endpoint to {resend_endpoint!r}: {exc}") from None
            self.resend_endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
            self._thread = threading.Thread(target=self._serve, args=(router,), name="frame-resend",
                                            daemon=True)
            self._thread.start()

    def wait_for_subscriber(self, timeout_s: float | None) -> bool:
        """Block until a consumer's subscription reaches this socket; False after ``timeout_s`` seconds.

        Once the subscription message has arrived, frames published are delivered to that consumer
        (the XPUB has applied its filter), so nothing sent afterwards is lost to a slow joiner.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            wait_ms = 200 if deadline is None else int(max(0.0, deadline - time.monotonic()) * 1000)
            if self._pub.poll(wait_ms, zmq.POLLIN):
                if self._pub.recv()[:1] == b"\x01":  # subscribe (0x01) rather than unsubscribe (0x00)
                    return True
            elif deadline is not None and time.monotonic() >= deadline:
                return False

    def publish(self, record: FrameRecord, frame: np.ndarray) -> None:
        """Send a recorded frame (call after :meth:`SessionWriter.append` returned ``record``)."""
        header = FrameHeader.from_record(record, self.session)
        self._pub.send_multipart(encode(TOPIC_FRAME, header, frame), copy=False)
        self._next_index = record.index + 1

    def close(self, send_end: bool = True, next_index: int | None = None) -> None:
        """Send the end message (unless ``send_end`` is False), stop the resend thread, close sockets."""
        if send_end and not self._pub.closed:
            self._pub.send_multipart(end_message(self.session, self._next_index if next_index is None
                                                 else next_index))
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not self._pub.closed:
            self._pub.close()
        self._context.term()

    def __enter__(self) -> FramePublisher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- resend --------------------------------------------------------------------------------
    def _serve(self, router: zmq.Socket) -> None:
        try:
            while not self._stop.is_set():
                if not router.poll(100):
                    continue
                parts = router.recv_multipart()
                identity, body = parts[0], parts[1:]
                try:
                    replies = self._answer(body)
                except WireError as exc:
                    replies = [encode(TOPIC_ERROR, ErrorReply(error=str(exc)))]
                    log.warning("resend: bad request: %s", exc)
                for reply in replies:
                    router.send_multipart([identity, *reply], copy=False)
        finally:
            router.close(0)

    def _answer(self, body: list[bytes]) -> list[list[Any]]:
        request = decode_resend_request(body)
        start, stop = request.start, request.stop
        session = read_session(self.session_dir)
        next_index = session.records[-1].index + 1 if session.records else 0
        replies: list[list[Any]] = []
        until = start
        for record in session.records:
            if record.index < start or (stop is not None and record.index >= stop):
                continue
            if len(replies) >= MAX_BATCH:
                break
            frame = session.load_frame(record)
            replies.append(encode(TOPIC_FRAME, FrameHeader.from_record(record, self.session), frame))
            until = record.index + 1
        if len(replies) < MAX_BATCH:
            until = max(until, next_index if stop is None else min(stop, next_index))
        replies.append(encode(TOPIC_RESENT, Resent(req=request.req, session=self.session, start=start, until=until,
                                                   next_index=next_index)))
        return replies
