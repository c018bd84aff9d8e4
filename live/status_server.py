"""The live process's two endpoints: the status stream (PUB) and the request endpoint (ROUTER).

The PUB socket sends every status-stream message (:mod:`tiltstream.live.status`): each is built once as a typed
message, encoded once, and handed as that same object to an optional in-process listener (the snapshot
renderer), so nothing is decoded in the process that encoded it. Two threads publish (the training loop
and the reprojection service, :mod:`tiltstream.live.reprojection_service`), one at a time under a lock.

The ROUTER socket, used by the reprojection service's thread only, answers two kinds of request, by topic,
from the :class:`tiltstream.live.query_replica.QueryReplica` (the weights of the last training chunk):

- ``volume-request`` (:class:`tiltstream.live.status.VolumeRequest`, from the viewer): one ``orthoslices`` reply
  with the volume at the requested time;
- ``reproject?`` (:class:`tiltstream.acquire.model_link.ReprojectionRequest`, from ``tiltstream acquire --track
  model``): one ``reprojected`` reply with the reconstruction's predicted frame at the requested angle
  and time (the latest frame time when the request gives none), the step of its weights and the model's
  recent prediction error.

Before the first chunk a ``reproject?`` request is answered with an empty image and the reason, a volume
request not at all (the viewer asks again). A DEALER that sends an empty delimiter frame first (the
viewer) gets its reply with one too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import zmq

from tiltstream.acquire import model_link
from tiltstream.errors import UserError
from tiltstream.wire import WireError
from tiltstream.live.query_replica import QueryReplica
from tiltstream.live.status import StatusMessage, decode_volume_request, encode_message, make_orthoslices

log = logging.getLogger(__name__)


class StatusServer:
    """Binds the status PUB and the request ROUTER; publishes messages and answers requests.

    Parameters
    ----------
    status_endpoint, request_endpoint
        Endpoints to bind (``tcp://127.0.0.1:*`` picks a free port).
    listener
        Called with every published message (typed, not encoded), e.g. the snapshot renderer's ``feed``.

    Raises
    ------
    UserError
        An endpoint cannot be bound.
    """

    def __init__(self, status_endpoint: str, request_endpoint: str,
                 listener: Callable[[StatusMessage], None] | None = None) -> None:
        self.context = zmq.Context()
        self.pub = self.context.socket(zmq.PUB)
        self.pub.linger = 500
        self.router = self.context.socket(zmq.ROUTER)
        self.router.linger = 0
        for sock, endpoint, what in ((self.pub, status_endpoint, "status"),
                                     (self.router, request_endpoint, "volume request")):
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                self.context.destroy(0)
                raise UserError(f"cannot bind the {what} endpoint {endpoint!r}: {exc}") from None
        self.status_endpoint = self.pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.request_endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.listener = listener
        self._publish_lock = threading.Lock()

    def publish(self, message: StatusMessage) -> None:
        """Send one typed message on the status stream (and give it to the listener); from any thread."""
        parts = encode_message(message)
        with self._publish_lock:
            self.pub.send_multipart(parts, copy=False)
            if self.listener is not None:
                self.listener(message)

    def wait(self, timeout_s: float) -> bool:
        """Wait at most ``timeout_s`` seconds for a request; whether one is waiting."""
        return bool(self.router.poll(int(timeout_s * 1000), zmq.POLLIN))

    def serve(self, replica: QueryReplica, session: str, error_percent: float | None) -> int:
        """Answer every waiting request from ``replica`` without blocking (``error_percent``: the model's
        recent prediction error, sent with reprojections); malformed ones are logged and skipped.

        Returns
        -------
        int
            Requests answered.
        """
        answered = 0
        while self.router.poll(0, zmq.POLLIN):
            parts = self.router.recv_multipart()
            identity, body = parts[0], parts[1:]
            delimiter = [b""] if body and body[0] == b"" else []
            body = body[len(delimiter):]
            try:
                reply = self._answer(body, replica, session, error_percent)
            except WireError as exc:
                what = "reprojection" if body and body[0] == model_link.TOPIC_REQUEST else "volume"
                log.warning("skipped a malformed %s request: %s", what, exc)
                continue
            if reply is not None:
                self.router.send_multipart([identity, *delimiter, *reply], copy=False)
                answered += 1
        return answered

    @staticmethod
    def _answer(body: list[bytes], replica: QueryReplica, session: str, error_percent: float | None) -> list | None:
        """The reply parts to one request (None for a volume request before the first chunk)."""
        topic = body[0] if body else b""
        if topic == model_link.TOPIC_REQUEST:
            request = model_link.decode_request(body)
            if not replica.ready:
                return model_link.encode_reply(request, session, None, reason="no training chunk done yet")
            image, time_s, step = replica.reproject(request.time_s, request.angle_deg)
            return model_link.encode_reply(request.model_copy(update={"time_s": time_s}), session, image, step=step,
                                           error_percent=error_percent)
        request = decode_volume_request(body)
        if not replica.ready:
            return None
        volume, step = replica.volume(request.time_s)
        return encode_message(make_orthoslices(session, volume, request.time_s, step, request_id=request.request_id))

    def close(self) -> None:
        """Close both sockets (the PUB lingers 0.5 s so the last messages go out)."""
        self.pub.close()
        self.router.close(0)
        self.context.term()
