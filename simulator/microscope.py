"""The simulated STEM microscope: a temscript ``BaseMicroscope`` backend over a dynamic specimen.

:class:`SimulatedMicroscope` answers the calls the bridge uses (docs/design.md 4), accepts and
remembers every other one as temscript's ``NullMicroscope`` does, and reports its probe current, pixel
size and detected fraction per unit. A clock (:mod:`tiltstream.simulator.clock`) drives the specimen and
frame times; images are rendered at the true angle (:mod:`tiltstream.simulator.stage`) and
:attr:`SimulatedMicroscope.frames` logs each one. Time, dose and eucentric height: docs/method.md 4;
the correction sign convention: docs/design.md 4.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from math import degrees, radians
from typing import Protocol

import numpy as np
import torch
from scipy.constants import elementary_charge as ELEMENTARY_CHARGE_C
from temscript import NullMicroscope
from temscript.base_microscope import parse_enum
from temscript.enums import InstrumentMode
from temscript.version import __version__ as temscript_version

from tiltstream.recon.device import resolve_device
from tiltstream.simulator.clock import Clock, WallClock
from tiltstream.simulator.detector import DetectorConfig, DetectorModel
from tiltstream.simulator.faults import FaultInjector
from tiltstream.simulator.phantoms import make_phantom
from tiltstream.simulator.settings import SimSettings
from tiltstream.simulator.stage import SimulatedStage
from tiltstream.simulator.tiltseries import project_at

DETECTORS = ("HAADF", "BF")
SIZE_DIVISORS = {"FULL": 1, "HALF": 2, "QUARTER": 4}


class Specimen(Protocol):
    """What the microscope images: projected mass at a true angle and a clock time."""

    shape: tuple[int, int]
    through_detector: bool  # False: frames are recorded images, returned as they are

    def frame(self, true_alpha_deg: float, time_s: float) -> np.ndarray:
        """Projected mass (ny, nx) float32 at the given true tilt (degrees) and time (seconds)."""


class PhantomSpecimen:
    """A dynamic phantom whose step advances with clock time.

    Parameters
    ----------
    volumes
        (T, Z, Y, X) float32 series (:func:`tiltstream.simulator.phantoms.make_phantom`).
    seconds_per_step
        Clock seconds per phantom step.
    device
        Torch device of the projection.
    """

    through_detector = True

    def __init__(self, volumes: np.ndarray, seconds_per_step: float, device: torch.device) -> None:
        self.volumes = volumes
        self.seconds_per_step = float(seconds_per_step)
        self.device = device
        self.shape = (volumes.shape[2], volumes.shape[3])

    def step_at(self, time_s: float) -> int:
        """Phantom step shown at ``time_s`` seconds (clamped to 0..T-1)."""
        return int(min(max(time_s // self.seconds_per_step, 0), len(self.volumes) - 1))

    def frame(self, true_alpha_deg: float, time_s: float) -> np.ndarray:
        volume = torch.from_numpy(self.volumes[self.step_at(time_s)]).to(self.device)
        return project_at(volume, true_alpha_deg)


@dataclass(frozen=True)
class FrameLog:
    """One acquired image: exposure midpoint (s), reported and true alpha (deg), dose (e/A^2), detectors,
    the deterministic image displacement (x, y) in metres (drift excluded), the probe blur in unbinned pixels
    and the first detector's random drift (x, y) in unbinned pixels."""

    time_s: float
    reported_deg: float
    true_deg: float
    dose_e_per_A2: float
    detectors: tuple[str, ...]
    displacement_m: tuple[float, float] = (0.0, 0.0)
    blur_px: float = 0.0
    drift_px: tuple[float, float] = (0.0, 0.0)


