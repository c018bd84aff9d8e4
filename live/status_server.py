"""The live process's two endpoints: the status stream (PUB) and the request endpoint (ROUTER).

The PUB socket sends every status-stream message (:mod:`tiltstream.live.status`): each is built once as a typed
message, encoded once, and handed as that same object to an optional in-process listener (the snapshot
renderer), so nothing is decoded in the process that encoded it.

The ROUTER socket answers two kinds of request, by topic:

- ``volume-request`` (:class:`tiltstream.live.status.VolumeRequest`, from the viewer): one ``orthoslices`` reply
  with the volume at the requested time;
- ``reproject?`` (:class:`tiltstream.acquire.model_link.ReprojectionRequest`, from ``tiltstream acquire --track
  model``): one ``reprojected`` reply with the reconstruction's predicted frame at the requested angle
  and time (the latest frame time when the request gives none).

A request that arrives before the reconstruction holds a frame gets no reply (the client times out).
A DEALER that sends an empty delimiter frame first (the viewer) gets its reply with one too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import zmq

from tiltstream.acquire import model_link
from tiltstream.errors import UserError
from tiltstream.wire import WireError
from tiltstream.live.status import StatusMessage, decode_volume_request, encode_message, make_orthoslices
from tiltstream.recon.reconstructor import Reconstructor

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

    def publish(self, message: StatusMessage) -> None:
        """Send one typed message on the status stream (and give it to the listener)."""
        self.pub.send_multipart(encode_message(message), copy=False)
        if self.listener is not None:
            self.listener(message)

    def serve(self, reconstructor: Reconstructor | None, session: str) -> int:
        """Answer every waiting request without blocking; malformed ones are logged and skipped.

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
                reply = self._answer(body, reconstructor, session)
            except WireError as exc:
                what = "reprojection" if body and body[0] == model_link.TOPIC_REQUEST else "volume"
                log.warning("skipped a malformed %s request: %s", what, exc)
                continue
            if reply is not None:
                self.router.send_multipart([identity, *delimiter, *reply], copy=False)
                answered += 1
        return answered

    @staticmethod
    def _answer(body: list[bytes], reconstructor: Reconstructor | None, session: str) -> list | None:
        """The reply parts to one request (None when there is no model to answer from yet)."""
        topic = body[0] if body else b""
        if topic == model_link.TOPIC_REQUEST:
            request = model_link.decode_request(body)
            if reconstructor is None or reconstructor.n_frames == 0:
                return None
            time_s = request.time_s
            if time_s is None:
                time_s = max(r["time_s"] for r in reconstructor.frame_records)
            image = reconstructor.reproject(time_s, request.angle_deg)
            return model_link.encode_reply(request.model_copy(update={"time_s": time_s}), session, image)
        request = decode_volume_request(body)
        if reconstructor is None or reconstructor.n_frames == 0:
            return None
        return encode_message(make_orthoslices(session, reconstructor.volume(request.time_s), request.time_s,
                                               reconstructor.steps_done, request_id=request.request_id))

    def close(self) -> None:
        """Close both sockets (the PUB lingers 0.5 s so the last messages go out)."""
        self.pub.close()
        self.router.close(0)
        self.context.term()
