"""Moving-window SIRT behind the :class:`tiltstream.recon.reconstructor.Reconstructor` protocol (method ``"sirt"``).

:class:`SirtReconstructor` keeps one volume per training frame, each a cold-started SIRT of
:func:`tiltstream.recon.sirt.moving_window_sirt`'s window around it; one step is one window, and a new
frame's stale windows are recomputed newest first. Held-out frames are never in a window. Its state is
:attr:`SirtReconstructor.STATE_FILE` in a run directory (docs/design.md 9); the method: docs/method.md 3.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from tiltstream.atomic_files import write_atomic
from tiltstream.errors import UserError
from tiltstream.recon.frame_checks import checked_frame
from tiltstream.recon.run_dir import RUN_FILE, RunDir, SirtSettings

STATE_VERSION = 1


class SirtReconstructor:
    """Moving-window SIRT of a stream of frames.

    Parameters
    ----------
    frame_shape
        ``(ny, nx)`` of every frame, pixels; volumes are ``(nx, ny, nx)`` (nz = nx, as DIP-STER).
    window
        Window width in frames (the paper: 30, i.e. 31 frames); >= 1.
    iterations
        SIRT iterations per window (the paper: 30); >= 0.
    nonnegative
        Clamp to >= 0 after every iteration (ASTRA's ``MinConstraint = 0``).
    device
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    """

    method: ClassVar[str] = "sirt"
    STATE_FILE: ClassVar[str] = "sirt_state.npz"

    def __init__(self, frame_shape: tuple[int, int], window: int = 30, iterations: int = 30,
                 nonnegative: bool = True, device: str = "cpu") -> None:
        if len(frame_shape) != 2 or min(frame_shape) < 2:
            raise UserError(f"frame_shape must be (ny, nx) with sizes >= 2; got {tuple(frame_shape)}")
        if window < 1:
            raise UserError(f"window must be >= 1 frame; got {window}")
        if iterations < 0:
            raise UserError(f"iterations must be >= 0; got {iterations}")
        self.frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        self.volume_shape = (self.frame_shape[1], self.frame_shape[0], self.frame_shape[1])
        self.window, self.iterations, self.nonnegative = int(window), int(iterations), bool(nonnegative)
        self.device = str(device)
        self._records: list[dict[str, Any]] = []
        self._frames: dict[int, np.ndarray] = {}
        self._volumes: dict[int, np.ndarray] = {}  # training frame index -> its window's volume
        self._stale: set[int] = set()
        self._steps_done = 0
        self.loss_history: list[float] = []

    # ------------------------------------------------------------------ frames
    @property
    def n_frames(self) -> int:
        """Frames added so far (training and held-out)."""
        return len(self._records)

    @property
    def steps_done(self) -> int:
        """Window reconstructions done so far."""
        return self._steps_done

    @property
    def frame_records(self) -> list[dict[str, Any]]:
        """Per added frame, in order of addition: index, angle_deg, time_s, held_out and the metadata."""
        return [dict(r) for r in self._records]

    @property
    def stale_windows(self) -> int:
        """Windows waiting to be (re)computed; 0 when every training frame's volume is current."""
        return len(self._stale)

    def _train_order(self) -> list[int]:
        """Training frame indices in index (acquisition) order."""
        return sorted(r["index"] for r in self._records if not r["held_out"])

    def add_frame(self, index: int, frame: np.ndarray, angle_deg: float, time_s: float, *,
                  held_out: bool = False, metadata: Mapping[str, Any] | None = None) -> None:
        """Add one frame ``(ny, nx)`` (data units); marks the windows that contain it stale.

        Raises
        ------
        UserError
            Duplicate index, wrong shape, non-finite values, angle or time.
        """
        frame = checked_frame(index, frame, angle_deg, time_s, self.frame_shape, self._frames)
        index = int(index)
        self._frames[index] = frame.copy()
        self._records.append({"index": index, "angle_deg": float(angle_deg), "time_s": float(time_s),
                              "held_out": bool(held_out), **dict(metadata or {})})
        if held_out:
            return
        order = self._train_order()
        position = order.index(index)
        half = self.window // 2
        # windows within half a window of the new frame now contain it; a frame inserted before the end
        # shifts every later window too
        last = len(order) if position < len(order) - 1 else min(len(order), position + half + 1)
        self._stale.update(order[max(0, position - half):last])

    # ------------------------------------------------------------------ training
    def _window_volume(self, order: list[int], position: int) -> tuple[np.ndarray, float]:
        """The window volume at training position ``position`` and its relative squared residual."""
        from tiltstream.recon.projector import ParallelProjector
        from tiltstream.recon.sirt import sirt, window_bounds

        start, stop = window_bounds(position, len(order), self.window)
        indices = order[start:stop]
        by_index = {r["index"]: r for r in self._records}
        frames = np.stack([self._frames[i] for i in indices])
        angles_deg = np.array([by_index[i]["angle_deg"] for i in indices])
        volume = sirt(frames, angles_deg, self.volume_shape, iterations=self.iterations,
                      nonnegative=self.nonnegative, device=self.device)
        predicted = ParallelProjector(angles_deg, self.volume_shape, n_det=self.frame_shape[1])(volume)
        norm = float(np.sum(frames.astype(np.float64) ** 2))
        loss = float(np.sum((predicted - frames).astype(np.float64) ** 2)) / norm if norm > 0 else 0.0
        return volume, loss

    def train(self, steps: int | None = None, seconds: float | None = None) -> float:
        """Recompute up to ``steps`` stale windows (or for about ``seconds``; all when both are None).

        Returns
        -------
        float
            Mean relative squared residual ``||A x - b||^2 / ||b||^2`` of the windows computed; NaN when
            none was stale.
        """
        if steps is not None and seconds is not None:
            raise UserError("give steps or seconds, not both")
        if steps is not None and steps < 0:
            raise UserError(f"steps must be >= 0; got {steps}")
        started = time.monotonic()
        order = self._train_order()
        position_of = {index: p for p, index in enumerate(order)}
        losses = []
        for index in sorted(self._stale, reverse=True):  # newest first
            if steps is not None and len(losses) >= steps:
                break
            if seconds is not None and losses and time.monotonic() - started >= seconds:
                break
            volume, loss = self._window_volume(order, position_of[index])
            self._volumes[index] = volume
            self._stale.discard(index)
            losses.append(loss)
        self._steps_done += len(losses)
        self.loss_history.extend(losses)
        return float(np.mean(losses)) if losses else float("nan")

    # ------------------------------------------------------------------ queries
    def volume(self, time_s: float) -> np.ndarray:
        """The window volume of the training frame nearest in time to ``time_s`` seconds, (nz, ny, nx).

        A window not yet computed is computed now (and cached; it does not count as a step).
        """
        order = self._train_order()
        if not order:
            raise UserError("no training frames added yet: nothing to reconstruct")
        by_index = {r["index"]: r for r in self._records}
        nearest = min(order, key=lambda i: (abs(by_index[i]["time_s"] - float(time_s)), i))
        if nearest in self._stale or nearest not in self._volumes:
            self._volumes[nearest], _ = self._window_volume(order, order.index(nearest))
            self._stale.discard(nearest)
        return self._volumes[nearest].copy()

    def reproject(self, time_s: float, angle_deg: float) -> np.ndarray:
        """The projection of :meth:`volume` at ``angle_deg`` degrees, float32 ``(ny, nx)``."""
        from tiltstream.recon.projector import ParallelProjector

        volume = self.volume(time_s)
        return ParallelProjector([float(angle_deg)], self.volume_shape, n_det=self.frame_shape[1])(volume)[0]

    def heldout_metrics(self) -> dict[str, float] | None:
        """Reprojection error of the held-out frames (:func:`tiltstream.recon.metrics.heldout_metrics`);
        None when there are none or no window is computed yet."""
        from tiltstream.recon.metrics import heldout_metrics

        if not self._train_order():
            return None
        return heldout_metrics((self._frames[r["index"]], self.reproject(r["time_s"], r["angle_deg"]))
                               for r in self._records if r["held_out"])

    # ------------------------------------------------------------------ state
    def settings(self) -> SirtSettings:
        """The constructor's settings (recorded in run.json)."""
        return SirtSettings(frame_shape=list(self.frame_shape), window=self.window, iterations=self.iterations,
                            nonnegative=self.nonnegative)

    def save(self, run_dir: str | Path) -> None:
        """Write :attr:`STATE_FILE` into run directory ``run_dir`` (atomically) and record the method and
        settings in its run.json."""
        run = RunDir(run_dir)
        run.path.mkdir(parents=True, exist_ok=True)
        indices = [r["index"] for r in self._records]
        cached = sorted(self._volumes)
        empty = np.zeros((0, *self.frame_shape), np.float32)
        arrays = {
            "version": np.array(STATE_VERSION),
            "records": np.array(json.dumps(self._records)),
            "frames": np.stack([self._frames[i] for i in indices]) if indices else empty,
            "volume_indices": np.array(cached, dtype=np.int64),
            "volumes": (np.stack([self._volumes[i] for i in cached]) if cached
                        else np.zeros((0, *self.volume_shape), np.float32)),
            "stale": np.array(sorted(self._stale), dtype=np.int64),
            "steps_done": np.array(self._steps_done),
            "loss_history": np.array(self.loss_history, dtype=np.float64),
        }
        write_atomic(run.state_path(self.STATE_FILE), lambda tmp: _save_npz(tmp, arrays))
        run.update(method=self.method, sirt=self.settings())

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu", precision: str = "fp32",
             compile_model: bool = False) -> SirtReconstructor:
        """Restore what :meth:`save` wrote into ``run_dir`` (``precision`` and ``compile_model``, how a
        network computes, are accepted as every reconstructor's ``load`` accepts them: SIRT has none).

        Raises
        ------
        UserError
            No SIRT state there, or an unreadable one.
        """
        run = RunDir(run_dir)
        settings = run.read().sirt
        path = run.state_path(cls.STATE_FILE)
        if settings is None or not path.is_file():
            raise UserError(f"{str(run_dir)!r} holds no SIRT reconstruction ({RUN_FILE} with 'sirt' "
                            f"settings and {cls.STATE_FILE})")
        try:
            with np.load(path, allow_pickle=False) as state:
                arrays = {k: state[k] for k in state.files}
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: not readable ({exc})") from None
        if int(arrays["version"]) != STATE_VERSION:
            raise UserError(f"{path}: state version {int(arrays['version'])}; this tiltstream reads {STATE_VERSION}")
        rec = cls(tuple(settings.frame_shape), window=settings.window, iterations=settings.iterations,
                  nonnegative=settings.nonnegative, device=device)
        rec._records = json.loads(str(arrays["records"]))
        rec._frames = {r["index"]: arrays["frames"][k] for k, r in enumerate(rec._records)}
        rec._volumes = {int(i): arrays["volumes"][k] for k, i in enumerate(arrays["volume_indices"])}
        rec._stale = {int(i) for i in arrays["stale"]}
        rec._steps_done = int(arrays["steps_done"])
        rec.loss_history = [float(v) for v in arrays["loss_history"]]
        return rec


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as handle:  # a file handle: np.savez would append ".npz" to a bare path
        np.savez(handle, **arrays)
