"""Subcommands of the ``recon`` package, registered on the ``tiltstream`` dispatcher."""

from __future__ import annotations

import argparse
import importlib

from tiltstream.command import register_group


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``recon`` group; each module below adds its own subcommands to it."""
    recon_sub = register_group(  # torch, kornia, scikit-image: `pip install "tiltstream[recon]"`
        subparsers, "recon", extra="recon", help="reconstruction: DIP-STER training and volumes, SIRT, metrics",
        description="Reconstruct recorded sessions (DIP-STER, moving-window SIRT) and measure them.")
    importlib.import_module("tiltstream.recon.train_cli").register(recon_sub)
    importlib.import_module("tiltstream.recon.sirt_cli").register(recon_sub)
    importlib.import_module("tiltstream.recon.metrics_cli").register(recon_sub)
    importlib.import_module("tiltstream.recon.stack_import").register(recon_sub)
    importlib.import_module("tiltstream.recon.align_cli").register(recon_sub)
