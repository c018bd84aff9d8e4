"""Frame intake of the live process: frames from the subscriber into a pending queue, and what the session says.

:class:`FrameIntake` owns the :class:`tiltstream.acquire.subscriber.FrameSubscriber` (live stream plus catch-up
from the session directory or the publisher's resend endpoint), the queue of frames received but not
yet in the reconstruction, and what is known about the session: its name, the frames expected (the
setting, else ``session.json``'s scheme count, else the publisher's end-of-run message), and each frame's
tracking record (:class:`tiltstream.acquire.session.TrackingRecord`: measured shift, applied defocus, lost), kept
by frame index for the status and history messages. A resumed process reads the tracking of the frames
already in its reconstruction from the session's ``frames.jsonl``.

A frame whose tracking measured the specimen's shift is aligned before it is queued (``align_tracked``, on by
default): shifted by minus that shift by the alignment ``recon train --preprocess`` uses with ``align_from =
"recorded"`` (:func:`tiltstream.recon.preprocess.aligned_to_recorded`), so the reconstruction holds the
specimen where it was in the first tracked frame, which is where ``acquire --track model`` expects the
reprojections it asks for. A frame where tracking lost the specimen is queued unshifted.

A live process started before its session exists says so once and then waits quietly (a throttled
status line), subscribing only once ``session.json`` is there: the subscriber would otherwise warn on
every catch-up pass.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tiltstream.errors import UserError
from tiltstream.progress import ProgressLine
from tiltstream.acquire.session import SETTINGS_FILE, SessionSettings, TrackingRecord, read_session
from tiltstream.acquire.stream import FrameHeader
from tiltstream.live.settings import LiveSettings
from tiltstream.recon.preprocess import aligned_to_recorded
from tiltstream.recon.run_dir import session_expected_frames

log = logging.getLogger(__name__)


def describe_tracking(index: int, record: TrackingRecord) -> str:
    """One line on frame ``index``'s tracking: the lost specimen, or the source, shift (px) and defocus (nm)."""
    if record.lost or record.shift_px is None:
        return (f"tracking lost the specimen at frame {index} (correlation peak {record.peak_quality:.2f} "
                "below the threshold)")
    defocus = "" if record.defocus_m is None else f", defocus {record.defocus_m * 1e9:+.0f} nm"
    return (f"tracking ({record.mode}): frame {index} shift ({record.shift_px[0]:+.1f}, "
            f"{record.shift_px[1]:+.1f}) px{defocus}")


@dataclass
class Pending:
    """A frame received but not yet in the reconstruction."""

    header: FrameHeader
    frame: np.ndarray
    received_s: float  # time.monotonic() at receipt


