"""No function (or method) outside bench/ is longer than 80 lines, decorators and docstring included."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("acquire", "recon", "live", "simulator", "tiltstream")
MAX_LINES = 80


def long_functions(max_lines: int = MAX_LINES) -> list[str]:
    """``path:line name (N lines)`` of every function in :data:`PACKAGES` longer than ``max_lines``."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                    lines = node.end_lineno - first + 1
                    if lines > max_lines:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_is_longer_than_80_lines() -> None:
    offenders = long_functions()
    assert not offenders, "functions over 80 lines:\n" + "\n".join(offenders)
