"""Atomic, durable file writes: the one place tiltstream replaces a file on disk.

Every writer goes through :func:`write_atomic`: the content is written to ``NAME.tmp`` beside the target,
fsynced, renamed over the target (``os.replace`` is atomic on POSIX and Windows), and the directory is
fsynced, so a crash leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries to disk (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> None:
    """Replace ``path`` by what ``write(tmp_path)`` writes, atomically and durably.

    Parameters
    ----------
    path
        The file to create or replace.
    write
        Called with the temporary path (``NAME.tmp`` in the same directory); it must create that file.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically and durably."""
    write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace ``path`` by UTF-8 ``text`` atomically and durably."""
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | Path, data: Any, indent: int | None = 2) -> None:
    """Replace ``path`` by ``data`` as JSON (plus a final newline) atomically and durably."""
    write_text_atomic(path, json.dumps(data, indent=indent) + "\n")
