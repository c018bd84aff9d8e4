"""When pending frames enter the reconstruction and how much it trains: the live process's two schedules.

- continuous (default): every turn adds all pending frames, then one chunk of ``chunk_steps`` steps,
  until the model has trained ``max_steps_per_frame`` steps per frame it holds (0: no cap), when it
  waits for the next frame; after the last expected frame, ``final_steps`` more. The cap keeps a long
  session from over-fitting the frames it has (docs/benchmarks/live.md) while a slow machine still
  takes every pending frame at once instead of falling behind the stream;
- deterministic (``steps_per_frame``): one pending frame per turn, then exactly ``steps_per_frame``
  steps (in chunks of ``chunk_steps``, which does not change the result: the trainer draws its samples
  step by step), then ``final_steps`` after the last frame. A run streamed live and the same session
  read from disk (catch-up) therefore give the same reconstruction.

Moving-window SIRT has finite work (one window per frame): it trains until no window is stale instead
of for ``final_steps``. Each frame's metadata records the step at which it was added, so the steps
trained after the last frame are known again after a restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

from tiltstream.errors import UserError
from tiltstream.live.intake import FrameIntake, Pending
from tiltstream.live.settings import LiveSettings
from tiltstream.recon.frame_feed import add_recorded_frame
from tiltstream.recon.reconstructor import Reconstructor
from tiltstream.recon.run_dir import heldout_positions

log = logging.getLogger(__name__)

STEP_ADDED = "step_added"  # frame metadata: the reconstructor's step when the frame was added


def train_chunked(train: Callable[[int], float], steps: int, chunk_steps: int,
                  between: Callable[[float], None]) -> None:
    """Run ``steps`` training steps through ``train(n) -> loss`` in chunks of at most ``chunk_steps``;
    ``between(chunk_loss)`` after each."""
    done = 0
    while done < steps:
        n = min(chunk_steps, steps - done)
        between(train(n))
        done += n


def held_out(position: int, fraction: float) -> bool:
    """Whether the frame at ``position`` (0-based, arrival order) is held out (tiltstream.recon.run_dir's rule)."""
    return fraction > 0 and heldout_positions(position + 1, fraction)[-1:] == [position]


class Scheduler:
    """Adds frames from ``intake`` to :attr:`reconstructor` and trains it by the schedule.

    Parameters
    ----------
    settings
        :class:`tiltstream.live.settings.LiveSettings` (``steps_per_frame``, ``max_steps_per_frame``,
        ``chunk_steps``, ``final_steps``, ``holdout``, ``method``).
    intake
        Where pending frames and the frames expected come from.
    on_chunk
        Called after every chunk of training (refresh the reprojection service, publish status, progress).
    training
        Returns the context every chunk trains in (the reprojection service polls the intake meanwhile).
    """

    def __init__(self, settings: LiveSettings, intake: FrameIntake, on_chunk: Callable[[], None],
                 training: Callable[[], AbstractContextManager] = nullcontext) -> None:
        self.settings = settings
        self.intake = intake
        self.on_chunk = on_chunk
        self.training = training
        self.reconstructor: Reconstructor | None = None
        self.finite_work = settings.method == "sirt"
        self.idle = False  # the last chunk found nothing to do (SIRT with every window current)
        self.last_loss: float | None = None
        self.rate = 0.0  # steps/s over the last chunk
        self.train_s = 0.0  # seconds spent training in this process

    # ------------------------------------------------------------------ where the run stands
    def all_frames_in(self) -> bool:
        expected = self.intake.expected
        return expected is not None and self.reconstructor is not None and self.reconstructor.n_frames >= expected

    def capped_steps(self) -> int | None:
        """The continuous schedule's cap on the steps trained so far: ``max_steps_per_frame`` x frames in
        the model (None: deterministic schedule, SIRT, or no cap)."""
        cap = self.settings.max_steps_per_frame
        if self.settings.steps_per_frame is not None or self.finite_work or not cap:
            return None
        return cap * self.reconstructor.n_frames

    def _last_frame_done(self) -> int:
        """The step at which the last frame's own schedule ends: after its ``steps_per_frame``
        (deterministic), at the cap (capped continuous), when it was added (uncapped continuous)."""
        r = self.reconstructor
        last_added = max(rec.get(STEP_ADDED, 0) for rec in r.frame_records)
        done = last_added + (self.settings.steps_per_frame or 0)
        cap = self.capped_steps()
        return done if cap is None else max(done, cap)

    def steps_after_last(self) -> int:
        """Steps trained after the last expected frame's own schedule (0 until every frame is in)."""
        if not self.all_frames_in():
            return 0
        return max(self.reconstructor.steps_done - self._last_frame_done(), 0)

    def _final_steps_left(self) -> int:
        """Steps left once every frame is in: the rest of the last frame's own schedule and the final steps."""
        return max(self._last_frame_done() + self.settings.final_steps - self.reconstructor.steps_done, 0)

    def steps_allowed(self) -> int | None:
        """Steps the capped continuous schedule may train before the next frame (None: no cap)."""
        cap = self.capped_steps()
        if cap is None or self.all_frames_in():
            return None
        return max(cap - self.reconstructor.steps_done, 0)

    def finished(self) -> bool:
        """All expected frames in and the final steps done (SIRT: every window computed), or a run that
        ended with no frame."""
        if self.intake.expected == 0:
            return True
        if not self.all_frames_in() or self.intake.pending:
            return False
        if self.finite_work:
            return self.idle
        return self._final_steps_left() == 0

    def has_training_frames(self) -> bool:
        r = self.reconstructor
        return r is not None and any(not rec["held_out"] for rec in r.frame_records)

    def busy(self) -> bool:
        """Whether the next turn trains (so the stream is polled without waiting). The deterministic
        schedule trains only for a pending frame or for the final steps, the capped continuous one only
        below its cap or for the final steps: otherwise they wait on the stream instead of turning the
        loop (and publishing status) as fast as they can."""
        if not self.has_training_frames() or self.idle or self.finished():
            return False
        if bool(self.intake.pending) or self.all_frames_in():
            return True
        if self.settings.steps_per_frame is not None:
            return False
        return self.steps_allowed() != 0

    def eta_s(self) -> float | None:
        """Seconds of final steps left, at the last chunk's rate (None before the last frame)."""
        if not self.all_frames_in() or self.rate <= 0 or self.finite_work:
            return None
        return self._final_steps_left() / self.rate

    # ------------------------------------------------------------------ one turn
    def add_pending(self, limit: int | None = None) -> list[Pending]:
        """Add up to ``limit`` pending frames (all by default), with their dose and temperature as
        metadata; bad frames are logged and skipped."""
        added = []
        pending = self.intake.pending
        r = self.reconstructor
        while pending and (limit is None or len(added) < limit):
            item = pending.popleft()
            try:
                add_recorded_frame(r, item.header, item.frame, held_out=held_out(r.n_frames, self.settings.holdout),
                                   **{STEP_ADDED: r.steps_done})
            except UserError as exc:
                log.warning("skipped frame %d: %s", item.header.index, exc)
                continue
            self.idle = False
            added.append(item)
        return added

    def _chunk_done(self, loss: float, steps: int, seconds: float) -> None:
        self.last_loss = loss
        self.rate = steps / seconds if seconds > 0 else 0.0
        self.train_s += seconds
        self.on_chunk()

    def _train(self, steps: int) -> float:
        """One chunk of ``steps`` steps inside :attr:`training`; its mean loss."""
        with self.training():
            return self.reconstructor.train(steps=steps)

    def _timed_chunk(self, steps: int) -> None:
        r = self.reconstructor
        started, before = time.monotonic(), r.steps_done
        loss = self._train(steps)
        self.idle = r.steps_done == before
        self._chunk_done(loss, r.steps_done - before, time.monotonic() - started)

    def advance(self) -> list[Pending]:
        """Add frames and train by the schedule; returns the frames added."""
        s = self.settings
        r = self.reconstructor
        if s.steps_per_frame is not None:
            added = self.add_pending(limit=1)
            for _ in added:
                started, before = time.monotonic(), r.steps_done

                def between(loss: float) -> None:
                    self._chunk_done(loss, r.steps_done - before, time.monotonic() - started)

                train_chunked(self._train, s.steps_per_frame, s.chunk_steps, between)
            if not added and self.all_frames_in():
                if self.finite_work and not self.idle:
                    self._timed_chunk(s.chunk_steps)
                elif not self.finite_work and self._final_steps_left() > 0:
                    self._timed_chunk(min(s.chunk_steps, self._final_steps_left()))
            return added
        added = self.add_pending()
        if self.has_training_frames() and not self.finished():
            steps = s.chunk_steps
            allowed = self.steps_allowed()
            if allowed is not None:
                steps = min(steps, allowed)
            if self.all_frames_in() and not self.finite_work:
                steps = min(steps, self._final_steps_left())
            if steps > 0:
                self._timed_chunk(steps)
        return added
