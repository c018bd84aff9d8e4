"""Subcommands of the ``simulator`` package, registered on the ``tiltstream`` dispatcher."""

from __future__ import annotations

import argparse
import importlib


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this package's subcommands (each module below adds its own).

    ``sim`` needs the ``[sim]`` extra (torch: the phantoms and recon's projector); ``replay`` streams a
    recorded session with the core install alone.
    """
    importlib.import_module("tiltstream.simulator.sim_cli").register(subparsers)
    importlib.import_module("tiltstream.simulator.replay_stream").register(subparsers)
