"""The live reconstruction process: frames in, a reconstructor trained between them, status out.

:class:`LiveReconstruction` wires five parts together and runs the loop:

- :class:`tiltstream.live.intake.FrameIntake`: frames from the stream (with catch-up) into a pending queue, and
  the frames expected;
- :class:`tiltstream.live.scheduler.Scheduler`: when pending frames enter the reconstruction and how many steps it
  trains (continuous, or ``--steps-per-frame`` deterministic: equal to the offline reconstruction);
- a :class:`tiltstream.recon.reconstructor.Reconstructor` (``--method dipster|sirt``), the only interface to the
  reconstruction: ``add_frame`` (with the frame's dose and temperature as metadata, kept in its state),
  ``train``, ``volume``, ``reproject``, ``heldout_metrics``, ``save``/``load``;
- :class:`tiltstream.live.run_state.RunState`: the run directory (the format of ``recon train``), checkpoints,
  the training log, endpoints and the final volumes;
- :class:`tiltstream.live.status_server.StatusServer`: status, reprojections, orthoslices and history on the PUB
  endpoint; volume and reprojection requests on the ROUTER endpoint;
- :class:`tiltstream.live.reprojection_service.ReprojectionService`: a thread that answers those requests and
  publishes each new frame's reprojection as the frame arrives, from a copy of the weights the loop
  refreshes after every chunk, so neither waits for a chunk to end.

The state is checkpointed every ``checkpoint_interval_s``, on SIGINT/SIGTERM and at the end (in the
deterministic schedule only between frames). Restarted (even after kill -9), the process loads the
state, keeps its time scale, and asks for the frames after the last one in it, so no frame is lost or
used twice.
"""

from __future__ import annotations

import logging
import math
import signal
import subprocess
import threading
import time
from contextlib import AbstractContextManager

import numpy as np

from tiltstream.progress import ProgressLine
from tiltstream.live.intake import FrameIntake
from tiltstream.live.reprojection_service import ReprojectionService
from tiltstream.live.run_state import RunState, new_reconstructor
from tiltstream.live.scheduler import Scheduler
from tiltstream.live.settings import LiveSettings
from tiltstream.live.status import HistoryHeader, StatusHeader, make_orthoslices, tracking_history
from tiltstream.live.status_server import StatusServer
from tiltstream.recon.device import resolve_device
from tiltstream.recon.reconstructor import Reconstructor
from tiltstream.recon.run_dir import derive_time_scale_s

log = logging.getLogger(__name__)

MAX_LOSS_POINTS = 2000
HISTORY_INTERVAL_S = 1.0


def _finite(value: float | None) -> float | None:
    """``value`` when it is a finite number, else None (JSON and the log have no NaN)."""
    return value if value is not None and math.isfinite(value) else None


def _thin(steps: np.ndarray, values: np.ndarray, limit: int) -> tuple[list[int], list[float]]:
    """At most ``limit`` points of a per-step curve, each the mean of its bin."""
    if len(values) <= limit:
        return steps.astype(int).tolist(), values.astype(float).tolist()
    bins = np.array_split(np.arange(len(values)), limit)
    return [int(steps[b[-1]]) for b in bins], [float(values[b].mean()) for b in bins]


