"""A simulated heating holder's temperature log: the CSV a MEMS heating program writes while it runs.

:class:`HeatingLog` appends ``elapsed_s,temperature_C`` rows every ``period_s`` wall seconds from a
thread, ramping linearly from room temperature (25 C) to ``to_C`` over ``ramp_s`` seconds and holding
there. ``tiltstream acquire --temperature-log FILE`` reads such a file at each frame
(:class:`tiltstream.acquire.temperature.TemperatureLog`); the demo uses it as its heating holder.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

ROOM_TEMPERATURE_C = 25.0


class HeatingLog:
    """A heating-holder program's CSV log (``elapsed_s,temperature_C``), appended every ``period_s`` in a thread.

    Parameters
    ----------
    path
        CSV file to create (overwritten) and append to.
    to_C
        Final temperature, Celsius.
    ramp_s
        Wall seconds of the linear ramp from 25 C to ``to_C``.
    period_s
        Wall seconds between rows.
    """

    def __init__(self, path: Path, to_C: float, ramp_s: float, period_s: float = 0.5) -> None:
        self.path, self.to_C, self.ramp_s, self.period_s = Path(path), to_C, max(ramp_s, 1e-6), period_s
        self.path.write_text("elapsed_s,temperature_C\n")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heating-log", daemon=True)
        self._started = time.monotonic()
        self._thread.start()

    def temperature_C(self, elapsed_s: float) -> float:
        """The programmed temperature ``elapsed_s`` wall seconds after the start, Celsius."""
        return ROOM_TEMPERATURE_C + (self.to_C - ROOM_TEMPERATURE_C) * min(elapsed_s / self.ramp_s, 1.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            elapsed = time.monotonic() - self._started
            with open(self.path, "a") as handle:
                handle.write(f"{elapsed:.2f},{self.temperature_C(elapsed):.2f}\n")
            self._stop.wait(self.period_s)

    def close(self) -> None:
        """Stop appending (waits up to 5 s for the thread)."""
        self._stop.set()
        self._thread.join(5)
