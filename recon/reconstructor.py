"""The one interface every reconstruction method implements (DIP-STER, moving-window SIRT, later priors).

``live/`` and the offline commands (``recon train``, ``recon volumes``, ``recon metrics``) talk only to
this protocol, so a live run directory and an offline one are the same thing and a new method has an
obvious place: a class in ``recon/`` that satisfies :class:`Reconstructor`, registered in
:data:`METHODS` by its ``method`` name (which ``run.json`` records).

Units: angles in degrees, times in seconds since the session start (exposure midpoint), frames
``(ny, nx)`` and volumes ``(nz, ny, nx)`` float32 in data units (docs/design.md 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Reconstructor(Protocol):
    """A reconstruction that takes frames one at a time and can be queried at any time and angle."""

    method: ClassVar[str]
    """Name recorded in ``run.json`` (``"dipster"``, ``"sirt"``)."""

    STATE_FILE: ClassVar[str]
    """The file in a run directory that holds the state (:meth:`save` writes it through
    :class:`tiltstream.recon.run_dir.RunDir`, which also records :attr:`method` in run.json)."""

    @property
    def n_frames(self) -> int:
        """Frames added so far (training and held-out)."""

    @property
    def steps_done(self) -> int:
        """Optimisation steps (DIP-STER) or window reconstructions (SIRT) done so far."""

    @property
    def frame_records(self) -> list[dict[str, Any]]:
        """Per added frame, in order: ``index``, ``angle_deg``, ``time_s``, ``held_out`` and the metadata
        given to :meth:`add_frame` (e.g. ``dose_e_per_A2``, ``temperature_C``). Part of the saved state."""

    def add_frame(self, index: int, frame: np.ndarray, angle_deg: float, time_s: float, *,
                  held_out: bool = False, metadata: Mapping[str, Any] | None = None) -> None:
        """Add one frame (callable between training calls); ``index`` is unique."""

    def train(self, steps: int | None = None, seconds: float | None = None) -> float:
        """Improve the reconstruction for ``steps`` steps or about ``seconds`` seconds (one of the two);
        returns the mean loss of the work done (NaN when nothing was done)."""

    def volume(self, time_s: float) -> np.ndarray:
        """The volume at ``time_s`` seconds, float32, shape ``(nz, ny, nx)``."""

    def reproject(self, time_s: float, angle_deg: float) -> np.ndarray:
        """The predicted frame at ``time_s`` seconds and tilt ``angle_deg`` degrees, float32 ``(ny, nx)``."""

    def heldout_metrics(self) -> dict[str, float] | None:
        """Reprojection error of the held-out frames (``heldout_rmse_percent``, ``heldout_ssim``, means over
        them); None when no frame is held out."""

    def save(self, run_dir: str | Path) -> None:
        """Write the full state (atomically) into run directory ``run_dir`` (:attr:`STATE_FILE`, and the
        method and its settings in run.json), so that :meth:`load` continues exactly."""

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu", precision: str = "fp32",
             compile_model: bool = False) -> Reconstructor:
        """Restore the state :meth:`save` wrote into ``run_dir``, computing on ``device`` with
        ``precision`` and ``compile_model`` (:class:`tiltstream.recon.precision.Speed`; a method without a
        network ignores them), the same call for every method."""


METHODS: dict[str, str] = {
    "dipster": "tiltstream.recon.trainer:Trainer",
    "sirt": "tiltstream.recon.sirt_reconstructor:SirtReconstructor",
}
"""Method name -> ``module:Class`` (imported on use, so a method's dependencies load only when used)."""


def reconstructor_class(method: str) -> type:
    """The class implementing ``method``.

    Raises
    ------
    UserError
        An unknown method name.
    """
    from importlib import import_module

    from tiltstream.errors import UserError

    if method not in METHODS:
        raise UserError(f"unknown reconstruction method {method!r}; allowed: {', '.join(sorted(METHODS))}")
    module, _, name = METHODS[method].partition(":")
    return getattr(import_module(module), name)
