"""Subcommands of the ``live`` package, registered on the ``tiltstream`` dispatcher."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this package's subcommands (each module below adds its own).

    ``live`` and ``view`` need the ``[live]`` extra (torch, pyqtgraph, PySide6); ``demo`` runs every part
    on one machine and asks for ``[all]``.
    """
    from tiltstream.live import demo, live_cli

    live_cli.register(subparsers)
    demo.register(subparsers)
