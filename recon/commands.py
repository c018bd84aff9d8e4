"""Subcommands of the ``recon`` package, registered on the ``tiltstream`` dispatcher."""

from __future__ import annotations

import argparse
import importlib


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``recon`` group; each module below adds its own subcommands to it."""
    recon = subparsers.add_parser("recon", help="reconstruction: DIP-STER training and volumes, SIRT, metrics",
                                  description="Reconstruct recorded sessions (DIP-STER, moving-window SIRT) "
                                  "and measure them.")
    recon.set_defaults(extra="recon")  # torch, kornia, scikit-image: `pip install "tiltstream[recon]"`
    recon_sub = recon.add_subparsers(dest="recon_command", metavar="SUBCOMMAND", required=True,
                                     parser_class=type(recon))
    importlib.import_module("tiltstream.recon.train_cli").register(recon_sub)
    importlib.import_module("tiltstream.recon.sirt_cli").register(recon_sub)
    importlib.import_module("tiltstream.recon.metrics_cli").register(recon_sub)
    importlib.import_module("tiltstream.recon.stack_import").register(recon_sub)
    importlib.import_module("tiltstream.recon.align_cli").register(recon_sub)
