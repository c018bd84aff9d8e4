"""Incremental DIP-STER training: frames stream in, steps run between them, volumes come out any time.

One :class:`Trainer` owns the network, the optimiser (Adam), the scheduler (StepLR), the frame store
(:mod:`tiltstream.recon.frame_store`), the sampler, the weight average and the data term; its checkpoint
file is :mod:`tiltstream.recon.checkpoint`. Frames can be added between steps (live reconstruction) or
all at once (offline).

Conventions
-----------
- A frame's coordinates are ``(y_k / N_y, time_s / time_scale_s, theta_rad)`` (paper Eq. 3);
  ``time_scale_s`` is fixed when the trainer is created, so adding frames never changes the time
  coordinate of earlier ones (warm start).
- Data normalisation is fixed from the first frame: frames are divided by ``data_scale`` (a robust
  maximum of the first frame) so rows are O(1). :meth:`volume` and :meth:`reproject` return data
  units: a volume whose projections equal the frames.
- Loss (paper Eq. 6): :class:`tiltstream.recon.data_term.DataTerm` plus the network's ``prior_loss()``
  (zero for DIP-STER; plane smoothness for the K-planes field that :func:`build_network` builds when
  ``config.network == "kplanes"``).
- With ``config.frame_gain`` each predicted frame is multiplied by its intensity scale
  (:mod:`tiltstream.recon.frame_gain`) before the loss; with ``config.time_prior_weight`` a prior on
  change over time joins it (:meth:`_time_prior`), and with ``config.slice_tv_weight`` the 2-D total
  variation of the drawn slices (:func:`tiltstream.recon.data_term.slice_total_variation`). Volumes and
  reprojections are the object's, without gain.
- Volumes are queried at ``theta = 0`` (as the reference code does), with the exponential moving
  average of the weights when ``config.ema_decay > 0`` (:mod:`tiltstream.recon.weight_average`,
  updated after every step, saved in checkpoints).
- ``precision`` (fp32, tf32, bf16) and ``compile_model`` are how this process computes
  (:mod:`tiltstream.recon.precision`), not part of the run: a checkpoint continues in any of them.
- Deterministic on CPU: the same seed and the same sequence of ``add_frame`` / ``train_steps`` calls
  give the same weights; :meth:`save` / :meth:`load` then continuing equals uninterrupted training.
- Data-parallel (:meth:`data_parallel`, under ``torchrun``): each rank draws its own samples (rank
  ``r``'s sampler seeded with ``seed + r``), DistributedDataParallel averages the gradients, so a step
  of N ranks with ``batch_frames`` b is a step of batch N*b; the logged loss is the mean over ranks.
  Checkpoints hold the un-wrapped model, so a run continues on any number of ranks.
- :class:`Trainer` implements :class:`tiltstream.recon.reconstructor.Reconstructor` (``method = "dipster"``): its
  state lives in a run directory as its ``STATE_FILE``, per-frame metadata (dose, temperature) included.
"""


from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from tiltstream.errors import UserError
from tiltstream.recon.checkpoint import (CHECKPOINT_FILE, CHECKPOINT_VERSION, is_checkpoint_file, read_checkpoint,
                                         write_checkpoint)
from tiltstream.recon.data_term import DataTerm, slice_total_variation
from tiltstream.recon.frame_gain import FrameGains
from tiltstream.recon.frame_store import FrameStore
from tiltstream.recon.kplanes import KPlanesField
from tiltstream.recon.model import DipsterNet
from tiltstream.recon.precision import Precision, autocast_for, checked_precision, compiled, math_mode_for
from tiltstream.recon.presets import DipsterConfig
from tiltstream.recon.projector import project
from tiltstream.recon.run_dir import RunDir
from tiltstream.recon.sampler import FrameSampler
from tiltstream.recon.weight_average import WeightAverage

__all__ = ["DipsterConfig", "Trainer"]

