"""The one helper that registers a ``tiltstream`` command, so that a command is a settings model plus a function.

:func:`register_command` adds the command's parser with ``--config FILE`` and one option per settings
field; when the command runs it loads the settings (``config/NAME.toml`` < ``--config`` <
``TILTSTREAM_<FIELD>`` environment < options, :func:`tiltstream.config.load_settings`), configures
logging and calls the function with them. :func:`register_group` adds a command that holds subcommands.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pydantic

from tiltstream.config import add_model_arguments, load_settings, overrides_from_args
from tiltstream.log_setup import configure_logging

#: What a command does: ``function(settings, args)`` -> exit code (None counts as 0).
CommandFunction = Callable[[Any, argparse.Namespace], "int | None"]


@dataclasses.dataclass(frozen=True)
class _Command:
    """The ``run`` of a parsed command: settings, logging, then the command's function."""

    function: CommandFunction
    settings: type[pydantic.BaseModel] | None
    config_name: str | None
    logs: bool

    def __call__(self, args: argparse.Namespace) -> int | None:
        settings = None
        if self.settings is not None:
            settings = load_settings(self.settings, name=self.config_name, config_file=args.config,
                                     overrides=overrides_from_args(args, self.settings))
        if self.logs:
            configure_logging()
        return self.function(settings, args)


def register_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    *,
    settings: type[pydantic.BaseModel] | None,
    run: CommandFunction,
    help: str,
    description: str,
    config_name: str | None = None,
    arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    rename: Mapping[str, str] | None = None,
    skip: Sequence[str] = (),
    groups: Mapping[str, Sequence[str]] | None = None,
    extra: str | None = None,
    logs: bool = True,
) -> argparse.ArgumentParser:
    """Add the command ``name``: its parser, ``--config FILE``, its settings' options, and what it runs.

    Parameters
    ----------
    subparsers
        Where the command goes (the dispatcher's, or a group's from :func:`register_group`).
    name, help, description
        The command's name, its line in the parent's ``--help`` and the text of its own ``--help``.
    settings
        The command's pydantic settings model: one ``--option`` per field (except ``skip``), and
        ``--config FILE``; None for a command without settings (neither).
    run
        ``run(settings, args)`` -> exit code: the loaded settings (an instance of ``settings``, or None)
        and the parsed namespace (for the options ``arguments`` adds).
    config_name
        Stem of the default settings file ``config/NAME.toml`` (None: only the model's defaults).
    arguments
        Adds the command's options that are not settings (e.g. ``--session``), before ``--config``.
    rename, skip
        Field name -> option string, and fields without an option (:func:`tiltstream.config.add_model_arguments`).
    groups
        Help section title -> the fields listed under it; the other fields are listed with ``--config``.
    extra
        The optional extra the command needs (``recon``, ``sim``, ``live``, ``all``), named when one of its
        imports is missing (:func:`tiltstream.cli.missing_extra`).
    logs
        Configure logging (timestamped lines on stderr) before ``run``; off for a command whose stderr
        is its own progress and summary lines.

    Returns
    -------
    argparse.ArgumentParser
        The command's parser.
    """
    parser = subparsers.add_parser(name, help=help, description=description)
    if arguments is not None:
        arguments(parser)
    if settings is not None:
        config_help = (f"TOML settings file applied over config/{config_name}.toml (same keys)" if config_name
                       else "TOML settings file (keys: the option names with _ for -)")
        parser.add_argument("--config", type=Path, metavar="FILE", default=None, help=config_help)
        grouped = [field for fields in (groups or {}).values() for field in fields]
        add_model_arguments(parser, settings, skip=(*skip, *grouped), rename=rename)
        for title, fields in (groups or {}).items():
            others = tuple(field for field in settings.model_fields if field not in fields)
            add_model_arguments(parser.add_argument_group(title), settings, skip=(*skip, *others), rename=rename)
    parser.set_defaults(run=_Command(run, settings, config_name, logs))
    if extra is not None:
        parser.set_defaults(extra=extra)
    return parser


def register_group(subparsers: argparse._SubParsersAction, name: str, *, help: str, description: str,
                   extra: str | None = None) -> argparse._SubParsersAction:
    """Add the command ``name`` that holds subcommands (``tiltstream recon train``); returns where they go.

    ``extra`` is the optional extra every subcommand needs (see :func:`register_command`).
    """
    group = subparsers.add_parser(name, help=help, description=description)
    if extra is not None:
        group.set_defaults(extra=extra)
    return group.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND", required=True,
                                parser_class=type(group))
