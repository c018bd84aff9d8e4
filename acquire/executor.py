"""Performs a tilt-series plan against a microscope, frame by frame: move, check, expose, record, publish.

:class:`Executor` is the one place that acts on a plan (:func:`tiltstream.acquire.backlash.plan_moves`):
per frame it moves the stage, checks the reported angle, exposes, checks the frame against its dose,
appends it durably to the session and publishes it; with tracking or focus on, each correction is
checked against its limits before it is sent. The beam is blanked whenever the stage moves and on
every way out. Between frames :class:`BetweenFrames` reaches a hook, and a pause or stop takes effect.
The sequence in full: docs/architecture.md, "A frame's path"; the bridge calls: docs/design.md 4.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from tiltstream.acquire.backlash import HolderLimits, check_backlash_config, plan_moves
from tiltstream.acquire.corrections import CorrectionCommand, CorrectionLimits, OpticsState, TrackingLoop, limit_violation
from tiltstream.acquire.focus import best_defocus_m, sharpness, sweep_defocus_m
from tiltstream.acquire.dose import camera_dose_e_per_A2, stem_dose_e_per_A2
from tiltstream.acquire.frame_check import FrameCheck
from tiltstream.errors import MicroscopeFault, UserError
from tiltstream.acquire.microscope import STAGE_READY, AcquisitionParams, Microscope
from tiltstream.acquire.publisher import FramePublisher
from tiltstream.acquire.scheme import TiltScheme, iter_targets, scheme_angle_deg
from tiltstream.acquire.session import FrameRecord, SessionWriter, TrackingRecord

log = logging.getLogger(__name__)


class StageError(MicroscopeFault):
    """The stage did not reach a target (not READY in time, or reporting another angle)."""


class TemperatureSource(Protocol):
    """Anything that gives the specimen temperature now (Celsius), or None when unknown."""

    def read_C(self) -> float | None:
        """The latest temperature, Celsius."""
        ...


@dataclass(frozen=True)
class ExecutorConfig:
    """How the executor acquires (the microscope-independent part of the acquisition settings).

    Attributes
    ----------
    detector
        Detector name (``HAADF``, ``CCD``, ...).
    params
        Acquisition parameters to set on the detector before the first frame.
    beam_current_pA
        Probe/beam current for the dose, picoampere (:func:`tiltstream.acquire.calibration.read_calibration`:
        what the microscope reports).
    pixel_size_nm
        Frame pixel size at the specimen, nanometres (likewise).
    backlash_deg
        Overshoot below a target approached from above, degrees (0: correction off).
    angle_tolerance_deg
        Largest allowed difference between the reported and the target angle, degrees.
    stage_timeout_s
        Longest wait for the stage to report READY after a move, seconds.
    poll_s
        Interval of stage status polls and pause checks, seconds.
    speed
        Stage speed factor sent with each move (None: the microscope's default).
    """

    detector: str
    params: AcquisitionParams
    beam_current_pA: float
    pixel_size_nm: float
    backlash_deg: float = 2.0
    angle_tolerance_deg: float = 0.05
    stage_timeout_s: float = 60.0
    poll_s: float = 0.05
    speed: float | None = None


@dataclass
class AcquisitionControl:
    """Pause, resume and stop a running acquisition from another thread (or a signal handler)."""

    stop_event: threading.Event = field(default_factory=threading.Event)
    pause_event: threading.Event = field(default_factory=threading.Event)

    def stop(self) -> None:
        """End the run after the current frame."""
        self.stop_event.set()

    def pause(self) -> None:
        """Hold the run before the next frame (beam blanked) until :meth:`resume`."""
        self.pause_event.set()

    def resume(self) -> None:
        """Continue a paused run."""
        self.pause_event.clear()

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested."""
        return self.stop_event.is_set()


@dataclass(frozen=True)
class BetweenFrames:
    """What a between-frames hook (tracking, focusing) gets after frame ``index`` was recorded.

    Attributes
    ----------
    index
        Index of the frame just recorded.
    angle_deg
        Stage angle it was acquired at (reported), degrees.
    target_deg
        Its target angle, degrees.
    next_target_deg
        Target of the next frame, degrees (None when this was the last).
    microscope
        The microscope (a hook may use it, e.g. to shift the beam; the beam is blanked).
    record
        The frame's session record.
    frame
        The frame itself (ny, nx), detector dtype.
    control
        The run's control (a hook may pause or stop the run).
    """

    index: int
    angle_deg: float
    target_deg: float
    next_target_deg: float | None
    microscope: Microscope
    record: FrameRecord
    frame: np.ndarray
    control: AcquisitionControl


@dataclass(frozen=True)
class FrameProgress:
    """One progress report: the frame just recorded, frames done this run, dose so far, times (s)."""

    record: FrameRecord
    done: int
    total: int | None
    elapsed_s: float
    cumulative_dose_e_per_A2: float


@dataclass(frozen=True)
class RunSummary:
    """How a run ended: frames recorded in this run, the next index, total session dose (e/A^2), why it ended."""

    frames: int
    next_index: int
    cumulative_dose_e_per_A2: float
    ended: str


def session_start_unix_s(writer: SessionWriter) -> float:
    """The session's time origin (its ``created`` timestamp), Unix seconds."""
    return dt.datetime.fromisoformat(writer.settings.created).timestamp()


class Executor:
    """Runs one acquisition: ``Executor(...).run()``.

    Parameters
    ----------
    microscope
        Any :class:`tiltstream.acquire.microscope.Microscope` (the bridge client in production).
    scheme
        The tilt scheme; ``start_index`` must equal the writer's ``next_index`` (resume).
    writer
        The session being recorded.
    config
        Detector, dose and stage settings.
    publisher
        Publishes each recorded frame (None: no stream).
    temperature
        Source of the specimen temperature per frame (None: unknown).
    between_frames
        Hook called after each recorded frame, before the stage moves on.
    control
        Pause/stop control (a fresh one by default).
    progress
        Called with a :class:`FrameProgress` after each frame.
    clock
        Wall clock, Unix seconds (``time.time``).
    sleep
        Waiting function (``time.sleep``).
    tracking
        Tracking and focus between frames (None: off).
    limits
        The range tracking and focus corrections may use.
    pause_on_lost
        Pause (beam blanked) when tracking loses the specimen, instead of only saying so.
    """

    def __init__(self, microscope: Microscope, scheme: TiltScheme, writer: SessionWriter, config: ExecutorConfig,
                 *, publisher: FramePublisher | None = None, temperature: TemperatureSource | None = None,
                 between_frames: Callable[[BetweenFrames], None] | None = None,
                 control: AcquisitionControl | None = None,
                 progress: Callable[[FrameProgress], None] | None = None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 tracking: TrackingLoop | None = None, limits: CorrectionLimits = CorrectionLimits(),
                 pause_on_lost: bool = False) -> None:
        if not isinstance(microscope, Microscope):
            raise TypeError(f"{type(microscope).__name__} does not implement tiltstream.acquire.microscope.Microscope")
        if scheme.start_index != writer.next_index:
            raise UserError(f"the scheme starts at frame {scheme.start_index} but the session continues at "
                            f"{writer.next_index}")
        self.microscope = microscope
        self.scheme = scheme
        self.writer = writer
        self.config = config
        self.publisher = publisher
        self.temperature = temperature
        self.between_frames = between_frames
        self.control = control or AcquisitionControl()
        self.progress = progress
        self.clock = clock
        self.sleep = sleep
        self.cumulative_dose_e_per_A2 = float(sum(r.dose_e_per_A2 for r in writer.records))
        self.params: AcquisitionParams | None = None
        self.tracking = tracking
        self.limits = limits
        self.pause_on_lost = pause_on_lost
        self.pause_reason: str | None = None  # the last reason the executor paused the run itself
        self._sweep_dose_e_per_A2 = 0.0  # focus-sweep dose not yet counted in a frame's record
        self.beam_blanked: bool | None = None  # whether the blank on the way out of run() was confirmed
        self.frame_check: FrameCheck | None = None  # set up with the detector in prepare()

    # -- the run -------------------------------------------------------------------------------
    def prepare(self) -> HolderLimits:
        """Check the plan against the microscope before anything moves; blank; set the detector up."""
        low_deg, high_deg = self.microscope.alpha_limits_deg()
        limits = HolderLimits(min_deg=low_deg, max_deg=high_deg)
        check_backlash_config(self.scheme, self.config.backlash_deg, limits)
        detectors = self.microscope.detectors()
        if self.config.detector not in detectors:
            raise UserError(f"detector {self.config.detector!r} is not offered by the microscope; available: "
                            f"{', '.join(sorted(detectors)) or 'none'}")
        self.microscope.set_beam_blanked(True)
        self.params = self.microscope.set_acquisition_params(self.config.detector, self.config.params)
        self.frame_check = FrameCheck(self.config.pixel_size_nm,
                                      detectors[self.config.detector].detected_fraction_per_unit)
        return limits

    def run(self) -> RunSummary:
        """Acquire until the scheme ends or a stop is requested; the beam is blanked on every way out.

        Raises
        ------
        UserError
            A limit, detector or stage problem, or a bridge that kept failing; the session stays
            consistent and resumable.
        """
        started_s = self.clock()
        done = 0
        ended = "completed"
        try:
            limits = self.prepare()
            start_deg = self.microscope.alpha_deg()
            current_index: int | None = None
            for move in plan_moves(iter_targets(self.scheme), start_deg, self.config.backlash_deg, limits):
                if move.index != current_index:  # a new frame begins: the only place a run may stop
                    current_index = move.index
                    self._wait_while_paused()
                    if self.control.stopping:
                        ended = "stopped"
                        break
                self._move(move.angle_deg)
                if move.kind != "target":
                    continue
                if self.tracking is not None and not self._correct(move.index, move.angle_deg):
                    ended = "stopped"
                    break
                record, frame = self._acquire_frame(move.index, move.angle_deg)
                done += 1
                if self.progress is not None:
                    self.progress(FrameProgress(record, done, self._remaining_total(),
                                                self.clock() - started_s, self.cumulative_dose_e_per_A2))
                if self.between_frames is not None:
                    self.between_frames(BetweenFrames(
                        index=record.index, angle_deg=record.angle_deg, target_deg=record.target_deg,
                        next_target_deg=self._next_target_deg(record.index), microscope=self.microscope,
                        record=record, frame=frame, control=self.control))
        finally:
            self._blank_best_effort()
        return RunSummary(frames=done, next_index=self.writer.next_index,
                          cumulative_dose_e_per_A2=self.cumulative_dose_e_per_A2, ended=ended)

    # -- steps ---------------------------------------------------------------------------------
    def _move(self, angle_deg: float) -> None:
        self.microscope.move_alpha_deg(angle_deg, self.config.speed)
        self._wait_ready(f"{angle_deg:.3f} deg")

    def _wait_ready(self, where: str) -> None:
        deadline = time.monotonic() + self.config.stage_timeout_s
        status = self.microscope.stage_status()
        while status != STAGE_READY:
            if time.monotonic() > deadline:
                raise StageError(f"stage not READY {self.config.stage_timeout_s:g} s after the move to "
                                 f"{where} (status {status}); run stopped with the beam blanked, "
                                 "continue with --resume once the stage is free")
            self.sleep(self.config.poll_s)
            status = self.microscope.stage_status()

    def _optics(self) -> OpticsState:
        focus = self.tracking is not None and self.tracking.focus != "off"
        return OpticsState(image_shift_m=self.microscope.image_shift_m(), stage=self.microscope.stage_position(),
                           defocus_m=self.microscope.probe_defocus_m() if focus else 0.0)

    def _correct(self, index: int, alpha_deg: float) -> bool:
        """Pre-correct frame ``index`` (beam blanked); False when the run was stopped while paused on a limit."""
        assert self.tracking is not None
        while True:
            state = self._optics()
            command = self.tracking.command_for(alpha_deg, state, self.limits)
            assert self.tracking.start is not None
            problem = limit_violation(command, self.tracking.start, self.limits)
            if problem is None:
                break
            self.pause_reason = problem
            log.error("frame %d at %.2f deg: tracking correction refused: %s; nothing sent, run paused with the "
                      "beam blanked (Ctrl-C ends it; --resume continues the session)", index, alpha_deg, problem)
            self.control.pause()
            self._wait_while_paused()
            if self.control.stopping:
                return False
        self._send(command)
        if self.tracking.sweep_due():
            self._focus_sweep(alpha_deg)
        return True

    def _focus_sweep(self, alpha_deg: float) -> None:
        """Scan at defocus values around the current one (those within the limit), set the sharpest."""
        assert self.tracking is not None and self.tracking.start is not None
        centre_m = self.microscope.probe_defocus_m()
        tried_m, values = [], []
        for defocus_m in sweep_defocus_m(centre_m, self.tracking.sweep_step_m):
            if limit_violation(CorrectionCommand(defocus_m=float(defocus_m)), self.tracking.start, self.limits):
                continue
            self.microscope.set_probe_defocus_m(float(defocus_m))
            self.microscope.set_beam_blanked(False)
            try:
                scan = self.microscope.acquire(self.config.detector)
            finally:
                self.microscope.set_beam_blanked(True)
            self._sweep_dose_e_per_A2 += self._exposure_and_dose(scan.shape)[1]
            tried_m.append(float(defocus_m))
            values.append(sharpness(scan))
        best_m = best_defocus_m(np.array(tried_m), np.array(values)) if tried_m else centre_m
        self.microscope.set_probe_defocus_m(best_m)
        self.tracking.sweep_found(alpha_deg, best_m)
        log.info("focus sweep at %.2f deg: sharpest at %.1f nm defocus (%d scans)", alpha_deg, best_m * 1e9,
                 len(tried_m))

    def _send(self, command: CorrectionCommand) -> None:
        """Send a checked correction: stage x/y (waiting for READY), image shift, defocus."""
        if command.stage_xy_m is not None:
            self.microscope.move_stage_xy_m(*command.stage_xy_m)
            self._wait_ready(f"stage x/y ({command.stage_xy_m[0] * 1e9:.0f}, {command.stage_xy_m[1] * 1e9:.0f}) nm")
        if command.image_shift_m is not None:
            self.microscope.set_image_shift_m(command.image_shift_m)
        if command.defocus_m is not None:
            self.microscope.set_probe_defocus_m(command.defocus_m)

    def _track(self, index: int, angle_deg: float, frame: np.ndarray, state: OpticsState,
               time_s: float) -> TrackingRecord:
        assert self.tracking is not None
        tracking = self.tracking.measure(index, angle_deg, frame, state, time_s)
        if tracking.lost:
            threshold = self.tracking.tracker.lost_quality
            if self.pause_on_lost:
                self.pause_reason = f"tracking lost the specimen at frame {index}"
                self.control.pause()
                log.error("tracking lost the specimen at frame %d (correlation peak %.2f < %.2f); run paused with "
                          "the beam blanked (Ctrl-C ends it; --resume continues the session)", index,
                          tracking.peak_quality, threshold)
            else:
                log.warning("tracking lost the specimen at frame %d (correlation peak %.2f < %.2f); its shift is "
                            "not used", index, tracking.peak_quality, threshold)
        return tracking

    def _acquire_frame(self, index: int, target_deg: float) -> tuple[FrameRecord, np.ndarray]:
        angle_deg = self.microscope.alpha_deg()
        if abs(angle_deg - target_deg) > self.config.angle_tolerance_deg:
            raise StageError(f"stage reports {angle_deg:.4f} deg after the move to {target_deg:.4f} deg for frame "
                             f"{index} (tolerance {self.config.angle_tolerance_deg:g} deg); run stopped with the "
                             "beam blanked, continue with --resume")
        state = self._optics() if self.tracking is not None else None
        stage = state.stage if state is not None else self.microscope.stage_position()
        self.microscope.set_beam_blanked(False)
        try:
            begin_s = self.clock()
            frame = self.microscope.acquire(self.config.detector)
            end_s = self.clock()
        finally:
            self.microscope.set_beam_blanked(True)
        temperature_C = self.temperature.read_C() if self.temperature is not None else None
        exposure_s, dose = self._exposure_and_dose(frame.shape)
        if self.frame_check is not None:
            self.frame_check.check(index, frame, dose)
        dose, self._sweep_dose_e_per_A2 = dose + self._sweep_dose_e_per_A2, 0.0  # a focus sweep's dose counts here
        self.cumulative_dose_e_per_A2 += dose
        time_s = 0.5 * (begin_s + end_s) - session_start_unix_s(self.writer)
        extra = {} if state is None else {"tracking": self._track(index, angle_deg, frame, state, time_s)}
        record = self.writer.append(
            frame, index=index, target_deg=target_deg, angle_deg=angle_deg, time_s=time_s, exposure_s=exposure_s,
            dose_e_per_A2=dose, temperature_C=temperature_C, stage=stage, **extra)
        if self.publisher is not None:
            self.publisher.publish(record, frame)
        return record, frame

    def _exposure_and_dose(self, shape: tuple[int, int]) -> tuple[float, float]:
        params = self.params or self.config.params
        if params.dwell_time_s is not None:
            dose = stem_dose_e_per_A2(self.config.beam_current_pA, params.dwell_time_s, self.config.pixel_size_nm)
            return params.dwell_time_s * shape[0] * shape[1], dose
        exposure_s = float(params.exposure_s or 0.0)
        return exposure_s, camera_dose_e_per_A2(self.config.beam_current_pA, exposure_s,
                                                self.config.pixel_size_nm, shape)

    def _wait_while_paused(self) -> None:
        announced = False
        while self.control.pause_event.is_set() and not self.control.stopping:
            if not announced:
                log.info("paused before frame %d (beam blanked)", self.writer.next_index)
                announced = True
            self.sleep(self.config.poll_s)

    def _blank_best_effort(self) -> None:
        try:
            self.microscope.set_beam_blanked(True)
            self.beam_blanked = True
        except Exception as exc:  # the run is ending anyway; say so loudly
            self.beam_blanked = False
            log.error("could not blank the beam at the end of the run: %s", exc)

    def _remaining_total(self) -> int | None:
        end = self.scheme.end_index
        return None if end is None else end - self.scheme.start_index

    def _next_target_deg(self, index: int) -> float | None:
        end = self.scheme.end_index
        if end is not None and index + 1 >= end:
            return None
        return scheme_angle_deg(self.scheme, index + 1)
