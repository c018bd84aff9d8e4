"""A recorded session as the simulator's specimen (``tiltstream sim serve --replay SESSION``).

Rule: the recorded frames are taken in time order, each at most once. For every requested exposure the
candidates are the first ``window`` unused frames (the ones nearest the session's "next unused time");
of those, the one whose recorded stage angle is nearest the **true** stage angle is returned (ties: the
earlier frame) and marked used. With ``window=1`` the frames come back strictly in recorded order,
whatever the stage does. When every frame has been used the exposure fails (the bridge answers 500).
Recorded frames are returned as stored (as float32), without the detector model.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from tiltstream.errors import UserError
from tiltstream.acquire.session import read_session


class ReplaySpecimen:
    """Serves the frames of a recorded session by the rule above.

    Parameters
    ----------
    path
        Session directory (docs/design.md 5).
    window
        Number of upcoming unused frames an exposure may choose from (>= 1).
    """

    through_detector = False

    def __init__(self, path: Path | str, window: int = 8) -> None:
        if window < 1:
            raise UserError(f"replay window {window} must be at least 1 frame")
        self.session = read_session(path)
        if not self.session.records:
            raise UserError(f"session {str(path)!r} has no frames to replay")
        self.records = sorted(self.session.records, key=lambda r: (r.time_s, r.index))
        self.window = int(window)
        self.shape = tuple(self.records[0].shape)
        self.used: list[int] = []  # record indices in the order they were served
        self._unused = list(range(len(self.records)))
        self._lock = threading.Lock()

    def frame(self, true_alpha_deg: float, time_s: float) -> np.ndarray:
        """The chosen recorded frame (ny, nx) float32; ``time_s`` is not used (the order is the session's).

        Raises
        ------
        RuntimeError
            Every recorded frame has been served.
        """
        with self._lock:
            if not self._unused:
                raise RuntimeError(f"replay session exhausted: all {len(self.records)} frames were served")
            candidates = self._unused[:self.window]
            best = min(candidates, key=lambda i: (abs(self.records[i].angle_deg - true_alpha_deg), i))
            self._unused.remove(best)
            self.used.append(self.records[best].index)
            record = self.records[best]
        return self.session.load_frame(record).astype(np.float32)
