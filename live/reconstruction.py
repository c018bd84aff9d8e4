"""The live reconstruction process: frames in, a reconstructor trained between them, status out.

:class:`LiveReconstruction` wires four parts together and runs the loop:

- :class:`live.intake.FrameIntake`: frames from the stream (with catch-up) into a pending queue, and
  the frames expected;
- a :class:`recon.reconstructor.Reconstructor` (``--method dipster|sirt``), the only interface to the
  reconstruction: ``add_frame`` (with the frame's dose and temperature as metadata, kept in its state),
  ``train``, ``volume``, ``reproject``, ``save``/``load``;
- :class:`live.run_state.RunState`: the run directory (the format of ``recon train``), checkpoints,
  the training log, endpoints and the final volumes;
- :class:`live.status_server.StatusServer`: status, reprojections, orthoslices and history on the PUB
  endpoint; volume and reprojection requests on the ROUTER endpoint.

Two schedules:

- continuous (default): every poll adds all new frames, then one chunk of ``chunk_steps`` steps runs;
- deterministic (``steps_per_frame``): after each new frame exactly ``steps_per_frame`` steps
  (:mod:`live.schedule`, the same functions offline reconstruction uses), so a live run equals an
  offline run of the same session and seed.

The state is checkpointed every ``checkpoint_interval_s``, on SIGINT/SIGTERM and at the end (in the
deterministic schedule only between frames). Restarted (even after kill -9), the process loads the
state, keeps its time scale, and asks for the frames after the last one in it, so no frame is lost or
used twice. Each frame's metadata records the step at which it was added, so the steps trained after
the last frame are known again after a restart.
"""

from __future__ import annotations

import logging
import math
import signal
import subprocess
import time

import numpy as np

from acquire.errors import UserError
from acquire.progress import ProgressLine
from live.intake import FrameIntake, Pending
from live.run_state import RunState, new_reconstructor
from live.schedule import train_chunked
from live.settings import LiveSettings
from live.status import HistoryHeader, StatusHeader, make_orthoslices, make_reprojection
from live.status_server import StatusServer
from recon.device import resolve_device
from recon.run_dir import derive_time_scale_s, heldout_positions

log = logging.getLogger(__name__)

MAX_LOSS_POINTS = 2000
HISTORY_INTERVAL_S = 1.0
STEP_ADDED = "step_added"  # frame metadata: the reconstructor's step when the frame was added


def _thin(steps: np.ndarray, values: np.ndarray, limit: int) -> tuple[list[int], list[float]]:
    """At most ``limit`` points of a per-step curve, each the mean of its bin."""
    if len(values) <= limit:
        return steps.astype(int).tolist(), values.astype(float).tolist()
    bins = np.array_split(np.arange(len(values)), limit)
    return [int(steps[b[-1]]) for b in bins], [float(values[b].mean()) for b in bins]


def _held_out(position: int, fraction: float) -> bool:
    """Whether the frame at ``position`` (0-based, arrival order) is held out (recon.run_dir's rule)."""
    return fraction > 0 and heldout_positions(position + 1, fraction)[-1:] == [position]


