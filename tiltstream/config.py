"""Settings for every process: one pydantic model each, loaded by pydantic-settings from TOML, environment and command line.

Priority, lowest first: the model's defaults, ``config/NAME.toml``, ``--config FILE``, environment
variables ``TILTSTREAM_<FIELD>``, command-line options (docs/design.md 7). :func:`load_settings` builds
the model; :func:`add_model_arguments` adds its command-line options. Any invalid value raises
:class:`tiltstream.errors.UserError` with one line naming the field, the value, its source and what is
allowed. How the sources are layered: docs/architecture.md, "Commands".
"""

from __future__ import annotations

import argparse
import os
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import pydantic_settings
from pydantic_settings import (BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict,
                               TomlConfigSettingsSource)

try:  # pydantic-settings >= 2.9 (a package of sources)
    from pydantic_settings.sources.utils import parse_env_vars
except ImportError:  # earlier: one module
    from pydantic_settings.sources import parse_env_vars  # type: ignore[attr-defined, no-redef]

from tiltstream.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
ENV_PREFIX = "TILTSTREAM_"
ENV_NESTED_DELIMITER = "__"
ENV_NONE = "null"

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


class _TomlSource(TomlConfigSettingsSource):
    """One TOML settings file; a missing (when required) or malformed file is one line (:class:`UserError`)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path, required: bool) -> None:
        if required and not path.is_file():
            read_toml(path)  # raises the one-line "does not exist"
        super().__init__(settings_cls, toml_file=path)

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        return read_toml(Path(file_path))


class _EnvSource(EnvSettingsSource):
    """``TILTSTREAM_*`` variables read from a given mapping (``os.environ`` by default)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class _LabelledSource(PydanticBaseSettingsSource):
    """A source whose keys must be fields of the model and whose values are recorded as coming from ``label``."""

    def __init__(self, settings_cls: type[BaseSettings], source: Callable[[], dict[str, Any]], label: str,
                 origins: dict[str, str]) -> None:
        super().__init__(settings_cls)
        self.source, self.label, self.origins = source, label, origins
        self.__name__ = label

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ delegates to the wrapped source

    def __call__(self) -> dict[str, Any]:
        try:
            values = self.source()
        except pydantic_settings.SettingsError as exc:  # e.g. a complex field's value that is not JSON
            raise UserError(f"invalid setting in {self.label}: {exc}") from None
        fields = self.settings_cls.model_fields
        for key in values:
            if key not in fields:
                raise UserError(f"unknown setting {key!r} in {self.label}; allowed: {', '.join(sorted(fields))}")
            self.origins.setdefault(key, self.label)  # sources run highest priority first
        return values


def settings_class(model: type[pydantic.BaseModel], *, name: str | None = None,
                   config_file: Path | str | None = None, environ: Mapping[str, str] | None = None,
                   origins: dict[str, str] | None = None) -> type[BaseSettings]:
    """The pydantic-settings class of ``model``: its fields and validators, with our sources and priority.

    Parameters are those of :func:`load_settings`; ``origins`` (field -> source label) is filled in
    as the sources are read. Instantiate the class with the command-line values as keyword arguments.
    """
    environ = os.environ if environ is None else environ
    origins = {} if origins is None else origins
    files: list[tuple[Path, str, bool]] = []  # highest priority first
    if config_file is not None:
        files.append((Path(config_file), str(config_file), True))
    if name is not None:
        files.append((CONFIG_DIR / f"{name}.toml", f"config/{name}.toml", False))

    class ProcessSettings(BaseSettings, model):  # type: ignore[misc, valid-type]
        model_config = SettingsConfigDict(
            env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTED_DELIMITER, env_parse_none_str=ENV_NONE,
            case_sensitive=False, extra=model.model_config.get("extra", "ignore"),
            validate_default=model.model_config.get("validate_default", False))

        @classmethod
        def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                       init_settings: PydanticBaseSettingsSource,
                                       env_settings: PydanticBaseSettingsSource,
                                       dotenv_settings: PydanticBaseSettingsSource,
                                       file_secret_settings: PydanticBaseSettingsSource,
                                       ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources = [(init_settings, "command line"), (_EnvSource(settings_cls, environ), "environment")]
            sources += [(_TomlSource(settings_cls, path, required), label) for path, label, required in files]
            return tuple(_LabelledSource(settings_cls, source, label, origins) for source, label in sources)

    ProcessSettings.__name__ = ProcessSettings.__qualname__ = f"{model.__name__}Settings"
    return ProcessSettings


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

    Returns
    -------
    M
        An instance of ``model`` itself (equal to ``model(**merged values)``).

    Raises
    ------
    UserError
        One line: field, value, source and what is allowed.
    """
    origins: dict[str, str] = {}
    cls = settings_class(model, name=name, config_file=config_file, environ=environ, origins=origins)
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    try:
        built = cls(**given)
    except pydantic.ValidationError as exc:
        raise UserError(describe_validation_error(exc, origins)) from None
    # already validated by the model's own fields and validators: hand it back as the model itself
    values = {field: getattr(built, field) for field in model.model_fields}
    return model.model_construct(_fields_set=set(built.model_fields_set), **values, **(built.model_extra or {}))


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
