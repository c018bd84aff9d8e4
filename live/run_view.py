"""A run directory (live or ``recon train``) as the status messages a live process publishes, for the offline viewer.

``tiltstream view --run RUN`` draws a finished or stopped run in the window that shows live runs
(docs/style.md 5: one consumer for live and recorded data). :class:`RunSource` reads the run once:

- ``train_log.csv``: the loss curve and the held-out reprojection error (``heldout_rmse_percent``);
- the reconstruction (:func:`tiltstream.recon.run_dir.open_state`, when its state was saved), by default
  the state ``recon volumes`` reads and the run's ``volumes.tif`` holds (refit, else best, else last):
  the frames' times, angles, dose and temperature, and the central orthoslices of its volume at any time;
- the session's ``frames.jsonl`` (run.json's ``session``, when it is still there): each frame's tracking.

It builds the same typed messages as the live process (:class:`tiltstream.live.status.HistoryHeader`,
:class:`tiltstream.live.status.StatusHeader`, :func:`tiltstream.live.status.make_orthoslices`); the time slider's volume
requests are answered here, synchronously, instead of over the request endpoint.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from tiltstream.errors import UserError
from tiltstream.acquire.session import read_session
from tiltstream.live.status import HistoryHeader, Orthoslices, StatusHeader, make_orthoslices, tracking_history
from tiltstream.recon.reconstructor import Reconstructor
from tiltstream.recon.run_dir import RUN_FILE, RunDir, open_state

log = logging.getLogger(__name__)


def _number(text: str | None) -> float | None:
    """A train_log.csv cell as a finite float (None when empty or not finite)."""
    if text in (None, ""):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


class RunSource:
    """One run directory, read for the viewer (see the module docstring).

    Parameters
    ----------
    path
        The run directory.
    device
        Where the reconstruction computes its volumes (``"cpu"``, ``"cuda"``).
    checkpoint
        Which state to draw (:data:`tiltstream.recon.run_dir.CHECKPOINTS`; ``auto``: refit, else best, else last).

    Raises
    ------
    UserError
        ``path`` is not a run directory, its state or log cannot be read, or it keeps no ``checkpoint``
        state.
    """

    def __init__(self, path: Path | str, device: str = "cpu", checkpoint: str = "auto") -> None:
        self.run = RunDir(path)
        if not self.run.exists():
            raise UserError(f"{str(path)!r} is not a run directory (no {RUN_FILE} there); give the --out of "
                            "tiltstream live or recon train")
        self.description = self.run.read()
        self.method = self.run.method()
        try:
            rows = [(int(r["step"]), _number(r.get("loss")), _number(r.get("heldout_rmse_percent")))
                    for r in self.run.read_log()]
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{self.run.log}: not a training log ({exc})") from None
        self.loss_step = [step for step, loss, _ in rows if loss is not None]
        self.loss = [loss for _, loss, _ in rows if loss is not None]
        self.heldout_step = [step for step, _, held in rows if held is not None]
        self.heldout_rmse_percent = [held for _, _, held in rows if held is not None]
        self.reconstructor: Reconstructor | None = None
        self.records: list[dict] = []
        self.state = "no saved state"
        if self.run.has_state():
            self.reconstructor, self.state = open_state(self.run.path, device=device, checkpoint=checkpoint)
            self.records = sorted(self.reconstructor.frame_records, key=lambda r: r["index"])
        self.session_name = Path(str(self.description.session or self.run.path.name)).name

    def _session_tracking(self) -> dict:
        """Frame index -> tracking record from the run's session, when it is still on disk ({} otherwise)."""
        session = self.description.session
        if not session or not (Path(session) / "frames.jsonl").is_file():
            return {}
        try:
            records = read_session(session).records
        except UserError as exc:
            log.warning("tracking of session %s not shown: %s", session, exc)
            return {}
        return {r.index: r.tracking for r in records if r.tracking is not None}

    def times_s(self) -> tuple[float | None, float | None]:
        """Earliest and latest frame time in the reconstruction, seconds (None, None without one)."""
        if not self.records:
            return None, None
        times = [r["time_s"] for r in self.records]
        return min(times), max(times)

    def history(self) -> HistoryHeader:
        """The whole run as a history message: per-frame metadata and tracking, loss and held-out curves."""
        indices = [r["index"] for r in self.records]
        return HistoryHeader(
            session=self.session_name, frame_index=indices, time_s=[r["time_s"] for r in self.records],
            angle_deg=[r["angle_deg"] for r in self.records],
            dose_e_per_A2=[r.get("dose_e_per_A2", 0.0) for r in self.records],
            temperature_C=[r.get("temperature_C") for r in self.records], loss_step=self.loss_step,
            loss=self.loss, heldout_step=self.heldout_step, heldout_rmse_percent=self.heldout_rmse_percent,
            **tracking_history(indices, self._session_tracking()))

    def status(self) -> StatusHeader:
        """The run's state as a status message (``stopped``: an offline run trains no more here)."""
        low, high = self.times_s()
        r = self.reconstructor
        frames = r.n_frames if r is not None else 0
        return StatusHeader(session=self.session_name, frames_seen=frames, frames_in_model=frames,
                            step=r.steps_done if r is not None else (self.loss_step or [0])[-1],
                            loss=self.loss[-1] if self.loss else None, steps_per_s=0.0, lag_frames=0, lag_s=0.0,
                            time_min_s=low, time_max_s=high, state="stopped", method=self.method)

    def orthoslices(self, time_s: float | None = None, request_id: int | None = None) -> Orthoslices | None:
        """The central orthoslices at ``time_s`` seconds (default: the latest frame time), clamped to the
        frames' time range; None without a saved reconstruction."""
        r = self.reconstructor
        low, high = self.times_s()
        if r is None or low is None:
            return None
        time_s = high if time_s is None else min(max(float(time_s), low), high)
        return make_orthoslices(self.session_name, r.volume(time_s), time_s, r.steps_done, request_id=request_id)

    def messages(self, time_s: float | None = None) -> list:
        """Status, history and (when there is a reconstruction) the orthoslices at ``time_s``."""
        slices = self.orthoslices(time_s)
        return [self.status(), self.history(), *([slices] if slices is not None else [])]
