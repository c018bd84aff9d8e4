"""Settings for every process: one pydantic model each, loaded from TOML, environment and command line.

Priority, lowest first:

1. the model's field defaults;
2. ``config/NAME.toml`` in the repository (the documented defaults for that use);
3. a file given with ``--config FILE``;
4. environment variables ``TILTSTREAM_<FIELD>`` (upper case; a JSON list, object or ``null`` is
   parsed as JSON, any other value is passed as text, like a command-line value);
5. command-line options.

Any invalid value raises :class:`acquire.errors.UserError` with one line naming the field, the value,
where it came from and what is allowed.
"""

from __future__ import annotations

import argparse
import json
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import pydantic

from acquire.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
ENV_PREFIX = "TILTSTREAM_"

M = TypeVar("M", bound=pydantic.BaseModel)


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML settings file; a missing or malformed file is a :class:`UserError`."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise UserError(f"config file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {str(path)!r} is not valid TOML: {exc}") from None


def _env_values(model: type[pydantic.BaseModel], environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in model.model_fields:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        try:
            decoded = json.loads(raw)
        except json.JSONDecodeError:
            decoded = raw
        # scalars stay text (pydantic parses numbers and booleans from text), so that a string
        # field given "123" or "true" keeps that text instead of failing as int/bool
        values[name] = decoded if decoded is None or isinstance(decoded, (list, dict)) else raw
    return values


def load_settings(
    model: type[M],
    *,
    name: str | None = None,
    config_file: Path | str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> M:
    """Build a settings model from defaults, TOML files, environment and overrides.

    Parameters
    ----------
    model
        The pydantic model of the process.
    name
        Stem of the default file ``config/NAME.toml``; skipped when the file is not there (for
        example in a non-editable install), since the model's defaults equal it.
    config_file
        A user's TOML file, applied over the defaults.
    overrides
        Command-line values by field name; ``None`` values mean "not given" and are skipped.
    environ
        Environment to read ``TILTSTREAM_*`` variables from (``os.environ`` by default).

    Raises
    ------
    UserError
        One line: field, value, source and what is allowed.
    """
    sources: dict[str, str] = {}
    merged: dict[str, Any] = {}

    def apply(values: Mapping[str, Any], source: str) -> None:
        for key, value in values.items():
            if key not in model.model_fields:
                allowed = ", ".join(sorted(model.model_fields))
                raise UserError(f"unknown setting {key!r} in {source}; allowed: {allowed}")
            merged[key] = value
            sources[key] = source

    if name is not None and (CONFIG_DIR / f"{name}.toml").is_file():
        apply(read_toml(CONFIG_DIR / f"{name}.toml"), f"config/{name}.toml")
    if config_file is not None:
        apply(read_toml(Path(config_file)), str(config_file))
    apply(_env_values(model, os.environ if environ is None else environ), "environment")
    apply({k: v for k, v in (overrides or {}).items() if v is not None}, "command line")
    try:
        return model.model_validate(merged)
    except pydantic.ValidationError as exc:
        raise UserError(describe_validation_error(exc, sources)) from None


def describe_validation_error(exc: pydantic.ValidationError, sources: Mapping[str, str] | None = None) -> str:
    """One line for the first error of a validation: field, value, source, what is allowed."""
    err = exc.errors()[0]
    loc = ".".join(str(part) for part in err["loc"]) or "settings"
    top = str(err["loc"][0]) if err["loc"] else ""
    source = f" (from {sources[top]})" if sources and top in sources else ""
    message = err["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    # a whole-model error (empty loc) has the whole input as its value: leave it out of the line
    if "input" in err and err["type"] != "missing" and err["loc"]:
        return f"invalid {loc} = {err['input']!r}{source}: {message}"
    return f"invalid {loc}{source}: {message}"


def _cli_type(annotation: Any) -> tuple[str, tuple[str, ...] | None]:
    """Classify a field annotation for argparse: ('bool'|'value', choices)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _cli_type(args[0])
    if annotation is bool:
        return "bool", None
    if origin is typing.Literal:
        return "value", tuple(str(a) for a in typing.get_args(annotation))
    return "value", None


def add_model_arguments(
    parser: argparse.ArgumentParser,
    model: type[pydantic.BaseModel],
    *,
    skip: tuple[str, ...] = (),
    rename: Mapping[str, str] | None = None,
) -> None:
    """Add one ``--option`` per model field, with the field's description (units) and default.

    Values are passed to pydantic as given (strings), so validation and its one-line error live in
    one place. Every option defaults to ``None`` ("not given"); use :func:`overrides_from_args`.

    Parameters
    ----------
    skip
        Field names to leave out (set by other means).
    rename
        Field name -> option string, e.g. ``{"min_deg": "--min"}``.
    """
    rename = rename or {}
    for field_name, info in model.model_fields.items():
        if field_name in skip:
            continue
        option = rename.get(field_name, "--" + field_name.replace("_", "-"))
        kind, choices = _cli_type(info.annotation)
        # argparse %-formats help strings: escape a literal % (e.g. "RMSE in %")
        description = (info.description or field_name).replace("%", "%%")
        default = str(info.get_default(call_default_factory=True)).replace("%", "%%")
        help_text = f"{description} [default: {default}]"
        if choices:
            help_text = f"{description} (one of: {', '.join(choices)}) [default: {default}]"
        if kind == "bool":
            parser.add_argument(option, dest=field_name, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
        else:
            parser.add_argument(option, dest=field_name, default=None, metavar=field_name.upper(),
                                help=help_text)


def overrides_from_args(args: argparse.Namespace, model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """The command-line values of a model's fields that the user gave."""
    return {name: getattr(args, name) for name in model.model_fields
            if getattr(args, name, None) is not None}
