"""Test helper run as a subprocess: an offscreen viewer asks a live process for the volume at the slider's time.

Usage: ``python -m tests.live.viewer_request_probe STATUS_ENDPOINT``; prints one JSON line with the
requested and answered times, then exits (0 when an answer arrived within 60 s).
"""

from __future__ import annotations

import json
import sys
import time

from tiltstream.live.viewer import StreamViewer, ViewerState, ViewerWindow, qt_app


def main(endpoint: str) -> int:
    app = qt_app(headless=True)
    window = ViewerWindow(ViewerState())
    viewer = StreamViewer(endpoint, window)
    deadline = time.monotonic() + 60
    asked = None
    try:
        while time.monotonic() < deadline:
            viewer.poll()
            window.render()
            status = window.state.status
            if asked is None and viewer.dealer is not None and status is not None and status.time_max_s:
                window.follow.setChecked(False)
                window.slider.setValue(0)  # the earliest acquired time: a request goes out
                asked = window.slider_time_s()
            answer = window.state.requested_slices
            # unticking "follow latest" asks for the slider's (latest) time first; wait for the newest wish
            if answer is not None and asked is not None and answer.header.time_s == asked:
                print(json.dumps({"asked_s": asked, "answered_s": answer.header.time_s,
                                  "request_id": answer.header.request_id, "xy_shape": list(answer.xy.shape),
                                  "drawn": sorted(window.drawn)}))
                return 0
            time.sleep(0.05)
        return 1
    finally:
        viewer.close()
        window.close()
        app.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
