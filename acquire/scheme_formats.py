"""Writers (pure, text in memory) for a tilt plan: CSV, JSON, IMOD ``.rawtlt`` and a SerialEM script.

Angles are written so that they read back to the same double: ``repr`` in CSV and JSON, and fixed
point with 10 decimals (``%.10f``, within 5e-11 deg, no exponent) where other programs parse them
(``.rawtlt``, SerialEM).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from tiltstream.acquire.backlash import Move
from tiltstream.acquire.plan_summary import PlanSummary

CSV_HEADER = "index,move,angle_deg"


def _fixed_deg(angle_deg: float) -> str:
    return f"{angle_deg:.10f}"


def moves_csv(moves: Sequence[Move]) -> str:
    """CSV with header ``index,move,angle_deg``: one row per stage move (``move`` is backlash or target)."""
    rows = [CSV_HEADER] + [f"{m.index},{m.kind},{float(m.angle_deg)!r}" for m in moves]
    return "\n".join(rows) + "\n"


def moves_json(moves: Sequence[Move], summary: PlanSummary, settings: Mapping[str, Any]) -> str:
    """JSON object: ``settings`` (what made the plan), ``moves`` and ``summary`` (travel, time, dose, coverage)."""
    document = {
        "settings": dict(settings),
        "moves": [{"index": m.index, "move": m.kind, "angle_deg": float(m.angle_deg)} for m in moves],
        "summary": summary.to_dict(),
    }
    return json.dumps(document, indent=1, default=str) + "\n"


def rawtlt(moves: Sequence[Move]) -> str:
    """IMOD ``.rawtlt``: one target angle (deg) per line, in acquisition order."""
    return "".join(_fixed_deg(m.angle_deg) + "\n" for m in moves if m.kind == "target")


def serialem_script(moves: Sequence[Move], name: str = "tiltstream", header: Sequence[str] = ()) -> str:
    """A SerialEM script that performs the moves and records and saves one image per target.

    Uses ``MacroName`` (the script's name), ``TiltTo angle`` (absolute stage alpha, deg), ``Record``
    (acquire with the Record parameter set) and ``Save`` (append buffer A to the open file). Lines
    starting with ``#`` are comments. Open the output file in SerialEM before running it.

    Parameters
    ----------
    moves
        The plan; a ``"backlash"`` move becomes a ``TiltTo`` alone, a ``"target"`` move a ``TiltTo``
        followed by ``Record`` and ``Save``.
    name
        Script name (no spaces).
    header
        Comment lines describing the plan (written after ``#``).
    """
    lines = [f"MacroName {name}"]
    lines += [f"# {text}" for text in header]
    lines.append("# open the output file (File > Open New) before running; one Record is saved per target")
    for move in moves:
        if move.kind == "backlash":
            lines.append(f"# frame {move.index}: approach from below")
            lines.append(f"TiltTo {_fixed_deg(move.angle_deg)}")
        else:
            lines.append(f"# frame {move.index}")
            lines.append(f"TiltTo {_fixed_deg(move.angle_deg)}")
            lines.append("Record")
            lines.append("Save")
    return "\n".join(lines) + "\n"
