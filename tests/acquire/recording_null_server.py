"""A real temscript server whose backend records every commanded stage position (run as a script).

``temscript-server --null`` does not log the moves it receives, so this wraps temscript's own
``NullMicroscope`` in a subclass that appends each commanded position (radians, as received over
HTTP) to a JSON-lines file, and serves it with temscript's own ``MicroscopeServer``: the HTTP layer
and the backend are the PyPI code, only the recording is added.

Usage: ``python recording_null_server.py PORT MOVES_FILE``
"""

from __future__ import annotations

import json
import sys

from temscript.null_microscope import NullMicroscope
from temscript.server import MicroscopeServer


class RecordingNullMicroscope(NullMicroscope):
    """NullMicroscope that appends ``{"pos": ..., "method": ..., "speed": ...}`` per stage command."""

    moves_file = ""

    def _set_stage_position(self, pos=None, method="GO", speed=None):
        with open(self.moves_file, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"pos": dict(pos or {}), "method": method, "speed": speed}) + "\n")
        super()._set_stage_position(pos, method=method, speed=speed)


def main() -> None:
    port, RecordingNullMicroscope.moves_file = int(sys.argv[1]), sys.argv[2]
    server = MicroscopeServer(("127.0.0.1", port), microscope_factory=RecordingNullMicroscope)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
