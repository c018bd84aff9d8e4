"""What to send before each frame to keep the specimen put and in focus, and the limits it must stay within.

Pure except for the optional :class:`tiltstream.acquire.model_link.ModelLink` read: :class:`TrackingLoop` turns the
tracker's prediction (:mod:`tiltstream.acquire.tracking`) and the focus model (:mod:`tiltstream.acquire.focus`) into a
:class:`CorrectionCommand`; :func:`limit_violation` says whether a command leaves the configured limits.
The executor (the one place with side effects) checks, sends and records.

Conventions (the simulator's; a real microscope needs its image-shift and stage axes calibrated to the
image, which is not done here): image shift and stage x/y move the image by the same amount and sign
along the frame's x (columns) and y (rows); the correction in effect is the image shift and stage x/y
moved since the run's start.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from tiltstream.acquire.focus import tilt_model_defocus_m
from tiltstream.acquire.session import FrameRecord, StagePosition, TrackingRecord
from tiltstream.acquire.tracking import Tracker

log = logging.getLogger(__name__)

TrackMode = Literal["off", "previous", "model"]
FocusMode = Literal["off", "tilt-model", "measure"]


@dataclass(frozen=True)
class CorrectionLimits:
    """The range corrections may use; nothing outside is ever sent.

    Attributes
    ----------
    image_shift_m
        Largest |image shift| per axis, metres.
    stage_xy_travel_m
        Largest stage x or y distance from where the run started, metres. (Stage z is never moved: the
        probe defocus follows the height.)
    defocus_m
        Largest |probe defocus|, metres.
    """

    image_shift_m: float = 2e-6
    stage_xy_travel_m: float = 5e-6
    defocus_m: float = 2e-6


@dataclass(frozen=True)
class OpticsState:
    """Image shift (x, y) m, stage position (m) and probe defocus (m) as the microscope reports them."""

    image_shift_m: tuple[float, float]
    stage: StagePosition
    defocus_m: float


@dataclass(frozen=True)
class CorrectionCommand:
    """Absolute values to set before a frame; None leaves that setting alone."""

    image_shift_m: tuple[float, float] | None = None
    stage_xy_m: tuple[float, float] | None = None
    defocus_m: float | None = None


def correction_in_effect_nm(state: OpticsState, start: OpticsState) -> tuple[float, float]:
    """Image displacement (x, y) the corrections produce now: image shift plus stage x/y moved since the start, nm."""
    return ((state.image_shift_m[0] - start.image_shift_m[0] + state.stage.x - start.stage.x) * 1e9,
            (state.image_shift_m[1] - start.image_shift_m[1] + state.stage.y - start.stage.y) * 1e9)


def lateral_command(wanted_nm: tuple[float, float], state: OpticsState, start: OpticsState,
                    limits: CorrectionLimits) -> CorrectionCommand:
    """Image shift that makes the correction in effect ``wanted_nm``; when that image shift would leave
    its range, the stage x/y takes the whole correction instead and the image shift returns to its start."""
    stage_dx_m = state.stage.x - start.stage.x
    stage_dy_m = state.stage.y - start.stage.y
    shift_m = (start.image_shift_m[0] + wanted_nm[0] * 1e-9 - stage_dx_m,
               start.image_shift_m[1] + wanted_nm[1] * 1e-9 - stage_dy_m)
    if max(abs(shift_m[0]), abs(shift_m[1])) <= limits.image_shift_m:
        return CorrectionCommand(image_shift_m=shift_m)
    return CorrectionCommand(image_shift_m=start.image_shift_m,
                             stage_xy_m=(start.stage.x + wanted_nm[0] * 1e-9, start.stage.y + wanted_nm[1] * 1e-9))


def limit_violation(command: CorrectionCommand, start: OpticsState, limits: CorrectionLimits) -> str | None:
    """The first way ``command`` leaves ``limits`` (one line), or None when it stays within them."""
    if command.image_shift_m is not None:
        worst = max(abs(command.image_shift_m[0]), abs(command.image_shift_m[1]))
        if not math.isfinite(worst) or worst > limits.image_shift_m:
            return (f"image shift ({command.image_shift_m[0] * 1e9:.1f}, {command.image_shift_m[1] * 1e9:.1f}) nm "
                    f"is outside +-{limits.image_shift_m * 1e9:.0f} nm")
    if command.stage_xy_m is not None:
        travel = max(abs(command.stage_xy_m[0] - start.stage.x), abs(command.stage_xy_m[1] - start.stage.y))
        if not math.isfinite(travel) or travel > limits.stage_xy_travel_m:
            return (f"stage x/y {travel * 1e9:.0f} nm from the run's start is beyond the "
                    f"{limits.stage_xy_travel_m * 1e9:.0f} nm travel limit")
    if command.defocus_m is not None and (not math.isfinite(command.defocus_m)
                                          or abs(command.defocus_m) > limits.defocus_m):
        return f"probe defocus {command.defocus_m * 1e9:.1f} nm is outside +-{limits.defocus_m * 1e9:.0f} nm"
    return None


class TrackingLoop:
    """Tracking and focus state of one run: what to set before each frame, what to record after it.

    Parameters
    ----------
    track
        ``previous`` or ``model`` (``off`` with a focus mode: focus only, no lateral correction).
    focus
        ``off``, ``tilt-model`` or ``measure`` (the executor runs the sweeps of ``measure``).
    pixel_size_nm
        Frame pixel size, nanometres.
    lost_quality
        Correlation peaks below this mark the specimen lost.
    model
        Source of reprojections for ``track="model"`` (anything with ``reprojection(angle_deg, time_s)``,
        returning None when it has none; then the previous frames are the reference).
    sweep_every
        ``focus="measure"``: a sharpness sweep before every this many frames.
    sweep_step_m
        ``focus="measure"``: defocus step of the sweep, metres.
    """

    def __init__(self, track: TrackMode, focus: FocusMode, pixel_size_nm: float, *, lost_quality: float = 0.3,
                 model: object | None = None, sweep_every: int = 10, sweep_step_m: float = 50e-9) -> None:
        self.track = track
        self.focus = focus
        self.tracker = Tracker(pixel_size_nm=pixel_size_nm, lost_quality=lost_quality)
        self.model = model
        self.sweep_every = int(sweep_every)
        self.sweep_step_m = float(sweep_step_m)
        self.start: OpticsState | None = None
        self.focus_offset_m = 0.0  # measured focus minus the tilt model, from the last sweep
        self.frames_seen = 0

    def seed(self, records: Sequence[FrameRecord], load_frame: Callable[[FrameRecord], np.ndarray],
             keep: int = 100) -> int:
        """Continue a resumed session's tracking: its first tracked frame's optics become the start, and that
        frame plus the last ``keep`` trusted ones are known positions. Returns the number of frames taken."""
        tracked = [r for r in records if r.tracking is not None]
        if not tracked:
            return 0
        first = tracked[0]
        self.start = OpticsState(image_shift_m=first.tracking.image_shift_m, stage=first.stage,
                                 defocus_m=first.tracking.defocus_m or 0.0)
        known = [r for r in tracked[1:] if r.tracking.shift_px is not None][-keep:]
        for record in [first, *known]:
            if record.tracking.shift_px is None:
                continue
            state = OpticsState(record.tracking.image_shift_m, record.stage, record.tracking.defocus_m or 0.0)
            self.tracker.add_known(record.index, record.angle_deg, load_frame(record), record.tracking.shift_px,
                                   correction_in_effect_nm(state, self.start))
        self.frames_seen = len(records)
        return len(self.tracker.observations)

    def sweep_due(self) -> bool:
        """Whether the next frame gets a sharpness sweep first (``focus="measure"``, every ``sweep_every``)."""
        return self.focus == "measure" and self.frames_seen % self.sweep_every == 0

    def sweep_found(self, alpha_deg: float, best_m: float) -> None:
        """Remember a sweep's sharpest defocus at ``alpha_deg`` as an offset to the tilt model."""
        self.focus_offset_m = best_m - self._model_defocus_m(alpha_deg)

    def _model_defocus_m(self, alpha_deg: float) -> float:
        assert self.start is not None
        fit = self.tracker.fit()
        z_nm = fit.z_nm if fit is not None else 0.0
        return tilt_model_defocus_m(z_nm, alpha_deg, self.start.defocus_m)

    def command_for(self, alpha_deg: float, state: OpticsState, limits: CorrectionLimits) -> CorrectionCommand:
        """What to set before the frame at ``alpha_deg`` given the microscope's ``state`` now."""
        if self.start is None:
            self.start = state
        command = CorrectionCommand()
        if self.track != "off":
            wanted_nm = self.tracker.correction_for(alpha_deg)
            if wanted_nm is not None:
                command = lateral_command(wanted_nm, state, self.start, limits)
        if self.focus != "off" and self.tracker.fit() is not None:
            command = replace(command, defocus_m=self._model_defocus_m(alpha_deg) + self.focus_offset_m)
        return command

    def measure(self, index: int, alpha_deg: float, frame: np.ndarray, state: OpticsState,
                time_s: float | None = None) -> TrackingRecord:
        """Measure the frame just recorded with ``state`` in effect; returns its ``tracking`` record."""
        if self.start is None:
            self.start = state
        self.frames_seen += 1
        reference = None
        mode = "previous"
        if self.track == "model" and self.model is not None:
            reference = self.model.reprojection(alpha_deg, time_s)
            if reference is not None:
                mode = "model"
            else:
                log.debug("no model reprojection for frame %d; measuring against the previous frames", index)
        correction_nm = correction_in_effect_nm(state, self.start)
        found = self.tracker.measure(index, alpha_deg, frame, correction_nm, model_reference=reference)
        pixel_nm = self.tracker.pixel_size_nm
        shift_px = None if found.lost else found.position_px
        return TrackingRecord(
            mode=mode, reference=found.reference, shift_px=shift_px,
            shift_nm=None if shift_px is None else (shift_px[0] * pixel_nm, shift_px[1] * pixel_nm),
            peak_quality=found.peak_quality, lost=found.lost, image_shift_m=state.image_shift_m,
            defocus_m=state.defocus_m if self.focus != "off" else None)
