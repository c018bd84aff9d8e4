"""The microscope as the executor sees it: a small typed Protocol (degrees at this surface), and its value types.

Only what a continuous tilt series needs: stage alpha (read, move, status, limits), stage position for
the record, beam blanking, detectors, acquisition parameters and one acquisition, the pixel size and
beam current the microscope reports (for the record and the dose); for tracking and
focus only, image shift, probe defocus and stage x/y/z moves (the executor checks every value against
its configured limits before it calls them). The bridge client
(:mod:`tiltstream.acquire.bridge`) implements it over the temscript v1 HTTP API; anything else that satisfies it
(a test double, a future direct backend) drives the same executor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from tiltstream.acquire.session import StagePosition

DetectorKind = Literal["stem", "camera"]
ImageSize = Literal["FULL", "HALF", "QUARTER"]
STAGE_READY = "READY"


@dataclass(frozen=True)
class DetectorInfo:
    """One detector the microscope offers.

    Attributes
    ----------
    name
        The name the microscope uses (``"HAADF"``, ``"CCD"``, ...).
    kind
        ``"stem"`` (a scanned detector: frame time = dwell time x pixels) or ``"camera"`` (an exposure).
    detected_fraction_per_unit
        For a counting detector with gain-normalised frames (the simulator's): the fraction of the incident
        electrons a pixel of frame value 1 detects, so one detected electron is ``1 / (fraction x electrons
        per pixel)`` of frame value. None when the microscope does not report it.
    """

    name: str
    kind: DetectorKind
    detected_fraction_per_unit: float | None = None


@dataclass(frozen=True)
class AcquisitionParams:
    """Acquisition parameters of a detector.

    Attributes
    ----------
    image_size
        ``FULL``, ``HALF`` or ``QUARTER`` of the detector's field.
    binning
        Binning factor (1, 2, 4, 8, ...).
    dwell_time_s
        STEM dwell time per scan pixel, seconds (``None`` for a camera).
    exposure_s
        Camera exposure time, seconds (``None`` for a STEM detector).
    """

    image_size: ImageSize = "FULL"
    binning: int = 1
    dwell_time_s: float | None = None
    exposure_s: float | None = None


@runtime_checkable
class Microscope(Protocol):
    """What the acquisition executor needs from a microscope. Angles in degrees, lengths in metres."""

    def alpha_deg(self) -> float:
        """The stage alpha tilt the microscope reports, degrees."""
        ...

    def move_alpha_deg(self, alpha_deg: float, speed: float | None = None) -> None:
        """Command the stage alpha tilt to ``alpha_deg`` (only alpha moves); returns once accepted."""
        ...

    def stage_status(self) -> str:
        """The stage status name (``"READY"`` when idle, ``"MOVING"``/``"GOING"``/... otherwise)."""
        ...

    def alpha_limits_deg(self) -> tuple[float, float]:
        """The holder's alpha range ``(min, max)``, degrees."""
        ...

    def stage_position(self) -> StagePosition:
        """The stage x, y, z in metres."""
        ...

    def beam_blanked(self) -> bool:
        """Whether the beam is blanked."""
        ...

    def set_beam_blanked(self, blanked: bool) -> None:
        """Blank (True) or unblank (False) the beam."""
        ...

    def detectors(self) -> dict[str, DetectorInfo]:
        """The detectors by name."""
        ...

    def acquisition_params(self, detector: str) -> AcquisitionParams:
        """The current acquisition parameters of ``detector``."""
        ...

    def set_acquisition_params(self, detector: str, params: AcquisitionParams) -> AcquisitionParams:
        """Set ``detector``'s acquisition parameters; returns those the microscope reports afterwards."""
        ...

    def acquire(self, detector: str) -> np.ndarray:
        """Acquire one image on ``detector``: a 2-D array (ny, nx) in the detector's own dtype."""
        ...

    def pixel_size_nm(self, detector: str) -> float | None:
        """The pixel size at the specimen of ``detector``'s frames as set now, nanometres (None: not reported)."""
        ...

    def beam_current_pA(self) -> float | None:
        """The beam current the microscope measures, picoampere (None: not reported)."""
        ...

    def image_shift_m(self) -> tuple[float, float]:
        """The image shift (x, y), metres."""
        ...

    def set_image_shift_m(self, shift_m: tuple[float, float]) -> None:
        """Set the image shift (x, y), metres (tracking only, within the configured limit)."""
        ...

    def probe_defocus_m(self) -> float:
        """The probe defocus, metres."""
        ...

    def set_probe_defocus_m(self, defocus_m: float) -> None:
        """Set the probe defocus, metres (focus only, within the configured limit)."""
        ...

    def move_stage_xy_m(self, x_m: float, y_m: float) -> None:
        """Move stage x and y only (tracking only, within the configured travel); returns once accepted."""
        ...
