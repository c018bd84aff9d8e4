"""Pixel size and beam current for the record and the dose: what the microscope reports, else the configuration.

The session records what the microscope reports through the bridge, with where each number came from;
a configured value is used only where the microscope reports none, and then one warning says so
(temscript reports no STEM field of view, so a real STEM pixel size always comes from the configuration).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from tiltstream.acquire.microscope import Microscope

log = logging.getLogger(__name__)

FROM_MICROSCOPE = "microscope"
FROM_CONFIG = "configuration"


@dataclass(frozen=True)
class Calibration:
    """The frame pixel size and beam current of a run, with their sources (``microscope`` or ``configuration``).

    Attributes
    ----------
    pixel_size_nm
        Frame pixel size at the specimen (binning included), nanometres.
    pixel_size_source
        Where it came from.
    beam_current_pA
        Beam (probe) current, picoampere.
    beam_current_source
        Where it came from.
    """

    pixel_size_nm: float
    pixel_size_source: str
    beam_current_pA: float
    beam_current_source: str

    def record(self) -> dict[str, Any]:
        """The fields for ``session.json``'s ``microscope`` object."""
        return asdict(self)


def read_calibration(microscope: Microscope, detector: str, configured_pixel_size_nm: float,
                     configured_beam_current_pA: float) -> Calibration:
    """What ``microscope`` reports for ``detector`` as set now, configured values where it reports none.

    Parameters
    ----------
    microscope
        The microscope, with ``detector``'s acquisition parameters already set (the pixel size depends on
        the binning and image size).
    detector
        Detector name.
    configured_pixel_size_nm
        Frame pixel size to use when none is reported, nanometres (binning included).
    configured_beam_current_pA
        Beam current to use when none is reported, picoampere.
    """
    pixel_nm = microscope.pixel_size_nm(detector)
    pixel_source = FROM_MICROSCOPE
    if pixel_nm is None:
        pixel_nm, pixel_source = configured_pixel_size_nm, FROM_CONFIG
        log.warning("the microscope reports no pixel size for %s; recording the configured %.4g nm "
                    "(--pixel-size-nm): check it against the calibration", detector, pixel_nm)
    current_pA = microscope.beam_current_pA()
    current_source = FROM_MICROSCOPE
    if current_pA is None:
        current_pA, current_source = configured_beam_current_pA, FROM_CONFIG
        log.warning("the microscope reports no beam current; the dose uses the configured %.4g pA "
                    "(--beam-current-pA): measure it and set it", current_pA)
    return Calibration(pixel_size_nm=float(pixel_nm), pixel_size_source=pixel_source,
                       beam_current_pA=float(current_pA), beam_current_source=current_source)
