"""The live reconstruction process: frames in from the stream, DIP-STER training between them, status out.

One :class:`LiveReconstruction` subscribes to the frame stream (``acquire.subscriber.FrameSubscriber``,
which catches up on frames already in the session directory), adds each new frame to one
:class:`recon.trainer.Trainer` without restarting it, and trains in chunks between non-blocking polls
of the stream. Two schedules:

- continuous (default): every poll adds all new frames, then one chunk of ``chunk_steps`` steps runs;
- deterministic (``steps_per_frame``): after each new frame exactly ``steps_per_frame`` steps
  (:mod:`live.schedule`, the same functions offline reconstruction uses), so a live run equals an
  offline run of the same session and seed.

Run directory ``RUN/``: ``checkpoint.pt`` (the trainer, written atomically every
``checkpoint_interval_s``, on SIGINT/SIGTERM and at the end; in the deterministic schedule only between
frames), ``live_state.json`` (per-frame dose/temperature for the viewer, written before the checkpoint),
``endpoints.json`` (the bound status and volume endpoints), and at the end ``volumes.tif`` +
``volumes_times.csv`` (recon.volume_io). Restarted (even after kill -9), the process loads the
checkpoint, keeps its time scale, and asks the subscriber for the frames after the last one in it, so no
frame is lost or used twice.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zmq

from acquire.errors import UserError
from acquire.session import SETTINGS_FILE, SessionSettings
from acquire.stream import FrameHeader, WireError
from live.schedule import derive_time_scale_s, session_expected_frames, train_chunked
from live.settings import LiveSettings
from live.status import (HistoryHeader, StatusHeader, decode_volume_request, encode_history,
                         encode_orthoslices, encode_reprojection, encode_status)
from recon.device import resolve_device

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
STATE_FILE = "live_state.json"
ENDPOINTS_FILE = "endpoints.json"
VOLUMES_FILE = "volumes.tif"
MAX_LOSS_POINTS = 2000
HISTORY_INTERVAL_S = 1.0


@dataclass
class Pending:
    """A frame received but not yet in the model."""

    header: FrameHeader
    frame: np.ndarray
    received_s: float  # time.monotonic() at receipt


def _write_json_atomic(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data) + "\n")
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _thin(steps: np.ndarray, values: np.ndarray, limit: int) -> tuple[list[int], list[float]]:
    """At most ``limit`` points of a per-step curve, each the mean of its bin."""
    if len(values) <= limit:
        return steps.astype(int).tolist(), values.astype(float).tolist()
    bins = np.array_split(np.arange(len(values)), limit)
    return [int(steps[b[-1]]) for b in bins], [float(values[b].mean()) for b in bins]


class LiveReconstruction:
    """The live process's state and loop (see the module docstring).

    Parameters
    ----------
    settings
        :class:`live.settings.LiveSettings`.
    """

    def __init__(self, settings: LiveSettings) -> None:
        from recon.presets import preset
        from recon.trainer import Trainer

        self.settings = settings
        if settings.threads is not None:
            import torch

            torch.set_num_threads(settings.threads)
        self.device = resolve_device(settings.device)
        self.config = preset(settings.preset)
        self.run_dir = Path(settings.out)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint_path = self.run_dir / CHECKPOINT_FILE
        self.trainer = None
        self.frame_meta: dict[int, dict] = {}
        if self.checkpoint_path.is_file():
            self.trainer = Trainer.load(self.checkpoint_path, device=self.device)
            self._load_state()
            log.info("resumed from %s: %d frames, step %d, time scale %.1f s", self.checkpoint_path,
                     self.trainer.n_frames, self.trainer.steps_done, self.trainer.time_scale_s)
        self.session_name = settings.session.name if settings.session is not None else "live"
        self.expected = settings.expected_frames
        self.session_read = False
        self.pending: deque[Pending] = deque()
        self.frames_seen = self.trainer.n_frames if self.trainer is not None else 0
        self.stop_requested = False
        self.state = "waiting"
        self.last_loss: float | None = None
        self.rate = 0.0
        self.steps_after_last = 0
        self.last_frame_wall = time.monotonic()
        self.last_history = self.last_slices = self.last_snapshot = 0.0
        self.last_checkpoint = time.monotonic()
        self.snapshots = None
        self.viewer_process: subprocess.Popen | None = None
        self._resolve_expected()
        self._open_sockets()

    # ------------------------------------------------------------------ setup
    def _load_state(self) -> None:
        path = self.run_dir / STATE_FILE
        if not path.is_file():
            return
        state = json.loads(path.read_text())
        kept = set(self.trainer.indices)
        self.frame_meta = {int(k): v for k, v in state.get("frames", {}).items() if int(k) in kept}
        # live_state.json is written before the checkpoint: steps it counted past the checkpoint are undone
        ahead = int(state.get("steps_done", 0)) - self.trainer.steps_done
        self.steps_after_last = max(int(state.get("steps_after_last", 0)) - max(ahead, 0), 0)

    def _resolve_expected(self) -> None:
        """Frames expected: the setting, else the session's scheme count once session.json exists."""
        if self.expected is not None or self.settings.session is None:
            return
        path = Path(self.settings.session) / SETTINGS_FILE
        if path.is_file():
            try:
                scheme = SessionSettings.model_validate_json(path.read_text()).scheme
            except ValueError as exc:
                raise UserError(f"{path}: not a valid session.json: {exc}") from None
            self.expected = session_expected_frames(scheme)
            self.session_read = True

    def _open_sockets(self) -> None:
        from acquire.subscriber import FrameSubscriber

        self.context = zmq.Context()
        self.pub = self.context.socket(zmq.PUB)
        self.pub.linger = 500
        self.router = self.context.socket(zmq.ROUTER)
        self.router.linger = 0
        for sock, endpoint, what in ((self.pub, self.settings.status, "status"),
                                     (self.router, self.settings.volume_endpoint, "volume request")):
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                self.context.destroy(0)
                raise UserError(f"cannot bind the {what} endpoint {endpoint!r}: {exc}") from None
        self.status_endpoint = self.pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.volume_endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        _write_json_atomic(self.run_dir / ENDPOINTS_FILE, {"status": self.status_endpoint,
                                                           "volume": self.volume_endpoint, "pid": os.getpid()})
        start = max(self.trainer.indices) + 1 if self.trainer is not None and self.trainer.indices else 0
        self.subscriber = FrameSubscriber(self.settings.connect, session_dir=self.settings.session,
                                          resend_endpoint=self.settings.resend, start_index=start, poll_s=0.01)

    def close(self) -> None:
        """Close the subscriber and sockets, the snapshot window; leaves a viewer window open."""
        self.subscriber.close()
        self.pub.close()
        self.router.close(0)
        self.context.term()
        if self.snapshots is not None:
            self.snapshots.close()

    # ------------------------------------------------------------------ publishing
    def publish(self, parts: list) -> None:
        """Send one status-stream message (and render it into the snapshots, if any)."""
        self.pub.send_multipart(parts, copy=False)
        if self.snapshots is not None:
            self.snapshots.feed(parts)

    def _times(self) -> tuple[float | None, float | None]:
        if self.trainer is None or not self.trainer.times_s:
            return None, None
        return min(self.trainer.times_s), max(self.trainer.times_s)

    def publish_status(self) -> None:
        t = self.trainer
        low, high = self._times()
        self.publish(encode_status(StatusHeader(
            session=self.session_name, frames_seen=self.frames_seen,
            frames_in_model=t.n_frames if t else 0, frames_expected=self.expected,
            step=t.steps_done if t else 0,
            loss=self.last_loss if self.last_loss is not None and math.isfinite(self.last_loss) else None,
            steps_per_s=self.rate, lag_frames=len(self.pending),
            lag_s=(time.monotonic() - self.pending[0].received_s) if self.pending else 0.0,
            time_min_s=low, time_max_s=high, volume_endpoint=self.volume_endpoint, state=self.state)))

    def publish_history(self) -> None:
        t = self.trainer
        if t is None:
            return
        order = np.argsort(t.indices)
        indices = [t.indices[i] for i in order]
        losses = np.asarray(t.loss_history, dtype=float)
        loss_step, loss = _thin(np.arange(1, len(losses) + 1), losses, MAX_LOSS_POINTS)
        meta = [self.frame_meta.get(i, {}) for i in indices]
        self.publish(encode_history(HistoryHeader(
            session=self.session_name, frame_index=indices, time_s=[t.times_s[i] for i in order],
            angle_deg=[t.angles_deg[i] for i in order],
            dose_e_per_A2=[m.get("dose_e_per_A2", 0.0) for m in meta],
            temperature_C=[m.get("temperature_C") for m in meta], loss_step=loss_step, loss=loss)))
        self.last_history = time.monotonic()

    def publish_reprojection(self, header: FrameHeader, frame: np.ndarray) -> None:
        rep = self.trainer.reproject(header.time_s, header.angle_deg)
        self.publish(encode_reprojection(self.session_name, header.index, header.angle_deg, header.time_s,
                                         self.trainer.steps_done, frame, rep))

    def publish_orthoslices(self, time_s: float | None = None, request: tuple[bytes, int] | None = None) -> None:
        if self.trainer is None or self.trainer.n_frames == 0:
            return
        time_s = self._times()[1] if time_s is None else time_s
        parts = encode_orthoslices(self.session_name, self.trainer.volume(time_s), time_s, self.trainer.steps_done,
                                   request_id=None if request is None else request[1])
        if request is None:
            self.publish(parts)
            self.last_slices = time.monotonic()
        else:
            self.router.send_multipart([request[0], b"", *parts], copy=False)

    def serve_requests(self) -> None:
        """Answer waiting volume requests (non-blocking); malformed ones are logged and skipped."""
        while self.router.poll(0, zmq.POLLIN):
            parts = self.router.recv_multipart()
            identity, body = parts[0], parts[1:]
            if body and body[0] == b"":
                body = body[1:]
            try:
                request = decode_volume_request(body)
            except WireError as exc:
                log.warning("skipped a malformed volume request: %s", exc)
                continue
            if self.trainer is not None and self.trainer.n_frames:
                self.publish_orthoslices(request.time_s, (identity, request.request_id))

    # ------------------------------------------------------------------ frames
    def poll_frames(self, timeout_s: float) -> None:
        """Move every frame the subscriber has into the pending queue (waits at most ``timeout_s``)."""
        known = set(self.trainer.indices) if self.trainer is not None else set()
        for header, frame in self.subscriber.frames(timeout_s=timeout_s):
            if header.index in known:
                log.warning("frame %d is already in the model; skipped", header.index)
                continue
            if self.settings.session is None and self.session_name == "live":
                self.session_name = header.session
            self.pending.append(Pending(header, frame, time.monotonic()))
            self.frames_seen += 1
            self.last_frame_wall = time.monotonic()
        self._resolve_expected()
        end = self.subscriber.end_index
        if end is not None and self.subscriber.next_index >= end:
            in_model = self.trainer.n_frames if self.trainer is not None else 0
            total = in_model + len(self.pending)
            if self.expected is None or self.expected > total:
                log.info("the publisher ended the run after %d frames; finishing with them", total)
                self.expected = total

    def _ensure_trainer(self) -> bool:
        """Create the trainer once the time scale is known; False while it must wait for frames."""
        if self.trainer is not None:
            return True
        if not self.pending:
            return False
        from recon.trainer import Trainer

        first = self.pending[0].header
        scale = self.settings.time_scale_s
        if scale is None:
            if self.expected is None and self.settings.session is not None and not self.session_read:
                return False  # session.json not there yet
            if len(self.pending) < 2 and (self.expected or 0) > 1:
                return False  # wait for the second frame's interval
            second = self.pending[1].header.time_s if len(self.pending) > 1 else None
            scale = derive_time_scale_s(self.expected, first.time_s, second)
        self.trainer = Trainer(self.config, tuple(first.shape), scale, device=self.device, seed=self.settings.seed)
        log.info("time scale fixed at %.1f s (frames expected: %s)", scale, self.expected)
        return True

    def add_pending(self, limit: int | None = None) -> list[Pending]:
        """Add up to ``limit`` pending frames to the trainer (all by default); bad frames are skipped."""
        added = []
        while self.pending and (limit is None or len(added) < limit):
            item = self.pending.popleft()
            h = item.header
            try:
                self.trainer.add_frame(h.index, np.asarray(item.frame, dtype=np.float32), h.angle_deg, h.time_s)
            except UserError as exc:
                log.warning("skipped frame %d: %s", h.index, exc)
                continue
            self.frame_meta[h.index] = {"dose_e_per_A2": h.dose_e_per_A2, "temperature_C": h.temperature_C}
            added.append(item)
        return added

    def all_frames_in(self) -> bool:
        return self.expected is not None and self.trainer is not None and self.trainer.n_frames >= self.expected

    # ------------------------------------------------------------------ checkpoints and output
    def checkpoint(self) -> None:
        """Write live_state.json, then the trainer checkpoint (both atomic)."""
        if self.trainer is None:
            return
        _write_json_atomic(self.run_dir / STATE_FILE, {
            "session": self.session_name, "frames": {str(k): v for k, v in self.frame_meta.items()},
            "steps_after_last": self.steps_after_last, "steps_done": self.trainer.steps_done})
        self.trainer.save(self.checkpoint_path)
        self.last_checkpoint = time.monotonic()

    def write_volumes(self) -> Path:
        """The volume-time series at the frame times (or ``volumes_out`` evenly spaced), via recon.volume_io."""
        from recon.volume_io import write_volumes

        low, high = self._times()
        if self.settings.volumes_out:
            times = np.linspace(low, high, self.settings.volumes_out)
        else:
            times = np.sort(np.asarray(self.trainer.times_s))
        volumes = np.stack([self.trainer.volume(float(t)) for t in times])
        path = self.run_dir / VOLUMES_FILE
        write_volumes(path, volumes, times)
        return path

    # ------------------------------------------------------------------ loop
    def _chunk_done(self, loss: float, steps: int, seconds: float) -> None:
        self.last_loss = loss
        self.rate = steps / seconds if seconds > 0 else 0.0
        self.serve_requests()
        self.publish_status()
        self._progress()

    def _progress(self) -> None:
        t = self.trainer
        if t is None:
            return
        expected = f"/{self.expected}" if self.expected else ""
        loss = f"{self.last_loss:.4g}" if self.last_loss is not None else "-"
        eta = ""
        if self.all_frames_in() and self.rate > 0:
            eta = f", ETA {max(self.settings.final_steps - self.steps_after_last, 0) / self.rate:.0f} s"
        print(f"\rlive: frames {t.n_frames}{expected}, step {t.steps_done}, loss {loss}, "
              f"{self.rate:.1f} steps/s, lag {len(self.pending)}{eta}   ", end="", file=sys.stderr, flush=True)

    def _timed_chunk(self, steps: int) -> float:
        started = time.monotonic()
        loss = self.trainer.train_steps(steps)
        if self.all_frames_in():
            self.steps_after_last += steps
        self._chunk_done(loss, steps, time.monotonic() - started)
        return loss

    def step(self) -> None:
        """One turn of the loop: poll, add frames, train, publish, checkpoint."""
        s = self.settings
        training = self.trainer is not None and self.trainer.n_train_frames > 0 and not self.finished_training()
        self.poll_frames(0.0 if (training or self.pending) else 0.2)
        self.serve_requests()
        if not self._ensure_trainer():
            self.publish_status()
            return
        if s.steps_per_frame is not None:
            added = self.add_pending(limit=1)
            for item in added:
                self.state = "training"
                started = time.monotonic()
                steps_before = self.trainer.steps_done

                def between(loss: float) -> None:
                    self._chunk_done(loss, self.trainer.steps_done - steps_before, time.monotonic() - started)

                train_chunked(self.trainer, s.steps_per_frame, s.chunk_steps, between)
            if not added and self.all_frames_in() and self.steps_after_last < s.final_steps:
                self._timed_chunk(min(s.chunk_steps, s.final_steps - self.steps_after_last))
        else:
            added = self.add_pending()
            if self.trainer.n_train_frames and not self.finished_training():
                self.state = "training"
                steps = s.chunk_steps
                if self.all_frames_in():
                    steps = min(steps, s.final_steps - self.steps_after_last)
                if steps > 0:
                    self._timed_chunk(steps)
        for item in added:
            self.publish_reprojection(item.header, item.frame)
        now = time.monotonic()
        if added or now - self.last_history >= HISTORY_INTERVAL_S:
            self.publish_history()
        if added or now - self.last_slices >= s.orthoslice_interval_s:
            self.publish_orthoslices()
        if now - self.last_checkpoint >= s.checkpoint_interval_s:
            self.checkpoint()
        if self.snapshots is not None and now - self.last_snapshot >= s.snapshot_interval_s:
            self.snapshots.write()
            self.last_snapshot = now
        if not added and not self.finished_training():
            self.publish_status()

    def finished_training(self) -> bool:
        """All expected frames in the model and the final steps done (or a run that ended with no frame)."""
        if self.expected == 0:
            return True
        return self.all_frames_in() and self.steps_after_last >= self.settings.final_steps and not self.pending

    def idle_too_long(self) -> bool:
        timeout = self.settings.idle_timeout_s
        return (timeout is not None and self.trainer is not None and not self.pending
                and time.monotonic() - self.last_frame_wall > timeout)

    def start_viewers(self) -> None:
        """Snapshots in-process when asked; a viewer window in a subprocess unless headless."""
        from live.viewer import SnapshotRenderer, has_display

        if self.settings.snapshots is not None:
            self.snapshots = SnapshotRenderer(self.settings.snapshots)
            self.last_snapshot = time.monotonic()
        if self.settings.headless:
            return
        if not has_display():
            log.warning("no display (DISPLAY/WAYLAND_DISPLAY unset): running headless, no viewer window")
            return
        # an offscreen "window" cannot be closed by anyone: that viewer ends when the run does
        until = ["--until-finished"] if os.environ.get("QT_QPA_PLATFORM") == "offscreen" else []
        self.viewer_process = subprocess.Popen([sys.executable, "-m", "live.cli", "view", "--connect",
                                                self.status_endpoint, *until])

    def run(self) -> str:
        """Loop until finished, idle timeout or SIGINT/SIGTERM; returns the final state."""
        def request_stop(signum, _frame) -> None:
            log.info("signal %d: checkpointing and stopping", signum)
            self.stop_requested = True

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start_viewers()
            while not self.stop_requested:
                self.step()
                if self.finished_training() or self.idle_too_long():
                    self.state = "finished"
                    break
            else:
                self.state = "stopped"
            if self.trainer is not None:
                self.checkpoint()
                if self.state == "finished":
                    path = self.write_volumes()
                    log.info("wrote %s", path)
                self.publish_history()
                self.publish_orthoslices()
            self.publish_status()
            if self.snapshots is not None:
                self.snapshots.write("final.png")
            print(file=sys.stderr)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.state


def run_live(settings: LiveSettings) -> int:
    """``tiltstream live``: run the live reconstruction; exit 0 when finished or stopped by a signal."""
    live = LiveReconstruction(settings)
    try:
        state = live.run()
    finally:
        live.close()
    t = live.trainer
    if t is not None:
        log.info("%s: %d frames, %d steps, last loss %s; run directory %s", state, t.n_frames, t.steps_done,
                 live.last_loss, live.run_dir)
    return 0
