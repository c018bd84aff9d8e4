"""A query-only copy of the live reconstruction, refreshed after each training chunk, that another thread reads.

:class:`QueryReplica` holds a copy of the reconstructor that answers ``reproject`` and ``volume`` while the
training loop goes on with the original: for DIP-STER a copy of the query network (the weight-averaged
model, :mod:`tiltstream.recon.weight_average`) whose weights :meth:`QueryReplica.refresh` copies in place
(one ``load_state_dict``, no allocation), computing in bfloat16 on a CPU that has it natively
(:func:`tiltstream.recon.precision.query_precision`); for moving-window SIRT a copy whose frame, record and volume
containers are its own (the arrays are shared: SIRT replaces a window's volume, never writes into it).
Every read and refresh holds one lock, so a query never sees half-copied weights.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

import numpy as np

from tiltstream.recon.reconstructor import Reconstructor


class _FrozenWeights:
    """Stands in for a trainer's :class:`tiltstream.recon.weight_average.WeightAverage`: only the query model."""

    def __init__(self, query_model: Any) -> None:
        self.query_model = query_model


def _own_containers(reconstructor: Reconstructor) -> Reconstructor:
    """A shallow copy whose list, dict and set attributes are copies (their items shared)."""
    replica = copy.copy(reconstructor)
    for name, value in vars(reconstructor).items():
        if isinstance(value, (list, dict, set)):
            setattr(replica, name, copy.copy(value))
    return replica


class QueryReplica:
    """The reconstruction as of the last :meth:`refresh`, for queries from another thread.

    Attributes
    ----------
    step
        Training step of the copied state (-1 before the first refresh).
    latest_time_s
        Latest frame time in the copied state, seconds (None before the first refresh).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._copy: Reconstructor | None = None
        self.step = -1
        self.latest_time_s: float | None = None

    @property
    def ready(self) -> bool:
        """Whether a state was copied in (the first chunk trained)."""
        return self._copy is not None

    def refresh(self, reconstructor: Reconstructor) -> None:
        """Copy ``reconstructor``'s current state in (call between training chunks, from the training thread)."""
        records = reconstructor.frame_records
        if not records:
            return
        with self.lock:
            if reconstructor.method == "dipster":
                self._refresh_weights(reconstructor)
            else:
                self._copy = _own_containers(reconstructor)
            self.step = reconstructor.steps_done
            self.latest_time_s = max(r["time_s"] for r in records)

    def _refresh_weights(self, trainer: Any) -> None:
        import torch

        from tiltstream.recon.precision import autocast_for, query_precision

        source = trainer.weights.query_model
        if self._copy is None:
            replica = copy.copy(trainer)
            replica.weights = _FrozenWeights(copy.deepcopy(source).requires_grad_(False))
            replica._autocast = autocast_for(query_precision(trainer.precision, trainer.device), trainer.device)
            self._copy = replica
            return
        with torch.no_grad():
            self._copy.weights.query_model.load_state_dict(source.state_dict())

    def reproject(self, time_s: float | None, angle_deg: float) -> tuple[np.ndarray, float, int]:
        """The predicted frame at ``time_s`` (None: the latest frame time) and ``angle_deg``: the image
        (ny, nx) float32, the time used (s) and the step of the weights. Needs :attr:`ready`."""
        with self.lock:
            time_s = self.latest_time_s if time_s is None else float(time_s)
            return self._copy.reproject(time_s, float(angle_deg)), time_s, self.step

    def volume(self, time_s: float) -> tuple[np.ndarray, int]:
        """The volume (nz, ny, nx) at ``time_s`` seconds and the step of the weights. Needs :attr:`ready`."""
        with self.lock:
            return self._copy.volume(float(time_s)), self.step
