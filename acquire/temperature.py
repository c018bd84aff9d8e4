"""Reads the specimen temperature from the CSV log a heating-holder program keeps writing.

Tolerant of what such programs write: comma, semicolon or tab separated; a header whose time column
contains ``time``/``date``/``elapsed`` and whose temperature column contains ``temp``/``celsius``/``°C``
(any case, any units suffix), or no header (then the last numeric column is the temperature); a file
that does not exist yet, and a last line still being written (ignored until it is complete).
"""

from __future__ import annotations

import csv
import io
import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)

_TEMPERATURE_NAMES = re.compile(r"temp|celsius|°c|degc|deg c|\bt\b", re.IGNORECASE)
_TIME_NAMES = re.compile(r"time|date|elapsed|clock|\bs\b", re.IGNORECASE)


def _to_float(text: str) -> float | None:
    try:
        return float(text.strip().replace(",", ".")) if text.strip() else None
    except ValueError:
        return None


class TemperatureLog:
    """The latest temperature in a growing CSV log, read incrementally.

    Parameters
    ----------
    path
        The CSV file the heating program writes.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._offset = 0
        self._delimiter: str | None = None
        self._column: int | None = None
        self._header_seen = False
        self.latest_C: float | None = None

    def read_C(self) -> float | None:
        """The temperature of the last complete line, Celsius (None until one is there)."""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return self.latest_C
        end = chunk.rfind(b"\n")
        if end < 0:
            return self.latest_C
        self._offset += end + 1
        for line in chunk[: end + 1].decode("utf-8", errors="replace").splitlines():
            if line.strip():
                self._parse_line(line)
        return self.latest_C

    def _parse_line(self, line: str) -> None:
        if self._delimiter is None:
            self._delimiter = max(("\t", ";", ","), key=line.count) if any(d in line for d in "\t;,") else ","
        cells = next(csv.reader(io.StringIO(line), delimiter=self._delimiter))
        values = [_to_float(cell) for cell in cells]
        if not self._header_seen and self._column is None and all(v is None for v in values[-1:]):
            self._header_seen = True
            self._column = self._pick_column(cells)
            return
        column = self._column
        if column is None:  # no header: the last numeric column
            numeric = [i for i, v in enumerate(values) if v is not None]
            if not numeric:
                return
            column = numeric[-1]
        if column < len(values) and values[column] is not None:
            self.latest_C = values[column]

    @staticmethod
    def _pick_column(header: list[str]) -> int | None:
        for index, name in enumerate(header):
            if _TEMPERATURE_NAMES.search(name) and not _TIME_NAMES.search(name):
                return index
        log.warning("temperature log header %r names no temperature column; using the last column", header)
        return len(header) - 1
