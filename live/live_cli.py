"""The ``tiltstream live`` and ``tiltstream view`` subcommands (light module: heavy imports happen in run)."""

from __future__ import annotations

import argparse

from tiltstream.command import register_command
from tiltstream.config import overrides_from_args
from tiltstream.errors import UserError
from tiltstream.live.settings import LiveSettings, ViewSettings


def _run_live(settings: LiveSettings, args: argparse.Namespace) -> int:
    from tiltstream.live.reconstruction import run_live

    return run_live(settings)


def _run_view(settings: ViewSettings, args: argparse.Namespace) -> int:
    given = overrides_from_args(args, ViewSettings)
    for option in ("checkpoint", "time_s"):
        if option in given and settings.run_dir is None:
            raise UserError(f"--{option.replace('_', '-')} needs --run RUN_DIR (it chooses what a run directory "
                            "shows offline; the live viewer always shows the latest state)")
    from tiltstream.live.viewer import run_view

    return run_view(settings)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``live`` and ``view`` (both need the ``[live]`` extra: torch, pyqtgraph, PySide6)."""
    register_command(
        subparsers, "live", settings=LiveSettings, run=_run_live, config_name="live", extra="live",
        help="reconstruct a session (DIP-STER or moving-window SIRT) while it is acquired; publish "
        "status and reprojections",
        description="Subscribe to a frame stream (catching up on frames already recorded in the session "
        "directory), add each new frame to the reconstruction (--method dipster|sirt) without restarting it, "
        "train while frames arrive (at most --max-steps-per-frame steps per frame), checkpoint the run "
        "directory (the recon train format) periodically and on SIGINT/SIGTERM, resume from it when "
        "restarted, publish status, reprojections and orthoslices on the status stream, and answer volume "
        "and reprojection requests.")
    register_command(
        subparsers, "view", settings=ViewSettings, run=_run_view, config_name="view", extra="live",
        rename={"run_dir": "--run"},
        help="show a live reconstruction (frames, reprojections, residuals, orthoslices, curves, "
        "tracking), or a run directory offline",
        description="A pyqtgraph window over the status stream of `tiltstream live`, or with --run RUN_DIR "
        "over a finished or stopped run directory (loss and held-out curves, orthoslices at any time); with "
        "--headless it renders offscreen and writes PNG snapshots to --snapshots DIR.")
