"""The ``tiltstream`` dispatcher: every registered subcommand and option is described, with units for angles."""

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from tiltstream.cli import build_parser

REPO = Path(__file__).resolve().parents[2]


def walk(parser, path=("tiltstream",), command_help="top level"):
    """Yield ``(command path, parser, its help line)`` for the parser and every nested subcommand."""
    yield path, parser, command_help
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            seen = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:  # aliases map to the same parser
                    seen.add(id(sub))
                    yield from walk(sub, path + (name,), helps.get(name))


COMMANDS = list(walk(build_parser()))


def test_scheme_is_registered():
    assert ("tiltstream", "scheme") in [path for path, _, _ in COMMANDS]


@pytest.mark.parametrize("path, parser, command_help", COMMANDS, ids=[" ".join(p) for p, _, _ in COMMANDS])
def test_every_command_and_option_is_described(path, parser, command_help):
    assert command_help and command_help.strip(), f"{' '.join(path)} has no help in 'tiltstream --help'"
    parser.format_help()  # renders (no %-formatting errors)
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip() and action.help != argparse.SUPPRESS, \
            f"{' '.join(path)} {name} has no help"
        if action.dest.endswith("_deg"):
            assert "deg" in action.help, f"{' '.join(path)} {name} is an angle; its help must say deg"


def test_scheme_angle_options_mention_degrees():
    parser = dict((p, s) for p, s, _ in COMMANDS)[("tiltstream", "scheme")]
    options = {opt: action for action in parser._actions for opt in action.option_strings}
    for option in ("--min", "--max", "--backlash", "--start-deg", "--limit-min", "--limit-max", "--step"):
        assert "deg" in options[option].help, option
    for option in ("--settle-s", "--exposure-s", "--tracking-s"):
        assert "(s)" in options[option].help, option
    assert "e/A^2" in options["--frame-dose-e-per-A2"].help
    assert "deg/s" in options["--tilt-speed-deg-per-s"].help


@pytest.mark.parametrize("args", [["--help"], ["scheme", "--help"]])
def test_help_runs_as_a_command(args):
    result = subprocess.run([sys.executable, "-m", "tiltstream", *args], capture_output=True, text=True,
                            cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "scheme" in result.stdout and result.stderr == ""


def test_unknown_command_is_one_line():
    result = subprocess.run([sys.executable, "-m", "tiltstream", "no-such-command"], capture_output=True, text=True,
                            cwd=REPO, timeout=60)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
