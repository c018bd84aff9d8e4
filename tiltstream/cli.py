"""The ``tiltstream`` console command: a thin dispatcher over the subcommands each package registers.

Each package has a ``commands`` module with ``register(subparsers)``; it adds its subcommands with
:func:`tiltstream.command.register_command` (a settings model plus a function), which sets ``run`` (a
callable taking the parsed namespace and returning an exit code) and, for a command that needs an
optional extra, ``extra`` (``recon``, ``sim``, ``live`` or ``all``). Command modules import
only light modules at top level, so ``tiltstream --help`` is fast and the core install (no torch,
kornia or Qt) can parse every command; heavy imports happen in ``run``. When one of them fails because
the extra is not installed, the command ends with one line naming the extra to install (exit 3).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from typing import Any, NoReturn

import pydantic

from tiltstream.config import describe_validation_error
from tiltstream.errors import MicroscopeFault, UserError

PACKAGES = ("acquire", "simulator", "recon", "live")
# exit codes (docs/design.md, command line): 0 done, 1 internal error, 2 bad input (a value, a file),
# 3 a missing extra, 4 a microscope or bridge fault, 130 interrupted
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_MISSING_EXTRA = 3
EXIT_MICROSCOPE = 4
EXIT_INTERRUPTED = 130
# optional top-level modules: the distribution that provides each, and the extra that installs it for a
# command that declares none (the core commands: a failure there names the smallest extra)
OPTIONAL_MODULES = {
    "torch": ("torch", "recon"),
    "kornia": ("kornia", "recon"),
    "skimage": ("scikit-image", "recon"),
    "pyqtgraph": ("pyqtgraph", "live"),
    "PySide6": ("PySide6-Essentials", "live"),
    "matplotlib": ("matplotlib", "bench"),
    "mdocfile": ("mdocfile", "recon"),
    "rsciio": ("rosettasciio", "recon"),
    "h5py": ("h5py", "recon"),
    "pint": ("rosettasciio", "recon"),
}


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
        importlib.import_module(f"tiltstream.{package}.commands").register(subparsers)
    _name_commands(parser)
    return parser


def _name_commands(parser: argparse.ArgumentParser) -> None:
    """Give every (sub)command the default ``command_path``, its full name (``tiltstream recon train``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.set_defaults(command_path=sub.prog)
                _name_commands(sub)


def missing_extra(exc: ImportError, extra: str | None) -> str | None:
    """What to install when ``exc`` is an optional dependency that failed to import; None otherwise.

    Parameters
    ----------
    exc
        The import error a command raised.
    extra
        The extra the command declared (None: the one that brings the missing module).

    Returns
    -------
    str or None
        ``needs the [recon] extra (torch is not installed): pip install "tiltstream[recon]"``, or None
        when the failed import is not one of :data:`OPTIONAL_MODULES` (an internal error).
    """
    top = (exc.name or "").split(".")[0]
    if top not in OPTIONAL_MODULES:
        return None
    distribution, default_extra = OPTIONAL_MODULES[top]
    extra = extra or default_extra
    if isinstance(exc, ModuleNotFoundError) and exc.name == top:
        why = f"{distribution} is not installed"
    else:  # installed but broken (e.g. a missing DLL): say so rather than "not installed"
        why = f"{distribution} cannot be imported: {exc}"
    return f'needs the [{extra}] extra ({why}): pip install "tiltstream[{extra}]"'


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, run, and turn user-facing failures into one line and a non-zero exit."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command as given (e.g. to repeat it)
    prog = getattr(args, "command_path", f"tiltstream {args.command}")  # e.g. "tiltstream recon train"
    previous = _terminate_as_interrupt()
    try:
        return int(args.run(args) or 0)
    except MicroscopeFault as exc:
        print(f"{prog}: microscope fault: {exc}", file=sys.stderr)
        return EXIT_MICROSCOPE
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except pydantic.ValidationError as exc:
        print(f"{prog}: error: {describe_validation_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        if exc.filename is None or not isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError,
                                                         NotADirectoryError)):
            return _internal_error(prog, exc)
        print(f"{prog}: error: {_file_problem(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ImportError as exc:
        needs = missing_extra(exc, getattr(args, "extra", None))
        if needs is None:
            return _internal_error(prog, exc)
        print(f"{prog}: {needs}", file=sys.stderr)
        return EXIT_MISSING_EXTRA
    except Exception as exc:
        return _internal_error(prog, exc)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def _terminate_as_interrupt() -> Any:
    """Make SIGTERM end a command as Ctrl-C does, so its clean-up runs (children stopped, beam blanked).

    Only in the main thread, and where SIGTERM has its default action or was inherited as ignored or
    blocked (a job started in the background, or from a thread that blocks it: the command would
    otherwise run to its end whatever it is sent; ``sim serve`` does the same); a command may install its
    own handler over it. Returns the handler to restore afterwards (None when nothing was changed).
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN):
        return None
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    return signal.signal(signal.SIGTERM, _raise_interrupt)


def _file_problem(exc: OSError) -> str:
    """One line for a file that is missing, unreadable or unwritable: which file, and why."""
    what = {FileNotFoundError: "does not exist", PermissionError: "is not accessible (permission denied)",
            IsADirectoryError: "is a directory, not a file", NotADirectoryError: "is not a directory"}
    reason = next(text for kind, text in what.items() if isinstance(exc, kind))
    return f"{str(exc.filename)!r} {reason}"


def _internal_error(prog: str, exc: Exception) -> int:
    """An internal fault: one line unless debugging is asked for (``TILTSTREAM_DEBUG``)."""
    if os.environ.get("TILTSTREAM_DEBUG"):
        raise exc
    print(f"{prog}: internal error: {type(exc).__name__}: {exc} "
          "(set TILTSTREAM_DEBUG=1 for the traceback)", file=sys.stderr)
    return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
