"""Temperature log reading: header variants, separators, no header, a growing file with a torn last line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiltstream.acquire.temperature import TemperatureLog


@pytest.mark.parametrize("text, expected", [
    ("time,temperature\n0,25.0\n1,100.5\n", 100.5),
    ("Time (s);Temperature (°C);Power (mW)\n0;25,0;1\n1;219,5;3\n", 219.5),
    ("Date\tElapsed\tT\tHeater\n2025-01-01 10:00:00\t0\t350.25\t12\n", 350.25),
    ("timestamp,Setpoint,Sample Temp [C]\n1.5,400,380.0\n", 380.0),
    ("0,25\n10,220\n", 220.0),
])
def test_header_variants(tmp_path: Path, text: str, expected: float) -> None:
    path = tmp_path / "log.csv"
    path.write_text(text, encoding="utf-8")
    assert TemperatureLog(path).read_C() == expected


def test_growing_file_and_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    log = TemperatureLog(path)
    assert log.read_C() is None  # not there yet
    path.write_text("time,temp\n0,25\n")
    assert log.read_C() == 25.0
    with open(path, "a") as handle:
        handle.write("5,1")  # the heating program is mid-line
    assert log.read_C() == 25.0
    with open(path, "a") as handle:
        handle.write("50\n10,220\n")
    assert log.read_C() == 220.0
