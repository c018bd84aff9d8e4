"""Test helper: a real PUB socket on loopback that publishes every kind of status message in a loop."""

from __future__ import annotations

import threading
import time

import numpy as np
import zmq

from tiltstream.live.status import (HistoryHeader, StatusHeader, encode_message, make_orthoslices,
                                    make_reprojection)


def synthetic_volume(n: int = 16) -> np.ndarray:
    """A (n, n, n) float32 rod along y with a brighter core (seed-free, analytic)."""
    z, y, x = np.mgrid[:n, :n, :n].astype(np.float32) - (n - 1) / 2
    r = np.hypot(z, x)
    return ((r < n / 4) * 0.3 + (r < n / 8) * 0.7 * (np.abs(y) < n / 3)).astype(np.float32)


class StatusFeed:
    """Publishes status, history (with tracking: frame 5 lost), reprojection and orthoslices every ``period_s``
    until stopped.

    After ``finish_after_s`` the status state becomes ``finished``. ``extra`` messages (raw parts) are
    sent once per cycle before the good ones, to test that consumers skip them.
    """

    def __init__(self, n: int = 16, period_s: float = 0.05, finish_after_s: float = 1.0,
                 extra: list[list[bytes]] | None = None) -> None:
        self.context = zmq.Context.instance()
        self.socket = self.context.socket(zmq.PUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        port = self.socket.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.n, self.period_s, self.finish_after_s = n, period_s, finish_after_s
        self.extra = extra or []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StatusFeed:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self.socket.close(linger=0)

    def _run(self) -> None:
        volume = synthetic_volume(self.n)
        measured = volume.sum(axis=0)
        started = time.monotonic()
        step = 0
        while not self._stop.is_set():
            step += 10
            finished = time.monotonic() - started > self.finish_after_s
            frames = 12
            status = StatusHeader(session="feed", frames_seen=frames, frames_in_model=frames, frames_expected=frames,
                                  step=step, loss=1.0 / step, steps_per_s=50.0, lag_frames=0, lag_s=0.0,
                                  time_min_s=0.0, time_max_s=55.0, state="finished" if finished else "training",
                                  tracking="tracking (previous): frame 11 shift (+0.2, -0.1) px, defocus -20 nm")
            history = HistoryHeader(session="feed", frame_index=list(range(frames)),
                                    time_s=[5.0 * i for i in range(frames)],
                                    angle_deg=[((i * 1.618034 * 140) % 140) - 70 for i in range(frames)],
                                    dose_e_per_A2=[40.0] * frames,
                                    temperature_C=[20.0 + 10 * i for i in range(frames)],
                                    loss_step=list(range(10, step + 1, 10)),
                                    loss=[1.0 / s for s in range(10, step + 1, 10)],
                                    shift_x_px=[None if i == 5 else 0.5 * (-1) ** i for i in range(frames)],
                                    shift_y_px=[None if i == 5 else 0.1 * i for i in range(frames)],
                                    defocus_m=[-2e-9 * i for i in range(frames)],
                                    tracking_lost=[i == 5 for i in range(frames)])
            for parts in self.extra:
                self.socket.send_multipart(parts)
            for message in (status, history,
                            make_reprojection("feed", frames - 1, 12.0, 55.0, step, measured, measured * 0.9),
                            make_orthoslices("feed", volume, 55.0, step)):
                self.socket.send_multipart(encode_message(message))
            self._stop.wait(self.period_s)
