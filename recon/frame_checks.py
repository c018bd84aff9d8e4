"""The checks every reconstruction method applies to a frame before it takes it (one rule, one message)."""

from __future__ import annotations

import math
from collections.abc import Container

import numpy as np

from tiltstream.errors import UserError


def checked_frame(index: int, frame: np.ndarray, angle_deg: float, time_s: float,
                  frame_shape: tuple[int, int], known_indices: Container[int]) -> np.ndarray:
    """``frame`` as float32 after checking it can join a reconstruction.

    Parameters
    ----------
    index
        The frame's index in the session; must not be in ``known_indices``.
    frame
        Shape ``frame_shape`` ``(ny, nx)``, data units, finite.
    angle_deg, time_s
        Tilt angle (degrees) and exposure midpoint (seconds); finite.
    frame_shape
        The ``(ny, nx)`` every frame of this reconstruction has.
    known_indices
        Indices already added.

    Raises
    ------
    UserError
        A duplicate index, a wrong shape, NaN/infinite values, or a non-finite angle or time.
    """
    frame = np.asarray(frame, dtype=np.float32)
    if int(index) in known_indices:
        raise UserError(f"frame index {index} was already added; each index once")
    if frame.shape != tuple(frame_shape):
        raise UserError(f"frame {index} has shape {frame.shape}; this reconstruction expects "
                        f"{tuple(frame_shape)} (ny, nx)")
    if not np.isfinite(frame).all():
        raise UserError(f"frame {index} contains NaN or infinite values; clean or drop it")
    if not (math.isfinite(angle_deg) and math.isfinite(time_s)):
        raise UserError(f"frame {index}: angle_deg = {angle_deg} and time_s = {time_s} must be finite")
    return frame
