"""The one way a frame enters a reconstructor: ``recon train``, the live process and the benches call it.

A frame travels with its session record: a :class:`tiltstream.acquire.session.FrameRecord` read from
``frames.jsonl`` (:func:`tiltstream.recon.session_frames.load_session_frames`), or the
:class:`tiltstream.acquire.stream.FrameHeader` that carries the same fields on the stream.
:func:`frame_metadata` is what a reconstructor keeps with each frame; :func:`add_recorded_frame` adds one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tiltstream.acquire.session import FrameRecord
from tiltstream.acquire.stream import FrameHeader
from tiltstream.recon.reconstructor import Reconstructor


def frame_metadata(record: FrameRecord | FrameHeader, **extra: Any) -> dict[str, Any]:
    """The per-frame values kept with a frame in the reconstruction state: its dose (e/A^2) and
    temperature (Celsius, or None), and ``extra`` (e.g. the live process's step when it was added)."""
    return {"dose_e_per_A2": record.dose_e_per_A2, "temperature_C": record.temperature_C, **extra}


def add_recorded_frame(reconstructor: Reconstructor, record: FrameRecord | FrameHeader, frame: np.ndarray, *,
                       held_out: bool = False, **extra: Any) -> None:
    """Add ``frame`` (ny, nx), as float32, with its record's index, angle, time and :func:`frame_metadata`.

    Raises
    ------
    UserError
        The reconstructor refuses the frame (duplicate index, wrong shape, non-finite values).
    """
    reconstructor.add_frame(record.index, np.asarray(frame, dtype=np.float32), record.angle_deg, record.time_s,
                            held_out=held_out, metadata=frame_metadata(record, **extra))
