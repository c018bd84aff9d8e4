"""``tiltstream recon sirt``: the moving-window SIRT baseline of a recorded session, as a volume series.

The volume at each frame's time is SIRT of the frames around it in acquisition order
(:func:`tiltstream.recon.sirt.moving_window_sirt`); the series (T = frames, Z, Y, X) float32 in data units is
written with :func:`tiltstream.recon.volume_io.write_volumes` (``.tif`` or ``.mrc`` plus ``<stem>_times.csv``).
Under ``torchrun`` each rank reconstructs every N-th window and rank 0 writes the one file (cold windows
are independent; ``--warm-start`` chains them, so it runs in one process only).
With ``--static`` (a specimen that does not change) all frames make one SIRT volume, written as a
one-volume series at the mean frame time: repeating it per frame would only multiply the file and
suggest a time resolution the reconstruction does not have.
Heavy modules (torch) are imported inside the command, so ``tiltstream --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pydantic

from tiltstream.command import register_command
from tiltstream.errors import UserError
from tiltstream.progress import stderr_progress

if TYPE_CHECKING:
    import numpy as np
    import torch


class ReconSirtSettings(pydantic.BaseModel):
    """Settings of ``tiltstream recon sirt`` (defaults also in ``config/sirt.toml``)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    static: bool = pydantic.Field(
        default=False, description="a static specimen: one SIRT volume of all frames (no window), written "
        "as a one-volume series at the mean frame time")
    window: int = pydantic.Field(
        default=30, ge=1, description="window width, frames: the volume at frame i uses frames "
        "i-window/2 .. i+window/2 (fewer at the ends; the paper: 30)")
    iterations: int = pydantic.Field(default=30, ge=0, description="SIRT iterations per window (the paper: 30)")
    warm_start: bool = pydantic.Field(
        default=False, description="start each window from the previous volume instead of zeros (converges "
        "further, amplifies noise; off = the paper's baseline)")
    nonnegative: bool = pydantic.Field(default=True, description="clamp volumes to >= 0 after every iteration "
                                       "(ASTRA's MinConstraint = 0, the strong baseline; --no-nonnegative: off)")
    thickness: int | None = pydantic.Field(
        default=None, ge=1, description="volume size along the beam (Z), voxels (default: the frame width)")
    format: Literal["tif", "mrc"] | None = pydantic.Field(
        default=None, description="output format (default: from the file name, tif unless .mrc)")
    device: Literal["auto", "cpu", "cuda"] = pydantic.Field(
        default="auto", description="where to compute: auto picks CUDA when available")
    threads: int | None = pydantic.Field(
        default=None, ge=1, description="CPU threads for torch (default: torch's choice)")


def run_sirt(settings: ReconSirtSettings, args: argparse.Namespace) -> int:
    """Reconstruct a session with moving-window SIRT and write the volume series."""
    import numpy as np
    import torch

    from tiltstream.recon import distributed
    from tiltstream.recon.device import resolve_device
    from tiltstream.recon.sirt import moving_window_sirt, sirt, window_bounds
    from tiltstream.recon.volume_io import write_volumes

    from tiltstream.recon.session_frames import load_session_frames

    world = distributed.world_from_env()
    if world.distributed and settings.warm_start:
        raise UserError("--warm-start chains every window to the one before: run it in one process, not "
                        "under torchrun")
    if settings.static and (settings.warm_start or world.distributed):
        raise UserError("--static is one SIRT run of all frames: give it without --warm-start, in one process "
                        "(not under torchrun)")
    session, frames = load_session_frames(Path(args.session))
    if settings.threads:
        torch.set_num_threads(settings.threads)
    world = distributed.start(world, resolve_device(settings.device))
    order = np.argsort(session.times_s, kind="stable")
    frames, angles_deg, times_s = frames[order], session.angles_deg[order], session.times_s[order]
    ny, nx = frames.shape[1:]
    shape = (settings.thickness or nx, ny, nx)
    if settings.static:
        return _write_static(settings, args, frames, angles_deg, times_s, shape, world.device,
                             session.settings.pixel_size_nm)
    if world.is_main:
        print(f"recon sirt: {len(frames)} frames {ny}x{nx}, window {settings.window}, {settings.iterations} "
              f"iterations, volume {shape} (Z, Y, X)" + (f", {world.size} ranks" if world.distributed else ""),
              file=sys.stderr)
    report = stderr_progress("recon sirt: volume", "volumes") if world.is_main else None
    if not world.distributed:
        volumes = moving_window_sirt(frames, angles_deg, shape, window=settings.window,
                                     iterations=settings.iterations, warm_start=settings.warm_start,
                                     nonnegative=settings.nonnegative, device=world.device, progress=report)
    else:
        def window_volume(i: int) -> np.ndarray:
            start, stop = window_bounds(i, len(frames), settings.window)
            return sirt(frames[start:stop], angles_deg[start:stop], shape, iterations=settings.iterations,
                        nonnegative=settings.nonnegative, device=world.device)

        try:
            results = distributed.split_across_ranks(world, len(frames), window_volume, report)
        except distributed.PeerLost as exc:
            print(f"tiltstream recon sirt: {exc}; no file written", file=sys.stderr)
            return 1
        if results is None:
            return 0
        volumes = np.stack(results).astype(np.float32)
    path = write_volumes(args.out, volumes, times_s, format=settings.format,
                         voxel_size_nm=session.settings.pixel_size_nm)
    print(f"recon sirt: wrote {len(volumes)} volumes to {path} (times in {path.stem}_times.csv)",
          file=sys.stderr)
    return 0


def _write_static(settings: ReconSirtSettings, args: argparse.Namespace, frames: np.ndarray,
                  angles_deg: np.ndarray, times_s: np.ndarray, shape: tuple[int, int, int],
                  device: torch.device, voxel_size_nm: float | None) -> int:
    """``--static``: SIRT of all ``frames`` (n, ny, nx) into one volume ``shape`` (Z, Y, X), written as a
    one-volume series at the mean of ``times_s``."""
    import numpy as np

    from tiltstream.recon.sirt import sirt
    from tiltstream.recon.volume_io import write_volumes

    print(f"recon sirt: static, {len(frames)} frames {frames.shape[1]}x{frames.shape[2]}, {settings.iterations} "
          f"iterations, one volume {shape} (Z, Y, X)", file=sys.stderr)
    volume = sirt(frames, angles_deg, shape, iterations=settings.iterations, nonnegative=settings.nonnegative,
                  device=device)
    time_s = float(np.mean(times_s))
    path = write_volumes(args.out, volume[None], np.array([time_s]), format=settings.format,
                         voxel_size_nm=voxel_size_nm)
    print(f"recon sirt: wrote one volume (static, all frames, at the mean frame time {time_s:.1f} s) to {path}",
          file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sirt`` to the ``recon`` group."""
    register_command(
        subparsers, "sirt", settings=ReconSirtSettings, run=run_sirt, config_name="sirt",
        arguments=_session_and_out, logs=False,
        help="moving-window SIRT of a recorded session (the paper's baseline)",
        description="Reconstruct one volume per frame with SIRT over the frames around it in time "
        "(window 30 = frames i-15..i+15) and write the series (T, Z, Y, X) float32 in data units with a "
        "times CSV (<stem>_times.csv). --static: one volume of all frames (a specimen that does not change).")


def _session_and_out(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--session", required=True, metavar="DIR", help="recorded session directory")
    parser.add_argument("--out", required=True, metavar="FILE", help="output volume file (.tif or .mrc)")
