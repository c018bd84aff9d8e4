"""The ``tiltstream`` console command: a thin dispatcher over the subcommands each package registers.

Each package has a ``commands`` module with ``register(subparsers)``; it adds its subcommands and sets
``run`` (a callable taking the parsed namespace and returning an exit code). Command modules import
only light modules at top level, so ``tiltstream --help`` is fast; heavy imports happen in ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn

import pydantic

from acquire.config import describe_validation_error
from acquire.errors import UserError

PACKAGES = ("acquire", "simulator", "recon", "live")
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (no usage dump) and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full parser: every package's subcommands under one ``tiltstream`` command."""
    parser = OneLineParser(
        prog="tiltstream",
        description="Live dynamic electron tomography next to the microscope: plan GRS tilt schemes, "
        "acquire through the temscript bridge, stream frames over ZeroMQ, reconstruct with DIP-STER.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                       parser_class=OneLineParser)
    for package in PACKAGES:
        importlib.import_module(f"{package}.commands").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, run, and turn user-facing failures into one line and a non-zero exit."""
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"tiltstream {args.command}"
    try:
        return int(args.run(args) or 0)
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except pydantic.ValidationError as exc:
        print(f"{prog}: error: {describe_validation_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # an internal fault: one line unless debugging is asked for
        if os.environ.get("TILTSTREAM_DEBUG"):
            raise
        print(f"{prog}: internal error: {type(exc).__name__}: {exc} "
              "(set TILTSTREAM_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