class LiveReconstruction:
    """The live process's parts and loop (see the module docstring).

    Parameters
    ----------
    settings
        :class:`tiltstream.live.settings.LiveSettings`.
    """

    def __init__(self, settings: LiveSettings) -> None:
        self.settings = settings
        if settings.threads is not None:
            import torch

            torch.set_num_threads(settings.threads)
        self.device = str(resolve_device(settings.device))
        self.progress = ProgressLine()
        self.run_state = RunState(settings, self.device)
        reconstructor = self.run_state.resume()
        if reconstructor is not None:
            log.info("resumed from %s: %d frames, step %d", self.run_state.path, reconstructor.n_frames,
                     reconstructor.steps_done)
        records = reconstructor.frame_records if reconstructor is not None else []
        self.intake = FrameIntake(settings, max((r["index"] for r in records), default=-1) + 1, self.progress)
        self.intake.frames_seen = len(records)
        self.snapshots = None
        self.snapshot_lock = threading.Lock()
        self.server = StatusServer(settings.status, settings.volume_endpoint, listener=self._to_snapshots)
        self.run_state.write_endpoints(self.server.status_endpoint, self.server.request_endpoint)
        self.service = ReprojectionService(self.server, self.intake, lambda: self.session_name)
        self.scheduler = Scheduler(settings, self.intake, on_chunk=self._chunk_done, training=self._training)
        self.scheduler.reconstructor = reconstructor
        if reconstructor is not None:
            self.service.refresh(reconstructor)
        self.stop_requested = False
        self.state = "waiting"
        self.last_history = self.last_slices = self.last_snapshot = 0.0
        self.viewer_process: subprocess.Popen | None = None

    # ------------------------------------------------------------------ small queries
    @property
    def reconstructor(self) -> Reconstructor | None:
        """The reconstruction (None until the first frames fix its shape and time scale)."""
        return self.scheduler.reconstructor

    @property
    def session_name(self) -> str:
        return self.intake.session_name

    @property
    def expected(self) -> int | None:
        return self.intake.expected

    def _times(self) -> tuple[float | None, float | None]:
        records = self.reconstructor.frame_records if self.reconstructor is not None else []
        if not records:
            return None, None
        times = [r["time_s"] for r in records]
        return min(times), max(times)

    def idle_too_long(self) -> bool:
        timeout = self.settings.idle_timeout_s
        return (timeout is not None and self.reconstructor is not None and not self.intake.pending
                and time.monotonic() - self.intake.last_frame_wall > timeout)

    # ------------------------------------------------------------------ publishing
    def _to_snapshots(self, message) -> None:
        """Feed a published message to the snapshot renderer (from either thread; never while it renders)."""
        if self.snapshots is not None:
            with self.snapshot_lock:
                self.snapshots.feed(message)

    def write_snapshot(self, name: str | None = None) -> None:
        """Render and write a snapshot (the reprojection service's messages wait meanwhile)."""
        with self.snapshot_lock:
            self.snapshots.write(name)

    def publish_status(self) -> None:
        r = self.reconstructor
        low, high = self._times()
        loss = _finite(self.scheduler.last_loss)
        tracking, lost = self.intake.latest_tracking()
        self.server.publish(StatusHeader(
            session=self.session_name, frames_seen=self.intake.frames_seen,
            frames_in_model=r.n_frames if r else 0, frames_expected=self.expected,
            step=r.steps_done if r else 0, loss=loss, steps_per_s=self.scheduler.rate,
            lag_frames=len(self.intake.pending), lag_s=self.intake.lag_s(), time_min_s=low, time_max_s=high,
            volume_endpoint=self.server.request_endpoint, state=self.state, method=self.settings.method,
            tracking=tracking, tracking_lost=lost))

    def publish_history(self) -> None:
        r = self.reconstructor
        if r is None:
            return
        records = sorted(r.frame_records, key=lambda rec: rec["index"])
        losses = np.asarray(r.loss_history, dtype=float)
        loss_step, loss = _thin(np.arange(1, len(losses) + 1), losses, MAX_LOSS_POINTS)
        self.server.publish(HistoryHeader(
            session=self.session_name, frame_index=[rec["index"] for rec in records],
            time_s=[rec["time_s"] for rec in records], angle_deg=[rec["angle_deg"] for rec in records],
            dose_e_per_A2=[rec.get("dose_e_per_A2", 0.0) for rec in records],
            temperature_C=[rec.get("temperature_C") for rec in records], loss_step=loss_step, loss=loss,
            heldout_step=self.run_state.heldout_step, heldout_rmse_percent=self.run_state.heldout_rmse_percent,
            **tracking_history([rec["index"] for rec in records], self.intake.tracking)))
        self.last_history = time.monotonic()

    def publish_orthoslices(self) -> None:
        r = self.reconstructor
        if r is None or r.n_frames == 0:
            return
        time_s = self._times()[1]
        self.server.publish(make_orthoslices(self.session_name, r.volume(time_s), time_s, r.steps_done))
        self.last_slices = time.monotonic()

    # ------------------------------------------------------------------ frames
    def _ensure_reconstructor(self) -> bool:
        """Create the reconstructor once the time scale is known; False while it must wait for frames."""
        if self.reconstructor is not None:
            return True
        pending = self.intake.pending
        if not pending:
            return False
        first = pending[0].header
        scale = self.settings.time_scale_s
        if scale is None and self.settings.method == "dipster":
            if self.expected is None and self.intake.session_dir is not None and not self.intake.session_read:
                return False  # session.json not there yet
            if len(pending) < 2 and (self.expected or 0) > 1:
                return False  # wait for the second frame's interval
            second = pending[1].header.time_s if len(pending) > 1 else None
            scale = derive_time_scale_s(self.expected, first.time_s, second)
        self.scheduler.reconstructor = new_reconstructor(self.settings, tuple(first.shape), scale, self.device)
        self.run_state.start(self.reconstructor, self.session_name, scale)
        if scale is not None:
            log.info("time scale fixed at %.1f s (frames expected: %s)", scale, self.expected)
        return True

    # ------------------------------------------------------------------ training
    def _training(self) -> AbstractContextManager:
        """The context a chunk trains in: the reprojection service takes the frames that come meanwhile."""
        r = self.reconstructor
        return self.service.intake_open({rec["index"] for rec in r.frame_records}, r.n_frames)

    def _chunk_done(self) -> None:
        """After each chunk of training: refresh the service's weights, publish status, redraw the progress line."""
        self.state = "training"
        self.service.refresh(self.reconstructor)
        self.publish_status()
        r, sched = self.reconstructor, self.scheduler
        expected = f"/{self.expected}" if self.expected else ""
        loss = f"{sched.last_loss:.4g}" if sched.last_loss is not None else "-"
        eta = sched.eta_s()
        self.progress.update(f"live: frames {r.n_frames}{expected}, step {r.steps_done}, loss {loss}, "
                             f"{sched.rate:.1f} steps/s, lag {len(self.intake.pending)}"
                             f"{'' if eta is None else f', ETA {eta:.0f} s'}")

    def _log_row(self) -> None:
        """One train_log.csv row (with the held-out error when frames are held out)."""
        self.run_state.log_row(self.reconstructor, _finite(self.scheduler.last_loss), self.scheduler.train_s)

    def checkpoint(self) -> None:
        """Save the reconstructor into the run directory (atomic)."""
        if self.reconstructor is not None:
            self.run_state.checkpoint(self.reconstructor)

    def step(self) -> None:
        """One turn of the loop: poll, add frames, train, publish, log, checkpoint."""
        s = self.settings
        r = self.reconstructor
        self.intake.poll(0.0 if (self.scheduler.busy() or self.intake.pending) else 0.2,
                         {rec["index"] for rec in r.frame_records} if r is not None else set(),
                         r.n_frames if r is not None else 0)
        self.service.submit(self.intake.pending)
        if not self._ensure_reconstructor():
            self.publish_status()
            return
        added = self.scheduler.advance()
        if added:
            self.state = "training"
        now = time.monotonic()
        if self.run_state.log_due(self.reconstructor):
            self._log_row()
        if added or now - self.last_history >= HISTORY_INTERVAL_S:
            self.publish_history()
        if added or now - self.last_slices >= s.orthoslice_interval_s:
            self.publish_orthoslices()
        if now - self.run_state.last_checkpoint >= s.checkpoint_interval_s:
            self.checkpoint()
        if self.snapshots is not None and now - self.last_snapshot >= s.snapshot_interval_s:
            self.write_snapshot()
            self.last_snapshot = now
        if not added and not self.scheduler.finished():
            self.publish_status()

    # ------------------------------------------------------------------ run
    def start_viewers(self) -> None:
        """Snapshots in-process when asked; a viewer window in a subprocess unless headless."""
        from tiltstream.live.viewer import SnapshotRenderer, launch_viewer

        if self.settings.snapshots is not None:
            self.snapshots = SnapshotRenderer(self.settings.snapshots)
            self.last_snapshot = time.monotonic()
        if not self.settings.headless:
            self.viewer_process = launch_viewer(self.server.status_endpoint)

    def run(self) -> str:
        """Loop until finished, idle timeout or SIGINT/SIGTERM; returns the final state."""
        def request_stop(signum, _frame) -> None:
            log.info("signal %d: checkpointing and stopping", signum)
            self.stop_requested = True

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start_viewers()
            self.service.start()
            while not self.stop_requested:
                self.step()
                if self.scheduler.finished() or self.idle_too_long():
                    self.state = "finished"
                    break
            else:
                self.state = "stopped"
            self.progress.end()
            if self.reconstructor is not None:
                if self.reconstructor.steps_done > self.run_state.logged_step:
                    self._log_row()
                self.checkpoint()
                self.service.drain()
                if self.state == "finished":
                    path, state = self.run_state.write_volumes(self.reconstructor, self.settings.volumes_out)
                    log.info("wrote %s (%s)", path, state)
                self.publish_history()
                self.publish_orthoslices()
            self.publish_status()
            if self.snapshots is not None:
                self.write_snapshot("final.png")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.state

    def close(self) -> None:
        """Stop the reprojection service; close the intake and the endpoints, the snapshot window; leaves a
        viewer window open."""
        self.service.stop()
        self.intake.close()
        self.server.close()
        if self.snapshots is not None:
            self.snapshots.close()


def run_live(settings: LiveSettings) -> int:
    """``tiltstream live``: run the live reconstruction; exit 0 when finished or stopped by a signal."""
    live = LiveReconstruction(settings)
    try:
        state = live.run()
    finally:
        live.close()
    r = live.reconstructor
    if r is not None:
        log.info("%s: %s, %d frames, %d steps, last loss %s; run directory %s", state, r.method, r.n_frames,
                 r.steps_done, live.scheduler.last_loss, live.run_state.path)
    return 0
