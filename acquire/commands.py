"""Subcommands of the ``acquire`` package, registered on the ``tiltstream`` dispatcher."""

from __future__ import annotations

import argparse

from tiltstream.acquire import acquire_cli, export_cli, scheme_cli


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this package's subcommands (each module below adds its own); all run with the core install."""
    scheme_cli.register(subparsers)
    acquire_cli.register(subparsers)
    export_cli.register(subparsers)
