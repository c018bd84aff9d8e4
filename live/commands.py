"""Subcommands of the ``live`` package, registered on the ``tiltstream`` dispatcher."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this package's subcommands (each module below adds its own)."""
    from live import demo, live_cli

    live_cli.register(subparsers)
    demo.register(subparsers)
