"""The voxel size of a run's volumes: its session's pixel size, scaled as preprocessing resampled the frames.

A reconstruction's voxels are the frames' pixels (the volume is ``(Z, Y, X)`` over the frame grid), so the
voxel edge is ``session.json``'s ``pixel_size_nm`` times the binning factor, times the width before
``rescale_shape`` over the width after it (cropping keeps the pixel size); run.json's ``preprocess`` report
records all three.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic

if TYPE_CHECKING:
    from tiltstream.recon.run_dir import RunDescription


def preprocess_pixel_scale(report: dict[str, Any] | None) -> float:
    """How many session pixels one preprocessed pixel spans (x), from run.json's ``preprocess`` report."""
    if not report:
        return 1.0
    config = report.get("config", {})
    binning = int(config.get("bin_factor") or 1)
    width = int(report["input_shape"][-1]) // binning
    if config.get("crop_shape"):
        width = int(config["crop_shape"][-1])
    scale = float(binning)
    if config.get("rescale_shape"):
        scale *= width / int(config["rescale_shape"][-1])
    return scale


def run_voxel_size_nm(description: RunDescription) -> float | None:
    """Voxel edge of the volumes of the run ``description`` (run.json), nm; None when its session is not
    a recorded session directory (a live stream) or records no pixel size."""
    from tiltstream.acquire.session import SETTINGS_FILE, SessionSettings

    session = description.session
    settings_path = Path(str(session)) / SETTINGS_FILE if session else None
    if settings_path is None or not settings_path.is_file():
        return None
    try:
        pixel_nm = SessionSettings.model_validate_json(settings_path.read_text()).pixel_size_nm
    except pydantic.ValidationError:
        return None
    if pixel_nm is None:
        return None
    return float(pixel_nm) * preprocess_pixel_scale(description.preprocess)
