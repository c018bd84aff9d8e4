"""The live process's reprojection service: a thread that answers requests and publishes new frames'
reprojections while the training loop trains.

:class:`ReprojectionService` owns the request endpoint (ROUTER) of :class:`tiltstream.live.status_server.StatusServer`
and a :class:`tiltstream.live.query_replica.QueryReplica` that the training loop refreshes after every
chunk. It answers ``reproject?`` requests (``tiltstream acquire --track model``) and volume requests (the
viewer) from the replica whatever the training chunk, and publishes the ``reprojection`` of each new frame
on the status stream as soon as the frame arrives, from the latest weights (which have not trained on it
yet: its error is the model's prediction error, reported with every reply as ``error_percent``).

Frames arriving during a chunk: the training thread holds the frame intake except inside
:meth:`ReprojectionService.intake_open` (around each chunk), where this thread polls it; nothing else
changes, so the training (and the deterministic ``--steps-per-frame`` schedule) is the same with and
without the service. Torch ops release the GIL, so a query runs beside a step; both use the process's
thread count (``torch.set_num_threads`` also sets MKL's, for every thread).
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from tiltstream.errors import UserError
from tiltstream.live.intake import FrameIntake, Pending
from tiltstream.live.query_replica import QueryReplica
from tiltstream.live.status import make_reprojection
from tiltstream.live.status_server import StatusServer

log = logging.getLogger(__name__)

POLL_S = 0.01  # longest wait for a request before this thread looks at the frame intake again
ERROR_FRAMES = 3  # the reported error is the median of the newest frames' prediction errors


class ReprojectionService:
    """The thread described in the module docstring (started by :meth:`start`, ended by :meth:`stop`).

    Parameters
    ----------
    server
        The endpoints: this thread answers its requests and publishes on its status stream.
    intake
        The frame intake polled during training chunks.
    session_name
        Returns the session's name (known once the first frame came).
    """

    def __init__(self, server: StatusServer, intake: FrameIntake, session_name: Callable[[], str]) -> None:
        self.server = server
        self.intake = intake
        self.session_name = session_name
        self.replica = QueryReplica()
        self.errors_percent: deque[float] = deque(maxlen=ERROR_FRAMES)
        self.published = 0  # new-frame reprojections published
        self._queue: deque[Pending] = deque()
        self._submitted: set[int] = set()
        self._intake_lock = threading.Lock()
        self._intake_lock.acquire()  # the training thread's, except inside intake_open
        self._known: set[int] = set()
        self._in_model = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reprojection-service", daemon=True)

    # ------------------------------------------------------------------ training thread
    def start(self) -> None:
        self._thread.start()

    def refresh(self, reconstructor) -> None:
        """Copy the reconstruction's latest weights into the replica (after a chunk)."""
        self.replica.refresh(reconstructor)

    def submit(self, pending: Iterable[Pending]) -> None:
        """Queue the reprojection of every frame in ``pending`` not queued before."""
        for item in list(pending):
            if item.header.index not in self._submitted:
                self._submitted.add(item.header.index)
                self._queue.append(item)

    @contextmanager
    def intake_open(self, known: set[int], in_model: int) -> Iterator[None]:
        """Let this thread poll the frame intake while the training thread trains (``known``: the frame
        indices in the reconstruction, ``in_model``: their number)."""
        self._known, self._in_model = known, in_model
        self._intake_lock.release()
        try:
            yield
        finally:
            self._intake_lock.acquire()

    def drain(self, timeout_s: float = 10.0) -> None:
        """Wait (at most ``timeout_s``) until every queued frame's reprojection is published (the run's end)."""
        deadline = time.monotonic() + timeout_s
        while self._queue and self.replica.ready and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(POLL_S)

    def stop(self) -> None:
        """End the thread (before the endpoints close)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    # ------------------------------------------------------------------ this thread
    @property
    def error_percent(self) -> float | None:
        """The model's recent prediction error: the median of the newest frames' reprojection errors, percent."""
        return statistics.median(self.errors_percent) if self.errors_percent else None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.server.wait(POLL_S):
                    self.server.serve(self.replica, self.session_name(), self.error_percent)
                self._poll_intake()
                self._publish_new()
            except UserError as exc:
                log.warning("reprojection service: %s", exc)
            except Exception as exc:  # noqa: BLE001 - the thread outlives one failed query; the loop goes on
                log.error("reprojection service: internal error: %s: %s", type(exc).__name__, exc)

    def _poll_intake(self) -> None:
        """Take the frames that came during a chunk (only while the training thread trains)."""
        if not self._intake_lock.acquire(blocking=False):
            return
        try:
            self.intake.poll(0.0, self._known, self._in_model)
            self.submit(self.intake.pending)
        finally:
            self._intake_lock.release()

    def _publish_new(self) -> None:
        """Publish the reprojection of each queued frame (once the replica holds weights)."""
        while self._queue and self.replica.ready and not self._stop.is_set():
            item = self._queue.popleft()
            h = item.header
            image, _, step = self.replica.reproject(h.time_s, h.angle_deg)
            message = make_reprojection(self.session_name(), h.index, h.angle_deg, h.time_s, step, item.frame, image)
            self.server.publish(message)
            self.errors_percent.append(message.header.error_percent)
            self.published += 1
