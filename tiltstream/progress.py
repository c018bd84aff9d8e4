"""The one progress display for long work: a ``\\r`` line on a terminal, a throttled plain line otherwise.

On a terminal the line is rewritten in place at most :data:`TERMINAL_INTERVAL_S` apart; in a log file
(stderr not a terminal) a plain line is written at most every :data:`LOG_INTERVAL_S`, so a long run
leaves a readable log instead of thousands of repeats. The final update is always written.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

TERMINAL_INTERVAL_S = 0.2  # redraw a terminal line at most this often
LOG_INTERVAL_S = 10.0  # write a plain log line at most this often


class ProgressLine:
    """One progress line on a stream (stderr by default).

    Parameters
    ----------
    stream
        Where to write; defaults to ``sys.stderr`` at the time of each update.
    interactive
        Force terminal (``True``) or log (``False``) behaviour; by default ``stream.isatty()``.
    log_interval_s
        Minimum seconds between plain lines when not on a terminal.
    """

    def __init__(self, stream: TextIO | None = None, interactive: bool | None = None,
                 log_interval_s: float = LOG_INTERVAL_S) -> None:
        self._stream = stream
        self._interactive = interactive
        self.log_interval_s = log_interval_s
        self._last_s = -float("inf")
        self._open = False  # a terminal line is drawn and not yet ended with a newline

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    @property
    def interactive(self) -> bool:
        if self._interactive is not None:
            return self._interactive
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def update(self, text: str, final: bool = False) -> None:
        """Show ``text`` (throttled unless ``final``); ``final`` ends the line."""
        now = time.monotonic()
        interval = TERMINAL_INTERVAL_S if self.interactive else self.log_interval_s
        if not final and now - self._last_s < interval:
            return
        self._last_s = now
        if self.interactive:
            self.stream.write(f"\r{text}   " + ("\n" if final else ""))
            self._open = not final
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def end(self) -> None:
        """End a terminal line that is still open (before other output, or at the end of the work)."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


def stderr_progress(label: str, unit: str = "") -> Callable[[int, int], None]:
    """A callback ``report(done, total)`` that keeps one progress line up to date.

    Parameters
    ----------
    label
        Text before the counts, e.g. ``"recon sirt: volume"``.
    unit
        Name of the counted things in the rate, e.g. ``"volumes"`` gives ``2.50 volumes/s``.
    """
    start = time.monotonic()
    line = ProgressLine()
    rate_unit = f" {unit}/s" if unit else "/s"

    def report(done: int, total: int) -> None:
        rate = done / max(time.monotonic() - start, 1e-9)
        eta = (total - done) / rate if rate > 0 else float("inf")
        line.update(f"{label} {done}/{total}  {rate:.2f}{rate_unit}  ETA {eta:.0f} s", final=done >= total)

    return report
