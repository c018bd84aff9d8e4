"""The frames a DIP-STER trainer has been given: normalised frame tensors, their coordinates and records.

A :class:`FrameStore` keeps, per added frame (a *slot*, in order of addition), the frame divided by
the data scale (a robust maximum of the first frame, fixed from then on), its angle in radians and its
time coordinate ``time_s / time_scale_s`` on the trainer's device, and its record: session index,
angle (degrees), time (seconds), held-out flag and per-frame metadata (dose, temperature). With
``row_statistics`` it also keeps what the data window of the ramp filter needs
(:mod:`tiltstream.recon.row_filter`): each frame's mean row power spectrum and total, computed once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from tiltstream.errors import UserError
from tiltstream.recon.frame_checks import checked_frame
from tiltstream.recon.row_filter import row_power


def _robust_max(frame: np.ndarray) -> float:
    """The 99.9th percentile of ``|frame|`` (the maximum for tiny frames), never below tiny positive."""
    value = float(np.percentile(np.abs(frame), 99.9))
    return value if value > 0 else float(np.abs(frame).max())


class FrameStore:
    """Frames ``(ny, nx)`` and their records, one slot per added frame.

    Parameters
    ----------
    frame_shape
        ``(ny, nx)`` of every frame, pixels.
    time_scale_s
        Seconds per unit of the time coordinate.
    device
        Where the frame tensors live.
    row_statistics
        Keep each frame's row power spectrum and total (for the data window of the ramp filter).
    """

    def __init__(self, frame_shape: tuple[int, int], time_scale_s: float, device: torch.device,
                 row_statistics: bool) -> None:
        self.frame_shape = frame_shape
        self.time_scale_s = time_scale_s
        self.device = device
        self.row_statistics = row_statistics
        self.data_scale: float | None = None
        self.indices: list[int] = []
        self.angles_deg: list[float] = []
        self.times_s: list[float] = []
        self.held_out: list[bool] = []
        self.metadata: list[dict[str, Any]] = []
        self.slot_of: dict[int, int] = {}
        self.frames = torch.zeros((0, *frame_shape), dtype=torch.float32, device=device)
        self.angles_rad = torch.zeros(0, dtype=torch.float32, device=device)
        self.times = torch.zeros(0, dtype=torch.float32, device=device)
        # float64 row statistics of each frame (derived from the frames, not saved)
        self.power = torch.zeros((0, frame_shape[1] + 1), dtype=torch.float64, device=device)
        self.totals = torch.zeros(0, dtype=torch.float64, device=device)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def records(self) -> list[dict[str, Any]]:
        """Per slot: ``index``, ``angle_deg``, ``time_s``, ``held_out`` and the frame's metadata."""
        return [{"index": i, "angle_deg": a, "time_s": t, "held_out": h, **m} for i, a, t, h, m in
                zip(self.indices, self.angles_deg, self.times_s, self.held_out, self.metadata)]

    def time_coordinate(self, time_s: float) -> float:
        """The network's time coordinate of ``time_s`` seconds: ``time_s / time_scale_s``."""
        return float(time_s) / self.time_scale_s

    def add(self, index: int, frame: np.ndarray, angle_deg: float, time_s: float, held_out: bool,
            metadata: Mapping[str, Any] | None) -> int:
        """Add one frame (data units); returns its slot.

        Raises
        ------
        UserError
            Duplicate index, wrong shape, non-finite values or angle/time, or a first frame that is all zero.
        """
        frame = checked_frame(index, frame, angle_deg, time_s, self.frame_shape, self.slot_of)
        if self.data_scale is None:
            scale = _robust_max(frame)
            if scale <= 0:
                raise UserError(f"the first frame (index {index}) is all zero; normalisation needs signal")
            self.data_scale = scale
        slot = len(self)
        self.slot_of[int(index)] = slot
        self.indices.append(int(index))
        self.angles_deg.append(float(angle_deg))
        self.times_s.append(float(time_s))
        self.held_out.append(bool(held_out))
        self.metadata.append({str(k): v.item() if isinstance(v, np.generic) else v
                              for k, v in (metadata or {}).items()})
        tensor = torch.from_numpy(frame / np.float32(self.data_scale)).to(self.device)
        self.frames = torch.cat([self.frames, tensor[None]])
        self._add_row_statistics(tensor[None])
        self.angles_rad = torch.cat([self.angles_rad, torch.tensor(
            [math.radians(angle_deg)], dtype=torch.float32, device=self.device)])
        self.times = torch.cat([self.times, torch.tensor(
            [self.time_coordinate(time_s)], dtype=torch.float32, device=self.device)])
        return slot

    def _add_row_statistics(self, frames: torch.Tensor) -> None:
        """Append the row statistics of ``frames`` ``(F, ny, nx)`` (normalised), when kept."""
        if not self.row_statistics:
            return
        self.power = torch.cat([self.power, row_power(frames)])
        self.totals = torch.cat([self.totals, frames.sum(dim=(1, 2), dtype=torch.float64)])

    def held_out_slots(self) -> list[int]:
        """Slots of the held-out frames, in order."""
        return [s for s, h in enumerate(self.held_out) if h]

    def frame(self, slot: int) -> np.ndarray:
        """The frame in ``slot``, data units, float32 ``(ny, nx)``."""
        return self.frames[slot].cpu().numpy() * self.data_scale

    def state_dict(self) -> dict[str, Any]:
        """The frames and their records (tensors on the CPU), as checkpoint keys."""
        return {"data_scale": self.data_scale, "indices": list(self.indices), "angles_deg": list(self.angles_deg),
                "times_s": list(self.times_s), "held_out": list(self.held_out),
                "metadata": [dict(m) for m in self.metadata], "frames": self.frames.cpu()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (the row statistics recomputed from the frames)."""
        self.data_scale = state["data_scale"]
        self.indices = [int(i) for i in state["indices"]]
        self.angles_deg = [float(a) for a in state["angles_deg"]]
        self.times_s = [float(t) for t in state["times_s"]]
        self.held_out = [bool(h) for h in state["held_out"]]
        self.metadata = [dict(m) for m in state.get("metadata", [{} for _ in self.indices])]
        self.slot_of = {index: slot for slot, index in enumerate(self.indices)}
        self.frames = state["frames"].to(self.device)
        self._add_row_statistics(self.frames)
        self.angles_rad = torch.tensor([math.radians(a) for a in self.angles_deg], dtype=torch.float32,
                                       device=self.device)
        self.times = torch.tensor([self.time_coordinate(t) for t in self.times_s], dtype=torch.float32,
                                  device=self.device)
