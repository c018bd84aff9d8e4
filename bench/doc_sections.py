"""One rule for the benchmark scripts that keep a section of a docs/benchmarks/*.md file up to date."""

from __future__ import annotations

from pathlib import Path


def replace_section(doc: Path, start: str, end: str, block: str) -> None:
    """Replace the text from marker ``start`` to marker ``end`` (both included) of ``doc`` by ``block``
    (which holds the markers again), or append ``block`` when the markers are not there; the rest of
    the file is kept. A missing ``doc`` is created with a "# Benchmarks" title."""
    old = doc.read_text() if doc.is_file() else "# Benchmarks\n"
    if start in old and end in old:
        new = old[:old.index(start)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(new)