QUERY_CHUNK = 64  # slices per forward pass when querying volumes
RESUME_SEED_STRIDE = 1_000_003  # a resumed rank r > 0 reseeds its sampler by seed + r + stride * steps


def build_network(config: DipsterConfig, frame_shape: tuple[int, int]) -> torch.nn.Module:
    """The network ``config.network`` names, for frames of ``frame_shape`` ``(ny, nx)`` (slices ``(nx, nx)``)."""
    slice_shape = (frame_shape[1], frame_shape[1])
    if config.network == "kplanes":
        return KPlanesField(config, slice_shape, frame_shape[0])
    return DipsterNet(config, slice_shape)


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
    STATE_FILE: ClassVar[str] = CHECKPOINT_FILE

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
        if self.device.type == "cpu" and self.precision == "fp32" and isinstance(self.model, DipsterNet):
            # oneDNN convolves channels-last float32 maps without reordering them at every call: fp32 steps
            # 1.14-1.41x faster on the CPU, bf16 ones not (docs/benchmarks/speed.md, "Channels-last"); a
            # forward pass gives the same values to ~1e-7
            self.model.to(memory_format=torch.channels_last)
        self.weights = WeightAverage(self.model, config.ema_decay)
        # fused: one kernel for all parameters instead of a loop of ~10 ops per parameter tensor
        # (docs/benchmarks/gpu.md "Fused Adam")
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, betas=(0.9, config.adam_beta2),
                                          fused=True)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=config.lr_step_steps,
                                                         gamma=config.lr_gamma)
        self.sampler = FrameSampler(self.seed, config.fresh_per_step)
        self.data_term = DataTerm(config, self.frame_shape[1], self.device)
        self.store = FrameStore(self.frame_shape, self.time_scale_s, self.device, self.data_term.data_window)
        self.gains = FrameGains(self.device) if config.frame_gain else None
        self.steps_done = 0
        self.loss_history: list[float] = []
        self._train_forward = self._compiled(self.model)  # the model or its DDP wrapper, maybe compiled
        self._ranks = 1

    # ------------------------------------------------------------------ frames
    @property
    def n_frames(self) -> int:
        """Frames added so far (training and held-out)."""
        return len(self.store)

    @property
    def n_train_frames(self) -> int:
        """Frames the sampler trains on (not held out)."""
        return len(self.sampler.train_slots)

    @property
    def frame_records(self) -> list[dict[str, Any]]:
        """Per added frame, in order: ``index``, ``angle_deg``, ``time_s``, ``held_out`` and the metadata
        given to :meth:`add_frame` (e.g. ``dose_e_per_A2``, ``temperature_C``)."""
        return self.store.records

    @property
    def indices(self) -> list[int]:
        """Session indices of the added frames, in order of addition."""
        return self.store.indices

    @property
    def angles_deg(self) -> list[float]:
        """Tilt angles of the added frames, degrees."""
        return self.store.angles_deg

    @property
    def times_s(self) -> list[float]:
        """Times of the added frames, seconds since the session start."""
        return self.store.times_s

    @property
    def held_out(self) -> list[bool]:
        """Whether each added frame is held out of training."""
        return self.store.held_out

    @property
    def data_scale(self) -> float | None:
        """Frames are divided by this (a robust maximum of the first frame, data units); None before one."""
        return self.store.data_scale

    @data_scale.setter
    def data_scale(self, value: float | None) -> None:
        self.store.data_scale = value

    @property
    def average(self) -> torch.nn.Module | None:
        """The moving average of the weights (None when ``config.ema_decay`` is 0)."""
        return self.weights.average

    def time_coordinate(self, time_s: float) -> float:
        """The network's time coordinate of ``time_s`` seconds: ``time_s / time_scale_s``."""
        return self.store.time_coordinate(time_s)

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
        slot = self.store.add(index, frame, angle_deg, time_s, held_out, metadata)
        if self.gains is not None:
            self.gains.add()
        if not held_out:
            self.sampler.add(slot)

    def fold_in_held_out(self) -> int:
        """Make every held-out frame a training frame (drawn from the next steps on, as a new frame is).

        After held-out stopping has chosen a state, its held-out frames still carry data the model
        never saw: training on with them uses the whole session (``recon train --refit``).

        Returns
        -------
        int
            How many frames were folded in.
        """
        slots = self.store.held_out_slots()
        for slot in slots:
            self.store.held_out[slot] = False
            self.sampler.add(slot)
        return len(slots)

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
        return self.data_term.window_array()

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

    def _compiled(self, module: torch.nn.Module) -> torch.nn.Module:
        return compiled(module, self.device) if self.compile_model else module

    def _forward(self, module: torch.nn.Module, coords: torch.Tensor) -> torch.Tensor:
        """Slices from ``module`` in this trainer's precision, returned as float32."""
        with self._autocast():
            return module(coords).float()

    def _step(self) -> torch.Tensor:
        """One optimisation step on a drawn batch; returns its loss (detached)."""
        cfg = self.config
        slots_cpu, rows_cpu = self.sampler.draw(cfg.batch_frames, cfg.rows_per_frame, self.frame_shape[0])
        slots, rows = slots_cpu.to(self.device), rows_cpu.to(self.device)
        target = self.store.frames[slots[:, None], rows]  # (B, S, nx)
        angles = self.store.angles_rad[slots]
        coords = self._coords(rows, self.store.times[slots][:, None], angles[:, None])
        slices = self._forward(self._train_forward, coords)
        slices = slices.reshape(cfg.batch_frames, cfg.rows_per_frame, *self.slice_shape)
        pred = project(slices, angles, self.frame_shape[1])
        if self.gains is not None:
            self.gains.observe(slots, pred, target)
            pred = pred * self.gains.factors(slots)[:, None, None]
        loss = self.data_term(pred, target, self.model)
        if cfg.time_prior_weight > 0:
            loss = loss + cfg.time_prior_weight * self._time_prior(coords, slices)
        if cfg.slice_tv_weight > 0:
            loss = loss + cfg.slice_tv_weight * slice_total_variation(slices) * self.frame_shape[1]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.weights.update()
        if self.gains is not None and self._ranks > 1:
            self.gains.synchronise(self._ranks)
        return loss.detach()

    def _time_prior(self, coords: torch.Tensor, slices: torch.Tensor) -> torch.Tensor:
        """The prior on change over time: mean squared difference, in row units (values times nx), of
        ``slices`` and the same rows and angles at ``t + d``, ``d`` uniform in ``+-time_prior_span``
        (drawn from the sampler's generator)."""
        span = self.config.time_prior_span
        offsets = (torch.rand(coords.shape[0], generator=self.sampler.generator) * 2.0 - 1.0) * span
        moved = coords.clone()
        moved[:, 1] += offsets.to(self.device)
        other = self._forward(self._train_forward, moved).reshape(slices.shape)
        return ((slices - other) * self.frame_shape[1]).square().mean()

    def frame_gains(self) -> np.ndarray | None:
        """Per added frame, its intensity scale (:mod:`tiltstream.recon.frame_gain`; 1 for frames not drawn
        yet), float32 ``(n_frames,)``; None when ``config.frame_gain`` is off."""
        if self.gains is None:
            return None
        return torch.exp(self.gains.log_gains()).cpu().numpy()

    def train_steps(self, n: int) -> float:
        """Run ``n`` optimisation steps; returns their mean loss (NaN when ``n`` is 0).

        Raises
        ------
        UserError
            When no training frame has been added.
        """
        if self.n_train_frames == 0:
            raise UserError("no training frames yet: add at least one frame that is not held out")
        self.data_term.refresh(self.store, self.sampler.train_slots)
        self.model.train()
        losses = torch.zeros(int(n), dtype=torch.float32, device=self.device)
        with self._math_mode():
            for step in range(int(n)):
                losses[step] = self._step()
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
        query_model = self.weights.query_model
        query_model.eval()
        ny = self.frame_shape[0]
        rows = torch.arange(ny, device=self.device)
        times = torch.full((ny,), self.time_coordinate(time_s), dtype=torch.float32, device=self.device)
        angles = torch.full((ny,), float(angle_rad), dtype=torch.float32, device=self.device)
        coords = self._coords(rows, times, angles)
        with self._math_mode():
            out = torch.cat([self._forward(query_model, chunk) for chunk in coords.split(QUERY_CHUNK)])
        query_model.train()
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

    def heldout_metrics(self) -> dict[str, float] | None:
        """Reprojection error of the held-out frames (:func:`tiltstream.recon.metrics.heldout_metrics`);
        None when there are none."""
        from tiltstream.recon.metrics import heldout_metrics

        return heldout_metrics((self.store.frame(slot), self.reproject(self.times_s[slot], self.angles_deg[slot]))
                               for slot in self.store.held_out_slots())

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-for-bit (tensors on the CPU; :mod:`tiltstream.recon.checkpoint`)."""
        return {
            "version": CHECKPOINT_VERSION,
            "config": self.config.model_dump(mode="json"),
            "frame_shape": list(self.frame_shape),
            "time_scale_s": self.time_scale_s,
            "seed": self.seed,
            **self.store.state_dict(),
            "model": {k: v.cpu() for k, v in self.model.state_dict().items()},
            "average": self.weights.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "steps_done": self.steps_done,
            "loss_history": torch.tensor(self.loss_history, dtype=torch.float32),
            **({"frame_gains": self.gains.state_dict()} if self.gains is not None else {}),
        }

    def save(self, run_dir: str | Path) -> None:
        """Write the state atomically into run directory ``run_dir`` (its :attr:`STATE_FILE`, the directory
        created if needed, the method recorded by :class:`tiltstream.recon.run_dir.RunDir`) or, when
        ``run_dir`` ends in ``.pt``, to that checkpoint file alone."""
        if is_checkpoint_file(run_dir):
            Path(run_dir).parent.mkdir(parents=True, exist_ok=True)
            write_checkpoint(Path(run_dir), self.state_dict())
            return
        run = RunDir(run_dir)
        run.path.mkdir(parents=True, exist_ok=True)
        write_checkpoint(run.state_path(self.STATE_FILE), self.state_dict())
        run.update(method=self.method)

    @classmethod
    def load(cls, run_dir: str | Path, device: str | torch.device = "cpu", precision: Precision | str = "fp32",
             compile_model: bool = False) -> Trainer:
        """Restore onto ``device`` what :meth:`save` wrote into run directory ``run_dir`` (or into a ``.pt``
        file) (``precision`` and ``compile_model`` as in the constructor).

        Raises
        ------
        UserError
            A missing or unreadable checkpoint.
        """
        path = Path(run_dir) if is_checkpoint_file(run_dir) else RunDir(run_dir).state_path(cls.STATE_FILE)
        state = read_checkpoint(path)
        trainer = cls(DipsterConfig.model_validate(state["config"]), tuple(state["frame_shape"]),
                      state["time_scale_s"], device=device, seed=state["seed"], precision=precision,
                      compile_model=compile_model)
        trainer.store.load_state_dict(state)
        trainer.model.load_state_dict(state["model"])
        trainer.weights.load_state_dict(state.get("average"), state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.scheduler.load_state_dict(state["scheduler"])
        trainer.sampler.load_state_dict(state["sampler"])
        trainer.steps_done = int(state["steps_done"])
        trainer.loss_history = state["loss_history"].tolist()
        if trainer.gains is not None:
            trainer.gains.load_state_dict(state.get("frame_gains"), len(trainer.store))
        return trainer
