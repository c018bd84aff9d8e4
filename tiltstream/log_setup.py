"""The one logging set-up of every tiltstream process: timestamped lines on stderr, optionally a file."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: int | str = logging.INFO, log_file: str | Path | None = None) -> None:
    """Configure the root logger once per process (later calls replace the handlers).

    Parameters
    ----------
    level
        Logging level for the root logger, e.g. ``logging.INFO`` or ``"DEBUG"``.
    log_file
        Also append every line to this file when given.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    logging.basicConfig(level=level, format=LOG_FORMAT, handlers=handlers, force=True)
