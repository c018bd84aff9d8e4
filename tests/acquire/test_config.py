"""Settings loading: one test per precedence pair, one-line errors naming field, value and source."""

import argparse
import itertools

import pydantic
import pytest

import tiltstream.config
from tiltstream.config import add_model_arguments, load_settings, overrides_from_args
from tiltstream.errors import UserError

SOURCES = ("default", "name_toml", "config_file", "env", "cli")  # lowest priority first


class Demo(pydantic.BaseModel):
    """A small settings model for these tests."""

    count: int = pydantic.Field(1, ge=1, description="number of frames")
    label: str = pydantic.Field("x", description="a name")
    fast: bool = pydantic.Field(False, description="a switch")
    rmse_pct: float = pydantic.Field(5.0, description="threshold in % of the range")


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    """A private config/ directory holding demo.toml (the repository's own stays untouched)."""
    directory = tmp_path / "config"
    directory.mkdir()
    monkeypatch.setattr(tiltstream.config, "CONFIG_DIR", directory)
    return directory


def load_from(sources, config_dir, tmp_path):
    """Load Demo with ``count`` set in each of ``sources`` to that source's position in SOURCES (+10)."""
    value = {name: 10 + SOURCES.index(name) for name in sources}
    if "name_toml" in sources:
        (config_dir / "demo.toml").write_text(f"count = {value['name_toml']}\n")
    config_file = None
    if "config_file" in sources:
        config_file = tmp_path / "user.toml"
        config_file.write_text(f"count = {value['config_file']}\n")
    environ = {"TILTSTREAM_COUNT": str(value["env"])} if "env" in sources else {}
    overrides = {}
    if "cli" in sources:
        parser = argparse.ArgumentParser()
        add_model_arguments(parser, Demo)
        overrides = overrides_from_args(parser.parse_args(["--count", str(value["cli"])]), Demo)
    return load_settings(Demo, name="demo", config_file=config_file, overrides=overrides, environ=environ)


@pytest.mark.parametrize("low, high", list(itertools.combinations(SOURCES, 2)))
def test_precedence_pair(low, high, config_dir, tmp_path):
    """The later source in model default < config/NAME.toml < --config < TILTSTREAM_ env < command line wins."""
    sources = [s for s in (low, high) if s != "default"]
    settings = load_from(sources, config_dir, tmp_path)
    assert settings.count == 10 + SOURCES.index(high)


def test_defaults_only(config_dir, tmp_path):
    assert load_from([], config_dir, tmp_path) == Demo()


def test_sources_merge_field_by_field(config_dir, tmp_path):
    (config_dir / "demo.toml").write_text('label = "from-toml"\ncount = 2\n')
    settings = load_settings(Demo, name="demo", environ={"TILTSTREAM_FAST": "true"}, overrides={"count": "3"})
    assert (settings.count, settings.label, settings.fast) == (3, "from-toml", True)


def test_cli_none_means_not_given(config_dir):
    (config_dir / "demo.toml").write_text("count = 4\n")
    assert load_settings(Demo, name="demo", overrides={"count": None}).count == 4


def test_env_text_stays_text_for_string_fields(config_dir):
    """Regression: TILTSTREAM_LABEL=123 used to be parsed as JSON int and rejected for a str field."""
    settings = load_settings(Demo, environ={"TILTSTREAM_LABEL": "123", "TILTSTREAM_COUNT": "7"})
    assert settings.label == "123" and settings.count == 7


@pytest.mark.parametrize("source, expected", [
    ("cli", "invalid count = '0' (from command line): Input should be greater than or equal to 1"),
    ("env", "invalid count = '0' (from environment): Input should be greater than or equal to 1"),
    ("name_toml", "invalid count = 0 (from config/demo.toml): Input should be greater than or equal to 1"),
    ("config_file", "invalid count = 0 (from {path}): Input should be greater than or equal to 1"),
])
def test_bad_value_is_one_line_with_field_value_and_source(source, expected, config_dir, tmp_path):
    user_file = tmp_path / "user.toml"
    kwargs = {}
    if source == "cli":
        kwargs["overrides"] = {"count": "0"}
    elif source == "env":
        kwargs["environ"] = {"TILTSTREAM_COUNT": "0"}
    elif source == "name_toml":
        (config_dir / "demo.toml").write_text("count = 0\n")
    else:
        user_file.write_text("count = 0\n")
        kwargs["config_file"] = user_file
    kwargs.setdefault("environ", {})
    with pytest.raises(UserError) as info:
        load_settings(Demo, name="demo", **kwargs)
    message = str(info.value)
    assert message == expected.format(path=user_file)
    assert "\n" not in message


def test_file_problems_are_one_line(config_dir, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("count = = 3\n")
    for config_file, fragment in [(tmp_path / "missing.toml", "does not exist"), (bad, "is not valid TOML")]:
        with pytest.raises(UserError, match=fragment) as info:
            load_settings(Demo, config_file=config_file, environ={})
        assert "\n" not in str(info.value)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("cuont = 3\n")
    with pytest.raises(UserError, match="unknown setting 'cuont' in .*unknown.toml; allowed: count, fast"):
        load_settings(Demo, config_file=unknown, environ={})


def test_whole_model_error_does_not_dump_the_settings():
    """Regression: a model-level validator error printed the whole settings dict as its 'value'."""

    class Range(pydantic.BaseModel):
        min_deg: float = -70.0
        max_deg: float = 70.0

        @pydantic.model_validator(mode="after")
        def _check(self):
            if not self.min_deg < self.max_deg:
                raise ValueError("min_deg must be below max_deg")
            return self

    with pytest.raises(UserError) as info:
        load_settings(Range, overrides={"min_deg": "80"}, environ={})
    assert str(info.value) == "invalid settings: min_deg must be below max_deg"


def test_options_carry_descriptions_and_percent_is_escaped():
    """Regression: a '%' in a description crashed --help (argparse %-formats help)."""
    parser = argparse.ArgumentParser()
    add_model_arguments(parser, Demo, rename={"count": "--n"})
    text = parser.format_help()
    assert "threshold in % of the range [default: 5.0]" in text
    assert "--n COUNT" in text
    args = parser.parse_args(["--fast", "--n", "3"])
    assert overrides_from_args(args, Demo) == {"count": "3", "fast": True}
    assert parser.parse_args(["--no-fast"]).fast is False


class Optional_(pydantic.BaseModel):
    """A model with an optional text field, as ``replay --resend``."""

    resend: str | None = pydantic.Field("tcp://127.0.0.1:5558", description="an endpoint or none")


def test_env_null_means_none_and_prefix_is_case_insensitive():
    """``TILTSTREAM_<FIELD>=null`` gives None (documented); the variable name matches in any case."""
    assert load_settings(Optional_, environ={"TILTSTREAM_RESEND": "null"}).resend is None
    assert load_settings(Optional_, environ={"tiltstream_resend": "tcp://h:1"}).resend == "tcp://h:1"


def test_result_is_the_process_model_itself(config_dir):
    """pydantic-settings builds it, but callers get their own model class (equal to a direct construction)."""
    (config_dir / "demo.toml").write_text('label = "toml"\n')
    settings = load_settings(Demo, name="demo", overrides={"count": "2"}, environ={})
    assert type(settings) is Demo
    assert settings == Demo(count=2, label="toml")
    assert settings.model_fields_set == {"count", "label"}
