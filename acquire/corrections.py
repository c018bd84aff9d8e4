"""What to send before each frame to keep the specimen put and in focus, and the limits it must stay within.

Pure except for the optional :class:`tiltstream.acquire.model_link.ModelLink` read: :class:`TrackingLoop` turns the
tracker's prediction (:mod:`tiltstream.acquire.tracking`) and the focus model (:mod:`tiltstream.acquire.focus`) into a
:class:`CorrectionCommand`; :func:`limit_violation` says whether a command leaves the configured limits. With
``track="model"`` each frame is measured against the live model's reprojection when
:class:`tiltstream.acquire.model_reference.ModelReference` judges it good enough, else against the previous frames.
The executor (the one place with side effects) checks, sends and records.

Conventions (the simulator's; a real microscope needs its image-shift and stage axes calibrated to the
image, which is not done here): image shift and stage x/y move the image by the same amount and sign
along the frame's x (columns) and y (rows); the correction in effect is the image shift and stage x/y
moved since the run's start.

Centring (``centre=True``): the target is the frame centre, not where the first frame had the specimen.
Each frame's thresholded centre of mass (:mod:`tiltstream.acquire.centring`) says where the specimen sits
relative to the centre; until the tracker has :data:`CENTRE_WARMUP_FRAMES` trusted frames the correction
is predicted from these alone (``x0 + z sin(alpha)`` fitted as soon as two angles are in, so the first
large GRS jumps are pre-corrected), then from the tracker's positions moved by the first frame's offset
from the centre (the median over the frames of centre of mass minus tracked position). The centring part
is kept within the image-shift limit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from tiltstream.acquire.centring import specimen_offset_px
from tiltstream.acquire.focus import tilt_model_defocus_m
from tiltstream.acquire.model_reference import MAX_ERROR_PERCENT, ModelReference, ModelSource
from tiltstream.acquire.session import FrameRecord, StagePosition, TrackingRecord
from tiltstream.acquire.tracking import Tracker, fit_eucentric

TrackMode = Literal["off", "previous", "model"]
FocusMode = Literal["off", "tilt-model", "measure"]
CENTRE_WARMUP_FRAMES = 8  # trusted tracked frames before the tracker's positions take over from the centroids


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
        Source of reprojections for ``track="model"`` (anything with ``answer(angle_deg, time_s)`` like
        :class:`tiltstream.acquire.model_link.ModelLink`; when it has none, or none good enough, the previous
        frames are the reference).
    model_max_error_percent
        Largest scale-free prediction error of the model's reprojection for the frame for it to be used,
        percent (:func:`tiltstream.acquire.model_reference.fitted_error_percent`).
    sweep_every
        ``focus="measure"``: a sharpness sweep before every this many frames.
    sweep_step_m
        ``focus="measure"``: defocus step of the sweep, metres.
    centre
        Bring the specimen to the frame centre from the second frame on (with ``track`` on only).
    """

    def __init__(self, track: TrackMode, focus: FocusMode, pixel_size_nm: float, *, lost_quality: float = 0.3,
                 model: ModelSource | None = None, model_max_error_percent: float = MAX_ERROR_PERCENT,
                 sweep_every: int = 10, sweep_step_m: float = 50e-9, centre: bool = False) -> None:
        self.track = track
        self.focus = focus
        self.tracker = Tracker(pixel_size_nm=pixel_size_nm, lost_quality=lost_quality)
        self.model = None if model is None or track != "model" else ModelReference(model, model_max_error_percent)
        self.sweep_every = int(sweep_every)
        self.sweep_step_m = float(sweep_step_m)
        self.start: OpticsState | None = None
        self.focus_offset_m = 0.0  # measured focus minus the tilt model, from the last sweep
        self.frames_seen = 0
        self.centre = bool(centre) and track != "off"
        self.centroids_nm: list[tuple[float, float, float]] = []  # (alpha deg, uncorrected x, y nm from the centre)
        self.first_offsets_px: list[tuple[float, float]] = []  # the first frame's offset from the centre, per frame

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
            frame, correction_nm = load_frame(record), correction_in_effect_nm(state, self.start)
            self.tracker.add_known(record.index, record.angle_deg, frame, record.tracking.shift_px, correction_nm)
            if self.centre:
                self._observe_centre(record.angle_deg, frame, correction_nm, record.tracking.shift_px)
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
            wanted_nm = self._wanted_nm(alpha_deg, limits)
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
        if self.model is not None:
            reference = self.model.reference(index, alpha_deg, frame, time_s, self.tracker)
        mode = "previous" if reference is None else "model"
        correction_nm = correction_in_effect_nm(state, self.start)
        found = self.tracker.measure(index, alpha_deg, frame, correction_nm, model_reference=reference)
        if self.centre:
            self._observe_centre(alpha_deg, frame, correction_nm, found.position_px)
        pixel_nm = self.tracker.pixel_size_nm
        shift_px = None if found.lost else found.position_px
        return TrackingRecord(
            mode=mode, reference=found.reference, shift_px=shift_px,
            shift_nm=None if shift_px is None else (shift_px[0] * pixel_nm, shift_px[1] * pixel_nm),
            peak_quality=found.peak_quality, lost=found.lost, image_shift_m=state.image_shift_m,
            defocus_m=state.defocus_m if self.focus != "off" else None)

    # -- centring --------------------------------------------------------------------------------
    def _wanted_nm(self, alpha_deg: float, limits: CorrectionLimits) -> tuple[float, float] | None:
        """The correction in effect (x, y nm) wanted at ``alpha_deg``: the tracker's, centred when asked."""
        if self.centre and sum(o.trusted for o in self.tracker.observations) < CENTRE_WARMUP_FRAMES:
            predicted = self._centroid_correction_nm(alpha_deg)
            if predicted is not None:
                return predicted
        wanted = self.tracker.correction_for(alpha_deg)
        if wanted is None or not self.centre:
            return wanted
        limit_nm = limits.image_shift_m * 1e9
        offset_nm = [float(np.clip(v * self.tracker.pixel_size_nm, -limit_nm, limit_nm)) for v in self.first_offset_px]
        return wanted[0] - offset_nm[0], wanted[1] - offset_nm[1]

    @property
    def first_offset_px(self) -> tuple[float, float]:
        """The first frame's specimen offset from the frame centre (x, y), pixels: the median over the frames of
        centre of mass minus tracked position (0 on an axis never measured)."""
        if not self.first_offsets_px:
            return 0.0, 0.0
        offsets = np.array(self.first_offsets_px)
        return tuple(0.0 if np.isnan(axis).all() else float(np.nanmedian(axis)) for axis in offsets.T)  # type: ignore

    def _observe_centre(self, alpha_deg: float, frame: np.ndarray, correction_nm: tuple[float, float],
                        position_px: tuple[float, float]) -> None:
        """Take a frame's centre of mass: as an uncorrected position for the prediction, and as an estimate of
        the first frame's offset from the centre (with its tracked position)."""
        x_px, y_px = specimen_offset_px(frame)
        pixel_nm = self.tracker.pixel_size_nm
        self.centroids_nm.append((float(alpha_deg), x_px * pixel_nm - correction_nm[0],
                                  y_px * pixel_nm - correction_nm[1]))
        self.first_offsets_px.append((x_px - position_px[0], y_px - position_px[1]))
        self.tracker.target_px = tuple(-v for v in self.first_offset_px)  # type: ignore[assignment]

    def _centroid_correction_nm(self, alpha_deg: float) -> tuple[float, float] | None:
        """The correction that puts the centre of mass on the frame centre at ``alpha_deg``, from the centroids:
        the last one moved along the height fitted to them (once two angles are in), negated."""
        rows = np.array(self.centroids_nm).reshape(-1, 3)
        known_x = rows[np.isfinite(rows[:, 1])]
        if not known_x.size:
            return None
        z_nm = fit_eucentric(known_x[:, 0], known_x[:, 1], np.zeros(len(known_x))).z_nm
        step = math.sin(math.radians(alpha_deg)) - math.sin(math.radians(float(known_x[-1, 0])))
        known_y = rows[np.isfinite(rows[:, 2]), 2]
        return -(float(known_x[-1, 1]) + z_nm * step), -(float(known_y[-1]) if known_y.size else 0.0)
