"""A command is a settings model plus a function: :func:`tiltstream.command.register_command` does the rest."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pydantic
import pytest

from tiltstream.cli import OneLineParser
from tiltstream.command import register_command, register_group
from tiltstream.errors import UserError


class Demo(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    count: int = pydantic.Field(1, ge=1, description="number of frames")
    speed: float = pydantic.Field(1.0, gt=0, description="speed-up, dimensionless")


def _parser(**options) -> tuple[argparse.ArgumentParser, list]:
    calls: list = []
    parser = OneLineParser(prog="tiltstream")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    register_command(subparsers, "demo", settings=Demo, run=lambda settings, args: calls.append((settings, args)),
                     help="a demo", description="A demo command.", **options)
    return parser, calls


def test_runs_the_function_with_the_loaded_settings(tmp_path: Path) -> None:
    config = tmp_path / "demo.toml"
    config.write_text("count = 5\nspeed = 2.0\n")
    parser, calls = _parser(arguments=lambda p: p.add_argument("--session", required=True))
    args = parser.parse_args(["demo", "--session", "S", "--config", str(config), "--speed", "3"])
    args.run(args)
    (settings, given), = calls
    assert settings == Demo(count=5, speed=3.0) and given.session == "S" and isinstance(args.config, Path)


def test_a_bad_value_is_one_line_naming_its_source(tmp_path: Path) -> None:
    parser, calls = _parser()
    args = parser.parse_args(["demo", "--count", "0"])
    with pytest.raises(UserError, match=r"^invalid count = '0' \(from command line\)"):
        args.run(args)
    assert not calls


def test_extra_logging_groups_and_a_command_without_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    parser, _ = _parser(extra="recon", logs=False, rename={"count": "--frames"},
                        groups={"timing": ("speed",)})
    demo = parser._subparsers._group_actions[0].choices["demo"]
    assert parser.parse_args(["demo", "--frames", "2"]).extra == "recon"
    assert [group.title for group in demo._action_groups if group._group_actions][-1] == "timing"
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: pytest.fail("logs=False configured logging"))
    args = parser.parse_args(["demo"])
    args.run(args)

    top = OneLineParser(prog="tiltstream")
    group = register_group(top.add_subparsers(dest="command", parser_class=OneLineParser), "tools",
                           extra="sim", help="tools", description="Tools.")
    seen: list = []
    register_command(group, "plain", settings=None, run=lambda settings, args: seen.append(settings) or 0,
                     help="no settings", description="A command without settings.", logs=False)
    args = top.parse_args(["tools", "plain"])
    assert args.extra == "sim" and not hasattr(args, "config")
    assert args.run(args) == 0 and seen == [None]
