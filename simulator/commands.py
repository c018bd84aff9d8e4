"""Subcommands of the ``simulator`` package, registered on the ``tiltstream`` dispatcher."""

from __future__ import annotations

import argparse
import importlib


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this package's subcommands (each module below adds its own)."""
    importlib.import_module("simulator.sim_cli").register(subparsers)
    importlib.import_module("simulator.replay_stream").register(subparsers)