def _bin(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor x factor`` blocks (edges that do not fill a block are cut)."""
    if factor == 1:
        return image
    ny, nx = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    return image[:ny, :nx].reshape(ny // factor, factor, nx // factor, factor).mean(axis=(1, 3))


class SimulatedMicroscope(NullMicroscope):
    """A STEM microscope with a simulated holder, specimen, detector, dose and clock.

    Parameters
    ----------
    settings
        Simulator settings (``mode`` instant/realistic, stage, clock, detector).
    clock
        Time source; a :class:`~tiltstream.simulator.clock.WallClock` with ``settings.time_factor`` by default.
    specimen
        What is imaged; by default the phantom of ``settings`` (generated here).
    """

    def __init__(self, settings: SimSettings | None = None, clock: Clock | None = None,
                 specimen: Specimen | None = None) -> None:
        super().__init__(wait_exposure=False)
        self.settings = settings = settings or SimSettings()
        self.clock: Clock = clock or WallClock(settings.time_factor)
        self.instant = settings.mode == "instant"
        if specimen is None:
            device = resolve_device(settings.device)
            volumes = make_phantom(settings.phantom, settings.size, settings.steps, seed=settings.seed,
                                   device=device)
            specimen = PhantomSpecimen(volumes, settings.seconds_per_step, device)
        self.specimen = specimen
        self.stage = SimulatedStage(self.clock, instant=self.instant,
                                    tilt_speed_deg_per_s=settings.tilt_speed_deg_per_s,
                                    settle_s=settings.settle_s, backlash_deg=settings.backlash_deg,
                                    min_deg=settings.alpha_min_deg, max_deg=settings.alpha_max_deg)
        self.faults = FaultInjector()
        config = DetectorConfig(pixel_size_nm=settings.pixel_size_nm, noise=settings.noise,
                                efficiency=settings.haadf_efficiency, read_noise=settings.read_noise,
                                drift_px_per_frame=settings.drift_px_per_frame,
                                scan_jitter=settings.scan_jitter, shadow_start_deg=settings.shadow_start_deg,
                                shadow_strength=settings.shadow_strength)
        self.detectors = {name: DetectorModel(config, seed=settings.seed + 1 + i)
                          for i, name in enumerate(DETECTORS)}
        self._stem_acq_param["dwell_time(s)"] = settings.dwell_time_s
        self._convergence_angle = settings.convergence_mrad * 1e-3
        self._stage_start = dict(self._stage_pos)
        self._instrument_mode = InstrumentMode.STEM
        self.frames: list[FrameLog] = []
        self.requests: list[tuple[str, str]] = []  # (HTTP method, endpoint) of every bridge request served
        self._lock = threading.RLock()
        self._beam_on_since: float | None = self.clock.now_s()
        self._beam_dose = 0.0  # dose of closed unblanked intervals
        self._instant_dose = 0.0  # frame doses that took no clock time

    # --- identity -------------------------------------------------------------------------------
    def get_family(self) -> str:
        return "SIMULATED"

    def get_version(self) -> str:
        return temscript_version

    # --- stage ----------------------------------------------------------------------------------
    @property
    def commanded_moves(self):
        """Every alpha command received: list of :class:`~tiltstream.simulator.stage.CommandedMove` (time s, deg)."""
        return self.stage.commanded_moves

    @property
    def true_alpha_deg(self) -> float:
        """Specimen tilt now, degrees (reported angle plus backlash offset)."""
        return self.stage.true_deg()

    def get_stage_status(self) -> str:
        return self.stage.status()

    def get_stage_limits(self) -> dict[str, tuple[float, float]]:
        limits = super().get_stage_limits()
        limits["a"] = (radians(self.stage.min_deg), radians(self.stage.max_deg))
        return limits

    def get_stage_position(self) -> dict[str, float]:
        position = dict(self._stage_pos)
        position["a"] = radians(self.stage.reported_deg())
        return position

    def _set_stage_position(self, pos=None, method="GO", speed=None) -> None:
        if method not in ("GO", "MOVE"):
            raise ValueError(f"unknown stage movement method {method!r}; allowed: GO, MOVE")
        pos = dict(pos or {})
        limits = super().get_stage_limits()
        for key in ("x", "y", "z", "b"):
            if key in pos:
                low, high = limits[key]
                if not low <= float(pos[key]) <= high:
                    raise ValueError(f"stage {key} = {pos[key]} is outside the limits [{low}, {high}]")
        if "a" in pos:
            self.stage.command(degrees(float(pos["a"])), speed=speed, method=method)
        for key in ("x", "y", "z", "b"):
            if key in pos:
                self._stage_pos[key] = float(pos[key])

    # --- eucentric height and focus -------------------------------------------------------------------
    def get_image_shift(self) -> tuple[float, float]:
        return float(self._image_shift[0]), float(self._image_shift[1])

    def displacement_m(self, true_alpha_deg: float) -> tuple[float, float]:
        """Image displacement (x, y) at ``true_alpha_deg``, metres: eucentric offset + image shift + stage x/y."""
        offset_m = self.settings.eucentric_offset_nm * 1e-9
        shift = self.get_image_shift()
        return (float(offset_m * np.sin(radians(true_alpha_deg)) + shift[0] + self._stage_pos["x"]
                      - self._stage_start["x"]),
                float(shift[1] + self._stage_pos["y"] - self._stage_start["y"]))

    def height_error_m(self, true_alpha_deg: float) -> float:
        """Specimen height minus probe focus at ``true_alpha_deg``, metres (0: in focus)."""
        offset_m = self.settings.eucentric_offset_nm * 1e-9
        return float(offset_m * (np.cos(radians(true_alpha_deg)) - 1.0) + self._stage_pos["z"]
                     - self._stage_start["z"] - float(self.get_probe_defocus()))

    # --- modes, detectors -------------------------------------------------------------------------
    def is_stem_available(self) -> bool:
        return True

    def get_instrument_mode(self) -> str:
        return self._instrument_mode.name

    def set_instrument_mode(self, mode) -> None:
        self._instrument_mode = parse_enum(InstrumentMode, mode)

    def get_stem_detectors(self) -> dict[str, dict]:
        detectors = {name: {"type": "STEM_DETECTOR", "binnings": [1, 2, 4, 8]} for name in DETECTORS}
        if self.specimen.through_detector:  # recorded frames (replay) carry no counting statistics
            detectors["HAADF"]["detected_fraction_per_unit"] = self.settings.haadf_efficiency
            detectors["BF"]["detected_fraction_per_unit"] = 1.0
        return detectors

    def get_stem_acquisition_param(self) -> dict:
        param = super().get_stem_acquisition_param()
        param["pixel_size(m)"] = self.settings.pixel_size_nm * 1e-9 * self._scan_factor(param)
        return param

    def set_stem_acquisition_param(self, param, ignore_errors=False) -> None:
        param = dict(param)
        param.pop("pixel_size(m)", None)  # reported, not settable: the field of view is the specimen's
        super().set_stem_acquisition_param(param, ignore_errors=ignore_errors)

    def get_stem_detector_param(self, name):
        if name not in DETECTORS:
            raise KeyError(f"unknown STEM detector {name!r}; available: {', '.join(DETECTORS)}")
        return {"brightness": 0.5, "contrast": 0.5}

    def set_stem_detector_param(self, name, values, ignore_errors=False):
        self.get_stem_detector_param(name)

    # --- beam and dose ----------------------------------------------------------------------------
    @property
    def dose_rate_e_per_A2_s(self) -> float:
        """Dose rate with the beam unblanked, e/A^2/s: the setting, else the probe current over the full field."""
        if self.settings.dose_rate_e_per_A2_s is not None:
            return self.settings.dose_rate_e_per_A2_s
        electrons_per_s = self.settings.beam_current_pA * 1e-12 / ELEMENTARY_CHARGE_C
        return electrons_per_s / self._field_area_A2()

    def _field_area_A2(self) -> float:
        """Area of the full scanned field at the specimen, square angstrom."""
        ny, nx = self.specimen.shape
        return ny * nx * (self.settings.pixel_size_nm * 10.0) ** 2

    def get_screen_current(self) -> float:
        """The probe current, amperes: the dose rate over the field, as a current."""
        return self.dose_rate_e_per_A2_s * self._field_area_A2() * ELEMENTARY_CHARGE_C

    def get_beam_blanked(self) -> bool:
        with self._lock:
            return self._beam_on_since is None

    def set_beam_blanked(self, mode) -> None:
        with self._lock:
            now = self.clock.now_s()
            if bool(mode) and self._beam_on_since is not None:
                self._beam_dose += self.dose_rate_e_per_A2_s * (now - self._beam_on_since)
                self._beam_on_since = None
            elif not bool(mode) and self._beam_on_since is None:
                self._beam_on_since = now

    @property
    def total_dose_e_per_A2(self) -> float:
        """Cumulative dose on the specimen, e/A^2: unblanked beam time times dose rate, plus instant frames."""
        with self._lock:
            open_dose = 0.0
            if self._beam_on_since is not None:
                open_dose = self.dose_rate_e_per_A2_s * (self.clock.now_s() - self._beam_on_since)
            return self._beam_dose + open_dose + self._instant_dose

    # --- acquisition ------------------------------------------------------------------------------
    @staticmethod
    def _scan_factor(param: dict) -> int:
        """Scan step in specimen pixels: the image size divisor times the binning."""
        return SIZE_DIVISORS[param["image_size"]] * max(int(param.get("binning", 1)), 1)

    def frame_shape(self) -> tuple[int, int]:
        """Shape (ny, nx) of the next image, from the specimen shape, image size and binning."""
        factor = self._scan_factor(self.get_stem_acquisition_param())
        return self.specimen.shape[0] // factor, self.specimen.shape[1] // factor

    def acquire(self, *detectors):
        """Scan one image per named detector at the true angle; returns ``{name: float32 (ny, nx)}``."""
        unknown = [d for d in detectors if d not in DETECTORS]
        if unknown:
            raise KeyError(f"unknown detector(s) {unknown}; available: {', '.join(DETECTORS)}")
        if not detectors:
            return {}
        param = self.get_stem_acquisition_param()
        factor = self._scan_factor(param)
        ny, nx = self.frame_shape()
        exposure_s = float(param["dwell_time(s)"]) * ny * nx  # one dwell per scanned (binned) pixel
        blanked = self.get_beam_blanked()
        dose = 0.0 if blanked else self.dose_rate_e_per_A2_s * exposure_s
        if self.instant:
            time_s = self.clock.now_s()
            with self._lock:
                self._instant_dose += dose
        else:
            self.clock.wait(exposure_s / 2)
            time_s = self.clock.now_s()
        true_deg, reported_deg = self.stage.true_deg(), self.stage.reported_deg()
        mass = self.specimen.frame(true_deg, time_s)
        pixel_m = self.settings.pixel_size_nm * 1e-9
        displacement_m = self.displacement_m(true_deg)
        shift_px = (displacement_m[1] / pixel_m, displacement_m[0] / pixel_m)
        blur_px = abs(self.height_error_m(true_deg)) * float(self.get_convergence_angle()) / pixel_m
        images = {}
        for name in dict.fromkeys(detectors):
            if not self.specimen.through_detector:
                image = mass
            elif blanked:
                image = np.zeros(mass.shape, dtype=np.float32)
            else:
                image = self.detectors[name].render(mass, true_deg, dose, detector=name, shift_px=shift_px,
                                                    blur_px=blur_px)
            images[name] = _bin(image, factor).astype(np.float32)
        if not self.instant:
            self.clock.wait(exposure_s / 2)
        drift = self.detectors[detectors[0]].drift_px
        with self._lock:
            self.frames.append(FrameLog(time_s, reported_deg, true_deg, dose, tuple(images), displacement_m,
                                        blur_px, (float(drift[1]), float(drift[0]))))
        return images

