"""Test helper run as a subprocess: an offscreen viewer follows a live process to its end and reports its tracking panel.

Usage: ``python -m tests.live.viewer_tracking_probe STATUS_ENDPOINT FRAMES``. Prints ``ready`` once the
first status message arrived (the subscription is live), then, when the live process reports
``finished`` with a history of FRAMES frames, one JSON line: the history message's per-frame tracking
lists, the status line, and the data of the viewer's shift, lost and defocus curves. Exit 0 then, 1
after 90 s.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from tiltstream.live.viewer import StreamViewer, ViewerState, ViewerWindow, qt_app


def _curve(window: ViewerWindow, name: str) -> list[list[float | None]]:
    """The (x, y) data of one of the window's curves, NaN as None."""
    x, y = window.curves[name].getData()
    if x is None:
        return [[], []]
    return [[None if not np.isfinite(v) else float(v) for v in values] for values in (x, y)]


def main(endpoint: str, frames: int) -> int:
    app = qt_app(headless=True)
    window = ViewerWindow(ViewerState())
    viewer = StreamViewer(endpoint, window)
    deadline = time.monotonic() + 90
    ready = False
    try:
        while time.monotonic() < deadline:
            viewer.poll()
            window.render()
            state = window.state
            if not ready and state.status is not None:
                print("ready", flush=True)
                ready = True
            if (state.status is not None and state.status.state == "finished" and state.history is not None
                    and len(state.history.frame_index) == frames):
                h = state.history
                print(json.dumps({
                    "history": {"frame_index": h.frame_index, "time_s": h.time_s, "shift_x_px": h.shift_x_px,
                                "shift_y_px": h.shift_y_px, "defocus_m": h.defocus_m,
                                "tracking_lost": h.tracking_lost},
                    "status": {"tracking": state.status.tracking, "tracking_lost": state.status.tracking_lost},
                    "status_line": window.status_label.text(),
                    "curves": {name: _curve(window, name) for name in ("shift_x", "shift_y", "lost", "defocus")},
                    "drawn": sorted(window.drawn)}), flush=True)
                return 0
            time.sleep(0.05)
        return 1
    finally:
        viewer.close()
        window.close()
        app.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
