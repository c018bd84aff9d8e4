"""A progress line on stderr for long work: ``label done/total, rate, ETA``, rewritten in place with ``\\r``."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

MIN_INTERVAL_S = 0.2  # redraw at most this often (the last update is always drawn)


def stderr_progress(label: str, unit: str = "") -> Callable[[int, int], None]:
    """A callback ``report(done, total)`` that keeps one stderr line up to date.

    Parameters
    ----------
    label
        Text before the counts, e.g. ``"recon sirt: volume"``.
    unit
        Name of the counted things in the rate, e.g. ``"volumes"`` gives ``2.50 volumes/s``.
    """
    start = time.monotonic()
    last_drawn = -float("inf")
    rate_unit = f" {unit}/s" if unit else "/s"

    def report(done: int, total: int) -> None:
        nonlocal last_drawn
        now = time.monotonic()
        finished = done >= total
        if not finished and now - last_drawn < MIN_INTERVAL_S:
            return
        last_drawn = now
        rate = done / max(now - start, 1e-9)
        eta = (total - done) / rate if rate > 0 else float("inf")
        print(f"\r{label} {done}/{total}  {rate:.2f}{rate_unit}  ETA {eta:.0f} s   ",
              end="\n" if finished else "", file=sys.stderr, flush=True)

    return report
