"""Test helper run as a subprocess: the offline viewer of a run directory reports what it drew.

Usage: ``python -m tests.live.viewer_run_probe RUN_DIR TIME_S [CHECKPOINT]``. Opens ``tiltstream view
--run``'s window offscreen at TIME_S (drawing the CHECKPOINT state, default ``auto``), then turns "follow
latest" off and moves the time slider to the start (the volume there is computed from the run's
reconstruction). Prints one JSON line: the loss and held-out curves'
data, the first orthoslices (time, xy) and the slider's (time, xy), the panels drawn, the window title,
the status line and the step of the drawn state.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tiltstream.live.viewer import open_run_window


def main(run_dir: str, time_s: float, checkpoint: str = "auto") -> int:
    app, window = open_run_window(Path(run_dir), time_s, headless=True, checkpoint=checkpoint)
    try:
        state = window.state
        first = state.latest_slices
        loss_x, loss_y = window.curves["loss"].getData()
        held_x, held_y = window.heldout_curve.getData()
        window.follow.setChecked(False)
        window.slider.setValue(0)
        moved = state.requested_slices
        print(json.dumps({
            "loss": [loss_x.tolist(), loss_y.tolist()], "heldout": [held_x.tolist(), held_y.tolist()],
            "first": {"time_s": first.header.time_s, "xy": first.xy.tolist()},
            "slider": {"time_s": moved.header.time_s, "xy": moved.xy.tolist(), "shown_s": window.slider_time_s()},
            "time_label": window.time_label.text(), "drawn": sorted(window.drawn),
            "title": window.widget.windowTitle(), "status_line": window.status_label.text(),
            "step": state.status.step}))
        return 0
    finally:
        window.close()
        app.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], float(sys.argv[2]), *sys.argv[3:4]))
