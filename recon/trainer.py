"""Incremental DIP-STER training: frames stream in, steps run between them, volumes come out any time.

One :class:`Trainer` owns the network, the optimiser (Adam), the scheduler (StepLR), the frame store
and the sampler. Frames can be added between steps (live reconstruction) or all at once (offline).

Conventions
-----------
- A frame's coordinates are ``(y_k / N_y, time_s / time_scale_s, theta_rad)`` (paper Eq. 3);
  ``time_scale_s`` is fixed when the trainer is created, so adding frames never changes the time
  coordinate of earlier ones (warm start).
- Data normalisation is fixed from the first frame: frames are divided by ``data_scale`` (a robust
  maximum of the first frame) so rows are O(1). :meth:`volume` and :meth:`reproject` return data
  units: a volume whose projections equal the frames.
- Loss (paper Eq. 6): Geman-McClure ``2 r^2 / (r^2 + 4)`` of normalised rows (kornia), mean over
  pixels (or the L1 / L2 residual, ``config.loss``), of the rows as they are or ramp-filtered along
  the detector (``config.residual_filter``, :mod:`tiltstream.recon.row_filter`; with ``config.ramp_window ==
  "data"`` the filter's window is recomputed from the training frames whenever frames were added),
  plus ``tv_weight`` times the 1-D total variation of the predicted rows, plus the network's
  ``prior_loss()`` (zero for DIP-STER; plane smoothness for the K-planes field that
  :func:`build_network` builds when ``config.network == "kplanes"``).
- Volumes are queried at ``theta = 0`` (as the reference code does), with the exponential moving
  average of the weights when ``config.ema_decay > 0`` (updated after every step, saved in checkpoints).
- ``precision`` (fp32, tf32, bf16) and ``compile_model`` are how this process computes
  (:mod:`tiltstream.recon.precision`), not part of the run: a checkpoint continues in any of them.
- Deterministic on CPU: the same seed and the same sequence of ``add_frame`` / ``train_steps`` calls
  give the same weights; :meth:`save` / :meth:`load` then continuing equals uninterrupted training.
- Data-parallel (:meth:`data_parallel`, under ``torchrun``): each rank draws its own samples (rank
  ``r``'s sampler seeded with ``seed + r``), DistributedDataParallel averages the gradients, so a step
  of N ranks with ``batch_frames`` b is a step of batch N*b; the logged loss is the mean over ranks.
  Checkpoints hold the un-wrapped model, so a run continues on any number of ranks.
- :class:`Trainer` implements :class:`tiltstream.recon.reconstructor.Reconstructor` (``method = "dipster"``): its
  state lives in a run directory as ``checkpoint.pt``, per-frame metadata (dose, temperature) included.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from kornia.losses import geman_mcclure_loss

from tiltstream.atomic_files import write_atomic
from tiltstream.errors import UserError
from tiltstream.recon.frame_checks import checked_frame
from tiltstream.recon.kplanes import KPlanesField
from tiltstream.recon.model import DipsterNet
from tiltstream.recon.precision import Precision, autocast_for, checked_precision, compiled, math_mode_for
from tiltstream.recon.presets import DipsterConfig
from tiltstream.recon.projector import project
from tiltstream.recon.row_filter import hann_window, ramp_filtered, ramp_gains, row_power, window_from_statistics
from tiltstream.recon.run_dir import CHECKPOINT_FILE, RunDir
from tiltstream.recon.sampler import FrameSampler

__all__ = ["DipsterConfig", "Trainer"]

CHECKPOINT_VERSION = 1
QUERY_CHUNK = 64  # slices per forward pass when querying volumes
RESUME_SEED_STRIDE = 1_000_003  # a resumed rank r > 0 reseeds its sampler by seed + r + stride * steps


def _robust_max(frame: np.ndarray) -> float:
    """The 99.9th percentile of ``|frame|`` (the maximum for tiny frames), never below tiny positive."""
    value = float(np.percentile(np.abs(frame), 99.9))
    return value if value > 0 else float(np.abs(frame).max())


def build_network(config: DipsterConfig, frame_shape: tuple[int, int]) -> torch.nn.Module:
    """The network ``config.network`` names, for frames of ``frame_shape`` ``(ny, nx)`` (slices ``(nx, nx)``)."""
    slice_shape = (frame_shape[1], frame_shape[1])
    if config.network == "kplanes":
        return KPlanesField(config, slice_shape, frame_shape[0])
    return DipsterNet(config, slice_shape)


def checkpoint_path(path: str | Path) -> Path:
    """The checkpoint file meant by ``path``: ``path`` itself when it ends in ``.pt``, else
    ``path/checkpoint.pt`` (a run directory)."""
    path = Path(path)
    return path if path.suffix == ".pt" else path / CHECKPOINT_FILE


class Trainer:
    """DIP-STER reconstruction of a stream of frames.

    Parameters
    ----------
    config
        Architecture and optimisation settings (:func:`tiltstream.recon.presets.preset`).
    frame_shape
        ``(ny, nx)`` of every frame, pixels; volumes are ``(nx, ny, nx)`` (nz = nx).
    time_scale_s
        Seconds per unit of the time coordinate (e.g. the session's duration); fixed forever.
    device
        ``"cpu"``, ``"cuda"`` or a torch device.
    seed
        Seeds the network's initial weights and the sampler.
    precision
        ``"fp32"`` (default), ``"tf32"`` (CUDA only) or ``"bf16"`` (:mod:`tiltstream.recon.precision`); a speed
        setting of this process, not saved in checkpoints.
    compile_model
        Run the training forward pass through ``torch.compile``.
    """

    method: ClassVar[str] = "dipster"

    def __init__(self, config: DipsterConfig, frame_shape: tuple[int, int], time_scale_s: float,
                 device: str | torch.device = "cpu", seed: int = 0, precision: Precision | str = "fp32",
                 compile_model: bool = False) -> None:
        if len(frame_shape) != 2 or min(frame_shape) < 2:
            raise UserError(f"frame_shape must be (ny, nx) with sizes >= 2; got {tuple(frame_shape)}")
        if not (math.isfinite(time_scale_s) and time_scale_s > 0):
            raise UserError(f"time_scale_s must be a positive number of seconds; got {time_scale_s}")
        self.config = config
        self.frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        self.slice_shape = (self.frame_shape[1], self.frame_shape[1])
        self.time_scale_s = float(time_scale_s)
        self.device = torch.device(device)
        self.seed = int(seed)
        self.precision = checked_precision(str(precision), self.device)
        self._autocast = autocast_for(self.precision, self.device)  # around forward passes
        self._math_mode = math_mode_for(self.precision, self.device)  # around whole steps and queries
        self.compile_model = bool(compile_model)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.model = build_network(config, self.frame_shape)
        self.model.to(self.device)
        # the weights queries use: an exponential moving average of the trained ones, or those themselves
        self.average = copy.deepcopy(self.model).requires_grad_(False) if config.ema_decay > 0 else None
        # fused: one kernel for all parameters instead of a loop of ~10 ops per parameter tensor (on this
        # CPU 1.09-1.24x the steps/s of the fast preset alone, 1.05x beside another process;
        # docs/benchmarks/gpu.md "Fused Adam")
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, betas=(0.9, config.adam_beta2),
                                          fused=True)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=config.lr_step_steps,
                                                         gamma=config.lr_gamma)
        self.sampler = FrameSampler(self.seed, config.fresh_per_step)
        # the data term's filter along the detector (tiltstream.recon.row_filter): its window and gains, or None;
        # with the data window, recomputed by train_steps from the training frames when frames were added
        self._row_window = (hann_window(self.frame_shape[1], self.device) if config.residual_filter == "ramp"
                            else None)
        self._row_gains = (None if self._row_window is None
                           else ramp_gains(self.frame_shape[1], self.device, self._row_window))
        self._window_frames = 0  # training frames the data window was last computed from
        # per added frame, what the data window needs (float64; derived from the frames in add_frame and
        # load, not saved): the mean power spectrum of its rows and its total
        self._frame_power = torch.zeros((0, self.frame_shape[1] + 1), dtype=torch.float64, device=self.device)
        self._frame_totals = torch.zeros(0, dtype=torch.float64, device=self.device)
        self.data_scale: float | None = None
        self.indices: list[int] = []
        self.angles_deg: list[float] = []
        self.times_s: list[float] = []
        self.held_out: list[bool] = []
        self.metadata: list[dict[str, Any]] = []
        self._slot_of: dict[int, int] = {}
        self._frames = torch.zeros((0, *self.frame_shape), dtype=torch.float32, device=self.device)
        self._angles_rad = torch.zeros(0, dtype=torch.float32, device=self.device)
        self._times = torch.zeros(0, dtype=torch.float32, device=self.device)
        self.steps_done = 0
        self.loss_history: list[float] = []
        self._train_forward = self._compiled(self.model)  # the model or its DDP wrapper, maybe compiled
        self._ranks = 1

    # ------------------------------------------------------------------ frames
    @property
    def n_frames(self) -> int:
        """Frames added so far (training and held-out)."""
        return len(self.indices)

    @property
    def n_train_frames(self) -> int:
        """Frames the sampler trains on (not held out)."""
        return len(self.sampler.train_slots)

    @property
    def frame_records(self) -> list[dict[str, Any]]:
        """Per added frame, in order: ``index``, ``angle_deg``, ``time_s``, ``held_out`` and the metadata
        given to :meth:`add_frame` (e.g. ``dose_e_per_A2``, ``temperature_C``)."""
        return [{"index": i, "angle_deg": a, "time_s": t, "held_out": h, **m} for i, a, t, h, m in
                zip(self.indices, self.angles_deg, self.times_s, self.held_out, self.metadata)]

    def time_coordinate(self, time_s: float) -> float:
        """The network's time coordinate of ``time_s`` seconds: ``time_s / time_scale_s``."""
        return float(time_s) / self.time_scale_s

    def add_frame(self, index: int, frame: np.ndarray, angle_deg: float, time_s: float,
                  held_out: bool = False, metadata: Mapping[str, Any] | None = None) -> None:
        """Add one frame; callable between training steps.

        Parameters
        ----------
        index
            The frame's index in the session (unique).
        frame
            Shape ``(ny, nx)``, data units, finite.
        angle_deg
            Tilt angle, degrees.
        time_s
            Exposure midpoint, seconds since the session start.
        held_out
            Keep the frame out of training and use it to measure generalisation
            (:meth:`heldout_metrics`).
        metadata
            JSON-like per-frame values kept with the frame and its checkpoint (e.g. ``dose_e_per_A2``,
            ``temperature_C``); they appear in :attr:`frame_records`.

        Raises
        ------
        UserError
            Duplicate index, wrong shape, non-finite values or angle/time, or a first frame that is all zero.
        """
        frame = checked_frame(index, frame, angle_deg, time_s, self.frame_shape, self._slot_of)
        if self.data_scale is None:
            scale = _robust_max(frame)
            if scale <= 0:
                raise UserError(f"the first frame (index {index}) is all zero; normalisation needs signal")
            self.data_scale = scale
        slot = self.n_frames
        self._slot_of[int(index)] = slot
        self.indices.append(int(index))
        self.angles_deg.append(float(angle_deg))
        self.times_s.append(float(time_s))
        self.held_out.append(bool(held_out))
        self.metadata.append({str(k): v.item() if isinstance(v, np.generic) else v
                              for k, v in (metadata or {}).items()})
        tensor = torch.from_numpy(frame / np.float32(self.data_scale)).to(self.device)
        self._frames = torch.cat([self._frames, tensor[None]])
        self._add_window_statistics(tensor[None])
        self._angles_rad = torch.cat([self._angles_rad, torch.tensor(
            [math.radians(angle_deg)], dtype=torch.float32, device=self.device)])
        self._times = torch.cat([self._times, torch.tensor(
            [self.time_coordinate(time_s)], dtype=torch.float32, device=self.device)])
        if not held_out:
            self.sampler.add(slot)

    # ------------------------------------------------------------------ training
    def _coords(self, rows: torch.Tensor, times: torch.Tensor, angles_rad: torch.Tensor) -> torch.Tensor:
        """Coordinates (N, 3) from row indices, time coordinates and angles (broadcast to one shape)."""
        rows, times, angles_rad = torch.broadcast_tensors(rows.to(torch.float32), times, angles_rad)
        theta = angles_rad if self.config.use_angle else torch.zeros_like(angles_rad)
        coords = torch.stack([rows / self.frame_shape[0], times, theta], dim=-1)
        return coords.reshape(-1, 3)

    @property
    def row_window(self) -> np.ndarray | None:
        """The window ``(nx + 1,)`` of the data term's ramp filter (:mod:`tiltstream.recon.row_filter`) as of the last
        :meth:`train_steps`, or None without the ramp filter."""
        return None if self._row_window is None else self._row_window.cpu().numpy()

    def _add_window_statistics(self, frames: torch.Tensor) -> None:
        """Append the data window's statistics of ``frames`` ``(F, ny, nx)`` (normalised), when it has one:
        each frame's spectrum is computed once, not again whenever another frame arrives."""
        if self._row_window is None or self.config.ramp_window != "data":
            return
        self._frame_power = torch.cat([self._frame_power, row_power(frames)])
        self._frame_totals = torch.cat([self._frame_totals, frames.sum(dim=(1, 2), dtype=torch.float64)])

    def _refresh_row_gains(self) -> None:
        """With ``config.ramp_window == "data"``, recompute the ramp filter's window from the training
        frames (in time order) when frames were added since it was last computed."""
        if (self._row_window is None or self.config.ramp_window != "data"
                or self._window_frames == self.n_train_frames):
            return
        slots = torch.tensor(sorted(self.sampler.train_slots, key=lambda slot: self.times_s[slot]),
                             device=self.device)
        pixels = self.frame_shape[0] * self.frame_shape[1]
        power = self._frame_power[slots].mean(dim=0)
        self._row_window = window_from_statistics(power, self._frame_totals[slots], pixels)
        self._row_gains = ramp_gains(self.frame_shape[1], self.device, self._row_window)
        self._window_frames = self.n_train_frames

    def _loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        kind = self.config.loss
        compared = ((pred, target) if self._row_gains is None
                    else (ramp_filtered(pred, self._row_gains), ramp_filtered(target, self._row_gains)))
        if kind == "geman_mcclure":
            loss = geman_mcclure_loss(*compared, reduction="mean")
        else:
            diff = compared[0] - compared[1]
            loss = diff.abs().mean() if kind == "l1" else (diff * diff).mean()
        if self.config.tv_weight > 0:
            tv = (pred[..., 1:] - pred[..., :-1]).abs().sum(dim=-1).mean()
            loss = loss + self.config.tv_weight * tv
        return loss + self.model.prior_loss()

    def data_parallel(self, rank: int, world_size: int) -> None:
        """Train as rank ``rank`` of ``world_size`` of the initialised default process group.

        The model is wrapped in DistributedDataParallel (its parameters broadcast from rank 0, the
        gradients averaged); rank ``r > 0`` reseeds its sampler with ``seed + r`` (plus
        ``RESUME_SEED_STRIDE * steps_done`` on a resumed run) so every rank draws its own samples;
        rank 0 keeps the sampler state of the checkpoint.
        """
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self._train_forward = self._compiled(DistributedDataParallel(self.model, device_ids=device_ids))
        self._ranks = int(world_size)
        if rank > 0:
            self.sampler.generator.manual_seed(self.seed + int(rank) + RESUME_SEED_STRIDE * self.steps_done)

    @torch.no_grad()
    def _update_average(self) -> None:
        if self.average is not None:
            torch._foreach_lerp_(list(self.average.parameters()), list(self.model.parameters()),
                                 1.0 - self.config.ema_decay)

    @property
    def _query_model(self) -> torch.nn.Module:
        return self.average if self.average is not None else self.model

    def _compiled(self, module: torch.nn.Module) -> torch.nn.Module:
        return compiled(module, self.device) if self.compile_model else module

    def _forward(self, module: torch.nn.Module, coords: torch.Tensor) -> torch.Tensor:
        """Slices from ``module`` in this trainer's precision, returned as float32."""
        with self._autocast():
            return module(coords).float()

    def train_steps(self, n: int) -> float:
        """Run ``n`` optimisation steps; returns their mean loss (NaN when ``n`` is 0).

        Raises
        ------
        UserError
            When no training frame has been added.
        """
        if self.n_train_frames == 0:
            raise UserError("no training frames yet: add at least one frame that is not held out")
        cfg = self.config
        ny, nx = self.frame_shape
        self._refresh_row_gains()
        self.model.train()
        losses = torch.zeros(int(n), dtype=torch.float32, device=self.device)
        with self._math_mode():
            for step in range(int(n)):
                slots_cpu, rows_cpu = self.sampler.draw(cfg.batch_frames, cfg.rows_per_frame, ny)
                slots, rows = slots_cpu.to(self.device), rows_cpu.to(self.device)
                target = self._frames[slots[:, None], rows]  # (B, S, nx)
                angles = self._angles_rad[slots]
                coords = self._coords(rows, self._times[slots][:, None], angles[:, None])
                slices = self._forward(self._train_forward, coords)
                slices = slices.reshape(cfg.batch_frames, cfg.rows_per_frame, *self.slice_shape)
                pred = project(slices, angles, nx)
                loss = self._loss(pred, target)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.scheduler.step()
                self._update_average()
                losses[step] = loss.detach()
        if self._ranks > 1:  # the loss of the N*b batch: the mean over ranks
            torch.distributed.all_reduce(losses)
            losses /= self._ranks
        self.steps_done += int(n)
        values = losses.tolist()
        self.loss_history.extend(values)
        return float(np.mean(values)) if values else float("nan")

    def train(self, steps: int | None = None, seconds: float | None = None) -> float:
        """Train for ``steps`` steps or for about ``seconds`` seconds of wall clock (one of the two).

        With ``seconds`` the steps run one at a time until the time is spent (at least one step when
        ``seconds > 0``). Returns the mean loss of the steps done (NaN when none). Data-parallel ranks
        must all run the same steps: give them ``steps`` (rank 0 decides when a time budget is spent,
        as :func:`tiltstream.recon.training.train_loop` does).

        Raises
        ------
        UserError
            Neither or both of ``steps`` and ``seconds`` given, or no training frame yet.
        """
        if (steps is None) == (seconds is None):
            raise UserError("train: give exactly one of steps and seconds")
        if steps is not None:
            return self.train_steps(int(steps))
        losses: list[float] = []
        end = time.perf_counter() + float(seconds)
        while seconds > 0 and (not losses or time.perf_counter() < end):
            losses.append(self.train_steps(1))
        return float(np.mean(losses)) if losses else float("nan")

    @property
    def learning_rate(self) -> float:
        """The current learning rate, 1/step."""
        return float(self.optimizer.param_groups[0]["lr"])

    # ------------------------------------------------------------------ queries
    def _require_frames(self) -> None:
        if self.data_scale is None:
            raise UserError("no frames added yet: nothing to reconstruct")

    @torch.no_grad()
    def _slices(self, time_s: float, angle_rad: float) -> torch.Tensor:
        """All ny orthoslices at one time, normalised units, shape (ny, nz, nx)."""
        self._query_model.eval()
        ny = self.frame_shape[0]
        rows = torch.arange(ny, device=self.device)
        times = torch.full((ny,), self.time_coordinate(time_s), dtype=torch.float32, device=self.device)
        angles = torch.full((ny,), float(angle_rad), dtype=torch.float32, device=self.device)
        coords = self._coords(rows, times, angles)
        with self._math_mode():
            out = torch.cat([self._forward(self._query_model, chunk) for chunk in coords.split(QUERY_CHUNK)])
        self._query_model.train()
        return out

    def volume(self, time_s: float) -> np.ndarray:
        """The volume at ``time_s`` seconds, data units, float32, shape (nz, ny, nx) with nz = nx."""
        self._require_frames()
        slices = self._slices(time_s, 0.0) * self.data_scale  # (ny, nz, nx)
        return slices.permute(1, 0, 2).contiguous().cpu().numpy().astype(np.float32)

    def reproject(self, time_s: float, angle_deg: float) -> np.ndarray:
        """The predicted frame at ``time_s`` seconds and tilt ``angle_deg`` degrees, data units, (ny, nx)."""
        self._require_frames()
        angle_rad = math.radians(angle_deg)
        slices = self._slices(time_s, angle_rad)
        with torch.no_grad():
            angles = torch.full((1,), angle_rad, dtype=torch.float32, device=self.device)
            rows = project(slices[None], angles, self.frame_shape[1])[0] * self.data_scale
        return rows.cpu().numpy().astype(np.float32)

    def fold_in_held_out(self) -> int:
        """Make every held-out frame a training frame (drawn from the next steps on, as a new frame is).

        After held-out stopping has chosen a state, its held-out frames still carry data the model
        never saw: training on with them uses the whole session (``recon train --refit``).

        Returns
        -------
        int
            How many frames were folded in.
        """
        slots = [s for s, h in enumerate(self.held_out) if h]
        for slot in slots:
            self.held_out[slot] = False
            self.sampler.add(slot)
        return len(slots)

    def heldout_metrics(self) -> dict[str, float] | None:
        """Reprojection error of the held-out frames (:func:`tiltstream.recon.metrics.heldout_metrics`);
        None when there are none."""
        from tiltstream.recon.metrics import heldout_metrics

        return heldout_metrics((self._frames[slot].cpu().numpy() * self.data_scale,
                                self.reproject(self.times_s[slot], self.angles_deg[slot]))
                               for slot, held in enumerate(self.held_out) if held)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-for-bit (tensors on the CPU)."""
        return {
            "version": CHECKPOINT_VERSION,
            "config": self.config.model_dump(mode="json"),
            "frame_shape": list(self.frame_shape),
            "time_scale_s": self.time_scale_s,
            "seed": self.seed,
            "data_scale": self.data_scale,
            "indices": list(self.indices),
            "angles_deg": list(self.angles_deg),
            "times_s": list(self.times_s),
            "held_out": list(self.held_out),
            "metadata": [dict(m) for m in self.metadata],
            "frames": self._frames.cpu(),
            "model": {k: v.cpu() for k, v in self.model.state_dict().items()},
            "average": (None if self.average is None
                        else {k: v.cpu() for k, v in self.average.state_dict().items()}),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "steps_done": self.steps_done,
            "loss_history": torch.tensor(self.loss_history, dtype=torch.float32),
        }

    def save(self, path: str | Path) -> None:
        """Write the state atomically into run directory ``path`` (as ``checkpoint.pt``, the directory
        created if needed, and ``method`` recorded in its run.json) or, when ``path`` ends in ``.pt``, to
        that checkpoint file alone."""
        target = checkpoint_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        state = self.state_dict()
        write_atomic(target, lambda tmp: torch.save(state, tmp))
        if target != Path(path):
            RunDir(path).record_method(self.method)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", precision: Precision | str = "fp32",
             compile_model: bool = False) -> Trainer:
        """Restore onto ``device`` what :meth:`save` wrote into run directory (or ``.pt`` file) ``path``
        (``precision`` and ``compile_model`` as in the constructor).

        Raises
        ------
        UserError
            A missing or unreadable checkpoint.
        """
        path = checkpoint_path(path)
        if not path.is_file():
            raise UserError(f"checkpoint {str(path)!r} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated or foreign file
            raise UserError(f"checkpoint {str(path)!r} is not readable: {type(exc).__name__}: {exc}") from None
        if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
            raise UserError(f"checkpoint {str(path)!r} is not a tiltstream DIP-STER checkpoint "
                            f"(version {CHECKPOINT_VERSION})")
        trainer = cls(DipsterConfig.model_validate(state["config"]), tuple(state["frame_shape"]),
                      state["time_scale_s"], device=device, seed=state["seed"], precision=precision,
                      compile_model=compile_model)
        trainer.data_scale = state["data_scale"]
        trainer.indices = [int(i) for i in state["indices"]]
        trainer.angles_deg = [float(a) for a in state["angles_deg"]]
        trainer.times_s = [float(t) for t in state["times_s"]]
        trainer.held_out = [bool(h) for h in state["held_out"]]
        trainer.metadata = [dict(m) for m in state.get("metadata", [{} for _ in trainer.indices])]
        trainer._slot_of = {index: slot for slot, index in enumerate(trainer.indices)}
        trainer._frames = state["frames"].to(trainer.device)
        trainer._add_window_statistics(trainer._frames)
        trainer._angles_rad = torch.tensor([math.radians(a) for a in trainer.angles_deg],
                                           dtype=torch.float32, device=trainer.device)
        trainer._times = torch.tensor([trainer.time_coordinate(t) for t in trainer.times_s],
                                      dtype=torch.float32, device=trainer.device)
        trainer.model.load_state_dict(state["model"])
        if trainer.average is not None:
            trainer.average.load_state_dict(state.get("average") or state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.scheduler.load_state_dict(state["scheduler"])
        trainer.sampler.load_state_dict(state["sampler"])
        trainer.steps_done = int(state["steps_done"])
        trainer.loss_history = state["loss_history"].tolist()
        return trainer