class LiveReconstruction:
    """The live process's parts and loop (see the module docstring).

    Parameters
    ----------
    settings
        :class:`live.settings.LiveSettings`.
    """

    def __init__(self, settings: LiveSettings) -> None:
        self.settings = settings
        if settings.threads is not None:
            import torch

            torch.set_num_threads(settings.threads)
        self.device = str(resolve_device(settings.device))
        self.progress = ProgressLine()
        self.run_state = RunState(settings, self.device)
        self.reconstructor = self.run_state.resume()
        if self.reconstructor is not None:
            log.info("resumed from %s: %d frames, step %d", self.run_state.path, self.reconstructor.n_frames,
                     self.reconstructor.steps_done)
        records = self.reconstructor.frame_records if self.reconstructor is not None else []
        self.intake = FrameIntake(settings, max((r["index"] for r in records), default=-1) + 1, self.progress)
        self.intake.frames_seen = len(records)
        self.snapshots = None
        self.server = StatusServer(settings.status, settings.volume_endpoint, listener=self._to_snapshots)
        self.run_state.write_endpoints(self.server.status_endpoint, self.server.request_endpoint)
        self.heldout_step, self.heldout_rmse_percent = self.run_state.heldout_curve()
        self.stop_requested = False
        self.state = "waiting"
        self.last_loss: float | None = None
        self.rate = 0.0
        self.idle = False  # the last training call found nothing to do (SIRT with every window current)
        # SIRT's work is finite (one window per frame): it trains until idle, not for --final-steps
        self.finite_work = settings.method == "sirt"
        self.train_s = 0.0
        self.logged_step = self.reconstructor.steps_done if self.reconstructor is not None else 0
        self.last_history = self.last_slices = self.last_snapshot = self.last_log = 0.0
        self.viewer_process: subprocess.Popen | None = None

    # ------------------------------------------------------------------ small queries
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

    def all_frames_in(self) -> bool:
        return (self.expected is not None and self.reconstructor is not None
                and self.reconstructor.n_frames >= self.expected)

    def steps_after_last(self) -> int:
        """Steps trained after the last expected frame's own schedule (0 until every frame is in)."""
        r = self.reconstructor
        if not self.all_frames_in():
            return 0
        last_added = max(rec.get(STEP_ADDED, 0) for rec in r.frame_records)
        return max(r.steps_done - last_added - (self.settings.steps_per_frame or 0), 0)

    def finished_training(self) -> bool:
        """All expected frames in and the final steps done (SIRT: every window computed), or a run that
        ended with no frame."""
        if self.expected == 0:
            return True
        if not self.all_frames_in() or self.intake.pending:
            return False
        if self.finite_work:
            return self.idle
        return self.steps_after_last() >= self.settings.final_steps

    def idle_too_long(self) -> bool:
        timeout = self.settings.idle_timeout_s
        return (timeout is not None and self.reconstructor is not None and not self.intake.pending
                and time.monotonic() - self.intake.last_frame_wall > timeout)

    # ------------------------------------------------------------------ publishing
    def _to_snapshots(self, message) -> None:
        if self.snapshots is not None:
            self.snapshots.feed(message)

    def publish_status(self) -> None:
        r = self.reconstructor
        low, high = self._times()
        loss = self.last_loss if self.last_loss is not None and math.isfinite(self.last_loss) else None
        self.server.publish(StatusHeader(
            session=self.session_name, frames_seen=self.intake.frames_seen,
            frames_in_model=r.n_frames if r else 0, frames_expected=self.expected,
            step=r.steps_done if r else 0, loss=loss, steps_per_s=self.rate,
            lag_frames=len(self.intake.pending), lag_s=self.intake.lag_s(), time_min_s=low, time_max_s=high,
            volume_endpoint=self.server.request_endpoint, state=self.state, method=self.settings.method))

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
            heldout_step=self.heldout_step, heldout_rmse_percent=self.heldout_rmse_percent))
        self.last_history = time.monotonic()

    def publish_reprojection(self, item: Pending) -> None:
        h = item.header
        rep = self.reconstructor.reproject(h.time_s, h.angle_deg)
        self.server.publish(make_reprojection(self.session_name, h.index, h.angle_deg, h.time_s,
                                              self.reconstructor.steps_done, item.frame, rep))

    def publish_orthoslices(self) -> None:
        r = self.reconstructor
        if r is None or r.n_frames == 0:
            return
        time_s = self._times()[1]
        self.server.publish(make_orthoslices(self.session_name, r.volume(time_s), time_s, r.steps_done))
        self.last_slices = time.monotonic()

    def serve_requests(self) -> None:
        """Answer waiting volume and reprojection requests (non-blocking)."""
        self.server.serve(self.reconstructor, self.session_name)

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
        self.reconstructor = new_reconstructor(self.settings, tuple(first.shape), scale, self.device)
        self.run_state.start(self.reconstructor, self.session_name, scale)
        if scale is not None:
            log.info("time scale fixed at %.1f s (frames expected: %s)", scale, self.expected)
        return True

    def add_pending(self, limit: int | None = None) -> list[Pending]:
        """Add up to ``limit`` pending frames to the reconstructor (all by default); bad frames are skipped."""
        added = []
        pending = self.intake.pending
        while pending and (limit is None or len(added) < limit):
            item = pending.popleft()
            h = item.header
            r = self.reconstructor
            metadata = {"dose_e_per_A2": h.dose_e_per_A2, "temperature_C": h.temperature_C,
                        STEP_ADDED: r.steps_done}
            try:
                r.add_frame(h.index, np.asarray(item.frame, dtype=np.float32), h.angle_deg, h.time_s,
                            held_out=_held_out(r.n_frames, self.settings.holdout), metadata=metadata)
            except UserError as exc:
                log.warning("skipped frame %d: %s", h.index, exc)
                continue
            self.idle = False
            added.append(item)
        return added

    # ------------------------------------------------------------------ training
    def _chunk_done(self, loss: float, steps: int, seconds: float) -> None:
        self.last_loss = loss
        self.rate = steps / seconds if seconds > 0 else 0.0
        self.train_s += seconds
        self.serve_requests()
        self.publish_status()
        self._progress()

    def _progress(self) -> None:
        r = self.reconstructor
        expected = f"/{self.expected}" if self.expected else ""
        loss = f"{self.last_loss:.4g}" if self.last_loss is not None else "-"
        eta = ""
        if self.all_frames_in() and self.rate > 0:
            eta = f", ETA {max(self.settings.final_steps - self.steps_after_last(), 0) / self.rate:.0f} s"
        self.progress.update(f"live: frames {r.n_frames}{expected}, step {r.steps_done}, loss {loss}, "
                             f"{self.rate:.1f} steps/s, lag {len(self.intake.pending)}{eta}")

    def _timed_chunk(self, steps: int) -> None:
        r = self.reconstructor
        started, before = time.monotonic(), r.steps_done
        loss = r.train(steps=steps)
        self.idle = r.steps_done == before
        self._chunk_done(loss, r.steps_done - before, time.monotonic() - started)

    def _train_step(self) -> list[Pending]:
        """Add frames and train by the schedule; returns the frames added."""
        s = self.settings
        r = self.reconstructor
        if s.steps_per_frame is not None:
            added = self.add_pending(limit=1)
            for _ in added:
                self.state = "training"
                started, before = time.monotonic(), r.steps_done

                def between(loss: float) -> None:
                    self._chunk_done(loss, r.steps_done - before, time.monotonic() - started)

                train_chunked(r, s.steps_per_frame, s.chunk_steps, between)
            if not added and self.all_frames_in():
                if self.finite_work and not self.idle:
                    self._timed_chunk(s.chunk_steps)
                elif not self.finite_work and self.steps_after_last() < s.final_steps:
                    self._timed_chunk(min(s.chunk_steps, s.final_steps - self.steps_after_last()))
            return added
        added = self.add_pending()
        if any(not rec["held_out"] for rec in r.frame_records) and not self.finished_training():
            self.state = "training"
            steps = s.chunk_steps
            if self.all_frames_in() and not self.finite_work:
                steps = min(steps, s.final_steps - self.steps_after_last())
            if steps > 0:
                self._timed_chunk(steps)
        return added

    def _log_row(self) -> None:
        """One train_log.csv row, with the held-out error when frames are held out."""
        r = self.reconstructor
        heldout = r.heldout_metrics() if r.n_frames else None
        if heldout is not None:
            self.heldout_step.append(r.steps_done)
            self.heldout_rmse_percent.append(heldout["heldout_rmse_percent"])
        loss = self.last_loss if self.last_loss is not None and math.isfinite(self.last_loss) else None
        self.run_state.log_row(r, loss, self.train_s, heldout)
        self.last_log = time.monotonic()
        self.logged_step = r.steps_done

    def checkpoint(self) -> None:
        """Save the reconstructor into the run directory (atomic)."""
        if self.reconstructor is not None:
            self.run_state.checkpoint(self.reconstructor)

    def step(self) -> None:
        """One turn of the loop: poll, add frames, train, publish, log, checkpoint."""
        s = self.settings
        r = self.reconstructor
        training = r is not None and not self.idle and not self.finished_training() and any(
            not rec["held_out"] for rec in r.frame_records)
        self.intake.poll(0.0 if (training or self.intake.pending) else 0.2,
                         {rec["index"] for rec in r.frame_records} if r is not None else set(),
                         r.n_frames if r is not None else 0)
        self.serve_requests()
        if not self._ensure_reconstructor():
            self.publish_status()
            return
        added = self._train_step()
        for item in added:
            self.publish_reprojection(item)
        now = time.monotonic()
        if now - self.last_log >= s.log_interval_s and self.reconstructor.steps_done > self.logged_step:
            self._log_row()
        if added or now - self.last_history >= HISTORY_INTERVAL_S:
            self.publish_history()
        if added or now - self.last_slices >= s.orthoslice_interval_s:
            self.publish_orthoslices()
        if now - self.run_state.last_checkpoint >= s.checkpoint_interval_s:
            self.checkpoint()
        if self.snapshots is not None and now - self.last_snapshot >= s.snapshot_interval_s:
            self.snapshots.write()
            self.last_snapshot = now
        if not added and not self.finished_training():
            self.publish_status()

    # ------------------------------------------------------------------ run
    def start_viewers(self) -> None:
        """Snapshots in-process when asked; a viewer window in a subprocess unless headless."""
        from live.viewer import SnapshotRenderer, launch_viewer

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
            while not self.stop_requested:
                self.step()
                if self.finished_training() or self.idle_too_long():
                    self.state = "finished"
                    break
            else:
                self.state = "stopped"
            self.progress.end()
            if self.reconstructor is not None:
                if self.reconstructor.steps_done > self.logged_step:
                    self._log_row()
                self.checkpoint()
                if self.state == "finished":
                    log.info("wrote %s", self.run_state.write_volumes(self.reconstructor, self.settings.volumes_out))
                self.publish_history()
                self.publish_orthoslices()
            self.publish_status()
            if self.snapshots is not None:
                self.snapshots.write("final.png")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.state

    def close(self) -> None:
        """Close the intake and the endpoints, the snapshot window; leaves a viewer window open."""
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
                 r.steps_done, live.last_loss, live.run_state.path)
    return 0
