"""Settings models of the live processes (``live``, ``view``, ``demo``): pydantic only, light to import."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pydantic

from tiltstream.recon.train_options import (CompileOption, DeviceOption, HoldoutOption, PrecisionOption,
                                            PresetOption, SeedOption, ThreadsOption)


class LiveSettings(pydantic.BaseModel):
    """``tiltstream live``: reconstruct a session while it is acquired (config/live.toml)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    connect: str = pydantic.Field(default="tcp://127.0.0.1:5555",
                                  description="frame stream endpoint to subscribe to (the publisher's PUB)")
    session: Path | None = pydantic.Field(
        default=None, description="session directory (catch-up of recorded frames; session.json gives "
        "the scheme count for the time scale)")
    resend: str | None = pydantic.Field(
        default=None, description="publisher's resend endpoint, for catch-up when the session directory "
        "is on another machine")
    out: Path = pydantic.Field(default=Path("live-run"), description="run directory (run.json, the "
                               "reconstruction's state, train_log.csv, endpoints, volumes), as recon train writes")
    status: str = pydantic.Field(default="tcp://127.0.0.1:5556",
                                 description="status stream endpoint to bind (PUB), loopback by default")
    volume_endpoint: str = pydantic.Field(
        default="tcp://127.0.0.1:5557", description="endpoint to bind (ROUTER) for viewers' volume requests")
    headless: bool = pydantic.Field(default=False, description="do not open the viewer window")
    snapshots: Path | None = pydantic.Field(
        default=None, description="directory for PNG snapshots of the viewer panels (rendered offscreen)")
    snapshot_interval_s: float = pydantic.Field(default=30.0, gt=0,
                                                description="seconds between snapshots, wall clock")
    device: DeviceOption
    threads: ThreadsOption
    method: Literal["dipster", "sirt"] = pydantic.Field(
        default="dipster", description="reconstruction method: dipster (the network) or sirt (moving-window "
        "SIRT, non-negative, the paper's baseline)")
    preset: PresetOption
    precision: PrecisionOption
    compile: CompileOption
    sirt_window: int = pydantic.Field(default=30, ge=1, description="SIRT window width, frames (method sirt)")
    sirt_iterations: int = pydantic.Field(default=30, ge=0,
                                          description="SIRT iterations per window (method sirt)")
    holdout: HoldoutOption = 0.0
    log_interval_s: float = pydantic.Field(
        default=10.0, gt=0, description="seconds between train_log.csv rows (and held-out evaluations), "
        "wall clock")
    seed: SeedOption
    align_tracked: bool = pydantic.Field(
        default=True, description="shift each frame by minus the specimen shift its tracking measured before "
        "it enters the reconstruction (recon train --preprocess align_from = recorded), so the model is aligned "
        "to the first frame, as acquire --track model expects; frames tracking lost stay unshifted")
    time_scale_s: float | None = pydantic.Field(
        default=None, gt=0, description="seconds per unit of the network's time coordinate; default: "
        "expected frames x frame interval (first two frames' spacing), fixed at the first frame")
    expected_frames: int | None = pydantic.Field(
        default=None, ge=1, description="frames in the session; default: session.json scheme count "
        "(endless session when unknown)")
    steps_per_frame: int | None = pydantic.Field(
        default=None, ge=0, description="deterministic schedule: after each new frame train exactly this "
        "many steps (same as offline); default: the continuous schedule (max_steps_per_frame)")
    max_steps_per_frame: int = pydantic.Field(
        default=50, ge=0, description="continuous schedule: train at most this many steps per frame in the "
        "model, then wait for the next frame, so a long session does not over-fit the frames it has; every "
        "pending frame still enters at once (0: no cap, train for as long as the session lasts)")
    chunk_steps: int = pydantic.Field(default=25, ge=1,
                                      description="training steps between polls of the stream, steps")
    final_steps: int = pydantic.Field(
        default=0, ge=0, description="steps to train after the last expected frame before finishing, steps")
    checkpoint_interval_s: float = pydantic.Field(default=30.0, gt=0,
                                                  description="seconds between checkpoints, wall clock")
    orthoslice_interval_s: float = pydantic.Field(
        default=2.0, gt=0, description="seconds between broadcasts of the latest orthoslices, wall clock")
    volumes_out: int = pydantic.Field(
        default=0, ge=0, description="volumes to write at the end, evenly spaced in time (0: one per frame)")
    idle_timeout_s: float | None = pydantic.Field(
        default=None, gt=0, description="finish when no frame has arrived for this long after the "
        "last one, seconds (default: wait for the expected frames, or for SIGINT/SIGTERM)")


class ViewSettings(pydantic.BaseModel):
    """``tiltstream view``: the viewer window over a live process's status stream, or a run directory
    offline (config/view.toml)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    connect: str = pydantic.Field(default="tcp://127.0.0.1:5556", description="status stream endpoint")
    run_dir: Path | None = pydantic.Field(
        default=None, description="draw this run directory offline (tiltstream live or recon train --out: "
        "loss and held-out curves, orthoslices) instead of connecting to a live process")
    time_s: float | None = pydantic.Field(
        default=None, description="with --run: time of the orthoslices shown first, seconds (default: the "
        "latest frame)")
    checkpoint: Literal["auto", "refit", "best", "last"] = pydantic.Field(
        default="auto", description="with --run: the state whose orthoslices are drawn: auto (as recon volumes "
        "and the run's volumes.tif: the first of refit, best, last the run keeps), refit, best or last")
    headless: bool = pydantic.Field(default=False,
                                    description="no window: render offscreen and write --snapshots")
    snapshots: Path | None = pydantic.Field(default=None, description="directory for PNG snapshots")
    snapshot_interval_s: float = pydantic.Field(default=10.0, gt=0,
                                                description="seconds between snapshots, wall clock")
    refresh_interval_s: float = pydantic.Field(default=0.1, gt=0,
                                               description="seconds between redraws, wall clock")
    until_finished: bool = pydantic.Field(
        default=False, description="exit (after a last snapshot) when the live process reports it finished")
    timeout_s: float | None = pydantic.Field(default=None, gt=0,
                                             description="exit after this many seconds, wall clock")
