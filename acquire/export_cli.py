"""``tiltstream export``: write a recorded session as an IMOD/SerialEM stack (.mrc + .rawtlt + .mrc.mdoc)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tiltstream.command import register_command


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``tiltstream export`` (no settings: its three options say everything)."""
    register_command(
        subparsers, "export", settings=None, run=run, arguments=_arguments, logs=False,
        help="export a session to IMOD/SerialEM (.mrc stack, .rawtlt, .mrc.mdoc)",
        description="Write a recorded session as OUT.mrc (stack, pixel size in the header), OUT.rawtlt "
        "(reported tilt angles, degrees) and OUT.mrc.mdoc (SerialEM autodoc: tilt, exposure, dose, time).")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--session", required=True, type=Path, help="recorded session directory")
    parser.add_argument("--imod", required=True, type=Path, metavar="OUT", help="output stem (OUT.mrc, ...)")
    parser.add_argument("--order", choices=("acquisition", "angle"), default="acquisition",
                        help="stack order: as acquired (GRS order) or sorted by tilt angle [default: acquisition]")


def run(settings: None, args: argparse.Namespace) -> int:
    """Export; prints the written paths."""
    from tiltstream.acquire.imod_export import export_imod

    for path in export_imod(args.session, args.imod, order=args.order):
        print(path, file=sys.stdout)
    return 0