class FrameIntake:
    """Receives frames after ``start_index`` and keeps them in :attr:`pending` (see the module docstring).

    Parameters
    ----------
    settings
        :class:`tiltstream.live.settings.LiveSettings` (``connect``, ``session``, ``resend``, ``expected_frames``).
    start_index
        The first frame index wanted (one past the last frame already in a resumed reconstruction).
    progress
        The process's progress line (the waiting message is shown on it).
    """

    def __init__(self, settings: LiveSettings, start_index: int, progress: ProgressLine) -> None:
        self.settings = settings
        self.start_index = int(start_index)
        self.progress = progress
        self.session_dir = None if settings.session is None else Path(settings.session)
        self.session_name = self.session_dir.name if self.session_dir is not None else "live"
        self.expected: int | None = settings.expected_frames
        self.session_read = False
        self.pending: deque[Pending] = deque()
        self.tracking: dict[int, TrackingRecord] = {}  # frame index -> its tracking record, frames seen
        self.frames_seen = 0
        self.last_frame_wall = time.monotonic()
        self.subscriber = None
        self._waiting_since: float | None = None
        self._resolve_expected()
        self._subscribe()

    # ------------------------------------------------------------------ session
    def _session_exists(self) -> bool:
        return self.session_dir is None or (self.session_dir / SETTINGS_FILE).is_file()

    def _subscribe(self) -> None:
        """Create the subscriber once the session exists (or at once without a session directory)."""
        from tiltstream.acquire.subscriber import FrameSubscriber

        if self.subscriber is not None:
            return
        if not self._session_exists():
            if self._waiting_since is None:
                self._waiting_since = time.monotonic()
                log.warning("session %s does not exist yet (no %s); waiting for the acquisition to create it",
                            self.session_dir, SETTINGS_FILE)
            self.progress.update(f"live: waiting for session {self.session_dir} "
                                 f"({time.monotonic() - self._waiting_since:.0f} s)")
            return
        if self._waiting_since is not None:
            self.progress.end()
            log.info("session %s appeared after %.1f s", self.session_dir, time.monotonic() - self._waiting_since)
        self.subscriber = FrameSubscriber(self.settings.connect, session_dir=self.session_dir,
                                          resend_endpoint=self.settings.resend, start_index=self.start_index,
                                          poll_s=0.01)
        self._read_recorded_tracking()

    def _read_recorded_tracking(self) -> None:
        """The tracking records of the frames before ``start_index`` (already in a resumed reconstruction)."""
        if self.start_index == 0 or self.session_dir is None:
            return
        for record in read_session(self.session_dir).records:
            if record.index < self.start_index and record.tracking is not None:
                self.tracking[record.index] = record.tracking

    def _resolve_expected(self) -> None:
        """Frames expected: the setting, else the session's scheme count once session.json exists."""
        if self.expected is not None or self.session_dir is None or self.session_read:
            return
        path = self.session_dir / SETTINGS_FILE
        if path.is_file():
            try:
                scheme = SessionSettings.model_validate_json(path.read_text()).scheme
            except ValueError as exc:
                raise UserError(f"{path}: not a valid session.json: {exc}") from None
            self.expected = session_expected_frames(scheme)
            self.session_read = True

    # ------------------------------------------------------------------ frames
    def poll(self, timeout_s: float, known: set[int], in_model: int) -> None:
        """Move every frame the subscriber has into :attr:`pending` (waits at most ``timeout_s``, and
        returns as soon as frames came).

        Parameters
        ----------
        timeout_s
            Longest wait for a frame, seconds.
        known
            Indices already in the reconstruction (a frame among them is logged and skipped).
        in_model
            Frames in the reconstruction (to tell how many the run had when the publisher ends it).
        """
        self._subscribe()
        if self.subscriber is None:
            time.sleep(timeout_s)
            return
        for header, frame in self.subscriber.frames(timeout_s=timeout_s, first_batch=True):
            if header.index in known:
                log.warning("frame %d is already in the model; skipped", header.index)
                continue
            if self.session_dir is None and self.session_name == "live":
                self.session_name = header.session
            if header.tracking is not None:
                self._take_tracking(header.index, header.tracking)
                if self.settings.align_tracked:
                    frame = aligned_to_recorded(np.asarray(frame, dtype=np.float32), header.tracking.shift_px)
            self.pending.append(Pending(header, frame, time.monotonic()))
            self.frames_seen += 1
            self.last_frame_wall = time.monotonic()
        self._resolve_expected()
        end = self.subscriber.end_index
        if end is not None and self.subscriber.next_index >= end:
            total = in_model + len(self.pending)
            if self.expected is None or self.expected > total:
                log.info("the publisher ended the run after %d frames; finishing with them", total)
                self.expected = total

    def _take_tracking(self, index: int, record: TrackingRecord) -> None:
        self.tracking[index] = record
        if record.lost:
            log.warning("%s", describe_tracking(index, record))

    def latest_tracking(self) -> tuple[str | None, bool]:
        """The latest tracked frame in words and whether tracking lost the specimen there ((None, False)
        when no frame carries tracking)."""
        if not self.tracking:
            return None, False
        index = max(self.tracking)
        record = self.tracking[index]
        return describe_tracking(index, record), record.lost

    def lag_s(self) -> float:
        """Seconds the oldest pending frame has waited (0 when none waits)."""
        return time.monotonic() - self.pending[0].received_s if self.pending else 0.0

    def close(self) -> None:
        """Close the subscriber's sockets."""
        if self.subscriber is not None:
            self.subscriber.close()
