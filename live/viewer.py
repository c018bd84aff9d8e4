"""The live viewer: a pyqtgraph window over the status stream (frames, reprojections, orthoslices, curves).

Panels: the latest measured frame, its reprojection by the current model and their residual; the
central xy/xz/yz orthoslices at a chosen time (a slider over the acquired time range: when "follow
latest" is off, the viewer asks the live process for the volume at the slider's time on its ROUTER
endpoint; otherwise it shows the orthoslices the live process broadcasts at the latest time); the loss
curve with the held-out reprojection error on its right axis (when frames are held out); tilt angle vs
time (GRS coverage); cumulative dose; temperature vs time when known; and with tracking on, the measured
specimen shift (x and y, px; frames where tracking lost the specimen marked) and the applied probe
defocus (nm) per frame. The status line says when tracking lost the specimen.

``tiltstream view --run RUN`` draws a run directory offline (:mod:`tiltstream.live.run_view`): the loss and
held-out curves from its training log, the frames' curves and the orthoslices at any time from its
saved reconstruction.

The window never blocks: a self-pacing single-shot QTimer drains the ZMQ sockets without waiting,
keeps only the newest message of each kind, redraws, and re-arms itself (docs/style.md 11). Images are set
with ``autoLevels=False`` and levels computed here. The same window renders offscreen for PNG
snapshots (:class:`SnapshotRenderer`), used by ``tiltstream view --headless`` and ``tiltstream live
--snapshots``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import numpy as np

from tiltstream.atomic_files import write_json_atomic
from tiltstream.wire import WireError
from tiltstream.live.status import (HistoryHeader, Orthoslices, Reprojection, StatusHeader, StatusMessage,
                         decode_status_message, encode_volume_request)

log = logging.getLogger(__name__)

PANELS = ("measured", "reprojection", "residual", "xy", "xz", "yz", "loss", "angle", "dose", "temperature",
          "shift", "defocus")
SLIDER_STEPS = 1000


def has_display() -> bool:
    """Whether Qt can open a window here (a display server, or an explicit offscreen platform)."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                or os.environ.get("QT_QPA_PLATFORM") in ("offscreen", "minimal", "windows", "cocoa"))


def launch_viewer(status_endpoint: str, log_file: Path | None = None) -> subprocess.Popen | None:
    """Start ``tiltstream view`` on ``status_endpoint`` in a subprocess (the one place a viewer is launched).

    Parameters
    ----------
    status_endpoint
        The live process's status stream (PUB) endpoint.
    log_file
        Where the viewer's output goes (inherited from this process when None).

    Returns None (with one warning) where no window can open. An offscreen "window" cannot be closed by
    anyone, so that viewer is told to end when the run does.
    """
    if not has_display():
        log.warning("no display (DISPLAY/WAYLAND_DISPLAY unset): running headless, no viewer window")
        return None
    until = ["--until-finished"] if os.environ.get("QT_QPA_PLATFORM") == "offscreen" else []
    command = [sys.executable, "-m", "tiltstream", "view", "--connect", status_endpoint, *until]
    if log_file is None:
        return subprocess.Popen(command)
    with open(log_file, "w") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)


def qt_app(headless: bool):
    """The process's QApplication, created offscreen when ``headless`` (before any widget)."""
    if headless:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    import pyqtgraph as pg

    pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)
    return pg.mkQApp("tiltstream viewer")


@dataclass
class ViewerState:
    """The newest message of each kind, as the window draws it."""

    status: StatusHeader | None = None
    reprojection: Reprojection | None = None
    latest_slices: Orthoslices | None = None
    requested_slices: Orthoslices | None = None
    history: HistoryHeader | None = None
    skipped: int = 0
    dirty: set[str] = field(default_factory=set)

    def apply(self, message: StatusMessage) -> None:
        """Take one decoded message."""
        if isinstance(message, StatusHeader):
            self.status = message
            self.dirty.add("status")
        elif isinstance(message, Reprojection):
            self.reprojection = message
            self.dirty.add("reprojection")
        elif isinstance(message, Orthoslices):
            if message.header.request_id is None:
                self.latest_slices = message
            else:
                self.requested_slices = message
            self.dirty.add("slices")
        elif isinstance(message, HistoryHeader):
            self.history = message
            self.dirty.add("history")

    def apply_parts(self, parts: list[bytes]) -> None:
        """Decode and take one raw message; a malformed one is logged and counted, never raised."""
        try:
            self.apply(decode_status_message(parts))
        except WireError as exc:
            self.skipped += 1
            log.warning("skipped a malformed status message: %s", exc)


def _levels(image: np.ndarray, symmetric: bool = False) -> tuple[float, float]:
    if symmetric:
        bound = float(np.percentile(np.abs(image), 99.5)) or 1.0
        return -bound, bound
    low, high = (float(v) for v in np.percentile(image, (0.5, 99.5)))
    return (low, high) if high > low else (low, low + 1.0)


def _per_frame(values: list[float | None], order: np.ndarray) -> np.ndarray:
    """A per-frame history list as float64 in ``order``, None as NaN (a gap in the curve)."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)[order]


class ViewerWindow:
    """The viewer's widgets, drawn from a :class:`ViewerState` (create a QApplication first)."""

    def __init__(self, state: ViewerState, request_volume=None) -> None:
        import pyqtgraph as pg
        from pyqtgraph.Qt import QtCore, QtWidgets

        self.state = state
        self.request_volume = request_volume  # callable(time_s) or None
        self.caption = ""  # appended to the status line (the offline viewer: which state it draws)
        self.drawn: set[str] = set()
        self.widget = QtWidgets.QWidget()
        self.widget.setWindowTitle("tiltstream live")
        self.widget.resize(1280, 960)
        outer = QtWidgets.QVBoxLayout(self.widget)
        self.status_label = QtWidgets.QLabel("waiting for the status stream ...")
        outer.addWidget(self.status_label)
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setBackground("w")
        outer.addWidget(self.graphics, stretch=1)
        controls = QtWidgets.QHBoxLayout()
        self.follow = QtWidgets.QCheckBox("follow latest")
        self.follow.setChecked(True)
        self.slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.slider.setRange(0, SLIDER_STEPS)
        self.slider.setValue(SLIDER_STEPS)
        self.time_label = QtWidgets.QLabel("t = - s")
        controls.addWidget(self.follow)
        controls.addWidget(self.slider, stretch=1)
        controls.addWidget(self.time_label)
        outer.addLayout(controls)
        self.slider.valueChanged.connect(self._slider_moved)
        self.follow.toggled.connect(lambda _: self._slider_moved(self.slider.value()))

        self.images: dict[str, pg.ImageItem] = {}
        self.plots: dict[str, pg.PlotItem] = {}
        titles = {"measured": "measured frame", "reprojection": "reprojection", "residual": "residual",
                  "xy": "xy (z = centre)", "xz": "xz (y = centre)", "yz": "yz (x = centre)"}
        for row, names in enumerate((("measured", "reprojection", "residual"), ("xy", "xz", "yz"))):
            for col, name in enumerate(names):
                plot = self.graphics.addPlot(row=row, col=col, title=titles[name])
                plot.hideAxis("left")
                plot.hideAxis("bottom")
                plot.setAspectLocked(True)
                plot.invertY(True)
                image = pg.ImageItem()
                image.setColorMap(pg.colormap.get("CET-D1" if name == "residual" else "CET-L1"))
                plot.addItem(image)
                self.images[name] = image
        curves = self.graphics.addLayout(row=2, col=0, colspan=3)
        specs = {"loss": ("loss", "step", "loss"), "angle": ("GRS coverage", "time (s)", "tilt (deg)"),
                 "dose": ("cumulative dose", "time (s)", "dose (e/A^2)"),
                 "temperature": ("temperature", "time (s)", "T (C)"),
                 "shift": ("tracking: measured shift", "time (s)", "shift (px)"),
                 "defocus": ("tracking: applied defocus", "time (s)", "defocus (nm)")}
        for number, (name, (title, xlabel, ylabel)) in enumerate(specs.items()):
            plot = curves.addPlot(row=number // 3, col=number % 3, title=title)
            plot.setLabel("bottom", xlabel)
            plot.setLabel("left", ylabel)
            self.plots[name] = plot
        self.plots["loss"].setLogMode(y=True)
        self.heldout_view = self._right_axis_view(self.plots["loss"], "held-out error (%)")
        self.heldout_curve = pg.PlotDataItem(pen=pg.mkPen("r", width=1), symbol="o", symbolSize=4, symbolBrush="r")
        self.heldout_view.addItem(self.heldout_curve)
        self.curves = {
            "loss": self.plots["loss"].plot(pen=pg.mkPen("b", width=1)),
            "angle": self.plots["angle"].plot(pen=None, symbol="o", symbolSize=4, symbolBrush="b"),
            "dose": self.plots["dose"].plot(pen=pg.mkPen("r", width=2)),
            "temperature": self.plots["temperature"].plot(pen=pg.mkPen("m", width=2)),
            "defocus": self.plots["defocus"].plot(pen=pg.mkPen("k", width=1), symbol="o", symbolSize=4,
                                                  symbolBrush="k", connect="finite"),
        }
        self.plots["shift"].addLegend(offset=(5, 5))
        self.curves.update(
            shift_x=self.plots["shift"].plot(pen=pg.mkPen("b", width=1), symbol="o", symbolSize=4, symbolBrush="b",
                                             connect="finite", name="x"),
            shift_y=self.plots["shift"].plot(pen=pg.mkPen("g", width=1), symbol="o", symbolSize=4, symbolBrush="g",
                                             connect="finite", name="y"),
            lost=self.plots["shift"].plot(pen=None, symbol="x", symbolSize=10, symbolPen=pg.mkPen("r", width=2),
                                          name="lost"))
        self._time_range = (0.0, 0.0)

    @staticmethod
    def _right_axis_view(plot, label: str):
        """A second ViewBox on ``plot``'s right axis, sharing its x axis (pyqtgraph's MultiplePlotAxes)."""
        import pyqtgraph as pg

        view = pg.ViewBox()
        plot.showAxis("right")
        plot.setLabel("right", label)
        plot.getAxis("right").setLogMode(False, False)  # linear, whatever the plot's own (log) y axis is
        plot.scene().addItem(view)
        plot.getAxis("right").linkToView(view)
        view.setXLink(plot)
        plot.vb.sigResized.connect(lambda *_: view.setGeometry(plot.vb.sceneBoundingRect()))
        return view

    # --- slider and requests -------------------------------------------------------------------
    def slider_time_s(self) -> float:
        """The time the slider points at, seconds."""
        low, high = self._time_range
        return low + (high - low) * self.slider.value() / SLIDER_STEPS

    def _slider_moved(self, _value: int) -> None:
        self.time_label.setText(f"t = {self.slider_time_s():.1f} s")
        if not self.follow.isChecked() and self.request_volume is not None:
            self.request_volume(self.slider_time_s())

    # --- drawing -----------------------------------------------------------------------------
    def _set_image(self, name: str, image: np.ndarray, symmetric: bool = False) -> None:
        self.images[name].setImage(image, autoLevels=False, levels=_levels(image, symmetric))
        self.drawn.add(name)

    def render(self) -> None:
        """Redraw what changed since the last call."""
        state = self.state
        dirty, state.dirty = state.dirty, set()
        if "status" in dirty and state.status is not None:
            s = state.status
            expected = f"/{s.frames_expected}" if s.frames_expected else ""
            loss = f"{s.loss:.4g}" if s.loss is not None else "-"
            tracking = "" if s.tracking is None else f"; {s.tracking}"
            caption = f"; {self.caption}" if self.caption else ""
            self.status_label.setText(
                f"{s.session}: {s.state}, frames {s.frames_in_model}{expected} (seen {s.frames_seen}), "
                f"step {s.step}, loss {loss}, {s.steps_per_s:.1f} steps/s, lag {s.lag_frames} frames "
                f"({s.lag_s:.1f} s){tracking}{caption}")
            self.status_label.setStyleSheet("color: red; font-weight: bold" if s.tracking_lost else "")
            if s.time_min_s is not None and s.time_max_s is not None:
                self._time_range = (s.time_min_s, s.time_max_s)
                self.time_label.setText(f"t = {self.slider_time_s():.1f} s")
        if "reprojection" in dirty and state.reprojection is not None:
            r = state.reprojection
            self._set_image("measured", r.measured)
            low, high = _levels(r.measured)
            self.images["reprojection"].setImage(r.reprojection, autoLevels=False, levels=(low, high))
            self.drawn.add("reprojection")
            self._set_image("residual", r.residual, symmetric=True)
            self.images["measured"].getViewBox().parentItem().setTitle(
                f"measured frame {r.header.frame_index} ({r.header.angle_deg:.1f} deg, {r.header.time_s:.0f} s)")
            self.images["residual"].getViewBox().parentItem().setTitle(
                f"residual ({r.header.error_percent:.1f} %)")
        if "slices" in dirty:
            shown = state.latest_slices if self.follow.isChecked() else (state.requested_slices or state.latest_slices)
            if shown is not None:
                for name in ("xy", "xz", "yz"):
                    self._set_image(name, getattr(shown, name))
                self.time_label.setText(f"t = {shown.header.time_s:.1f} s")
        if "history" in dirty and state.history is not None:
            self._draw_history(state.history)

    def _draw_history(self, h: HistoryHeader) -> None:
        if h.loss:
            self.curves["loss"].setData(np.asarray(h.loss_step, float), np.maximum(np.asarray(h.loss, float), 1e-12))
            self.drawn.add("loss")
        if h.heldout_rmse_percent:
            self.heldout_curve.setData(np.asarray(h.heldout_step, float), np.asarray(h.heldout_rmse_percent, float))
            self.plots["loss"].setTitle("loss (blue), held-out reprojection error (red)")
            self.drawn.add("heldout")
        if h.time_s:
            order = np.argsort(h.frame_index)
            times = np.asarray(h.time_s, float)[order]
            self.curves["angle"].setData(times, np.asarray(h.angle_deg, float)[order])
            self.curves["dose"].setData(times, np.cumsum(np.asarray(h.dose_e_per_A2, float)[order]))
            self.drawn.update(("angle", "dose"))
            temps = [(t, c) for t, c in zip(times, np.asarray(h.temperature_C, dtype=object)[order]) if c is not None]
            if temps:
                self.curves["temperature"].setData(*np.asarray(temps, float).T)
                self.plots["temperature"].setTitle("temperature")
                self.drawn.add("temperature")
            else:
                self.plots["temperature"].setTitle("temperature (not recorded)")
            self._draw_tracking(h, times, order)

    def _draw_tracking(self, h: HistoryHeader, times: np.ndarray, order: np.ndarray) -> None:
        """Measured shift (x, y; lost frames marked at 0) and applied defocus per frame, against time."""
        if not h.shift_x_px:
            self.plots["shift"].setTitle("tracking: measured shift (not tracked)")
            self.plots["defocus"].setTitle("tracking: applied defocus (not tracked)")
            return
        self.curves["shift_x"].setData(times, _per_frame(h.shift_x_px, order))
        self.curves["shift_y"].setData(times, _per_frame(h.shift_y_px, order))
        lost = np.asarray(h.tracking_lost, dtype=bool)[order]
        self.curves["lost"].setData(times[lost], np.zeros(int(lost.sum())))
        self.plots["shift"].setTitle(f"tracking: measured shift ({int(lost.sum())} lost)" if lost.any()
                                     else "tracking: measured shift")
        self.drawn.add("shift")
        defocus_nm = _per_frame(h.defocus_m, order) * 1e9
        if np.isfinite(defocus_nm).any():
            self.curves["defocus"].setData(times, defocus_nm)
            self.plots["defocus"].setTitle("tracking: applied defocus")
            self.drawn.add("defocus")
        else:
            self.plots["defocus"].setTitle("tracking: applied defocus (focus off)")

    def close(self) -> None:
        """Destroy the widgets now (PySide6 can crash if Python's finaliser meets them later)."""
        from pyqtgraph.Qt import QtWidgets

        self.widget.close()
        self.widget.deleteLater()
        QtWidgets.QApplication.processEvents()

    def save_png(self, path: Path) -> Path:
        """Grab the whole window to a PNG (works offscreen); returns the path."""
        from pyqtgraph.Qt import QtWidgets

        QtWidgets.QApplication.processEvents()
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.widget.grab().save(str(path), "PNG"):
            raise OSError(f"could not write snapshot {path}")
        return path


class SnapshotRenderer:
    """Renders status messages offscreen and writes PNG snapshots (no window, no event loop needed)."""

    def __init__(self, directory: Path) -> None:
        self.app = qt_app(headless=True)
        self.directory = Path(directory)
        self.state = ViewerState()
        self.window = ViewerWindow(self.state)
        self.window.widget.show()
        self.count = 0

    def feed(self, message: StatusMessage) -> None:
        """Take one typed status message (as the live process built it; no decoding)."""
        self.state.apply(message)

    def write(self, name: str | None = None) -> Path:
        """Render and write ``snapshot_NNNN.png`` (or ``name``) and ``latest.png``; returns the first."""
        self.window.render()
        path = write_snapshot(self.window, self.directory, name or f"snapshot_{self.count:04d}.png")
        self.count += 1
        return path

    def close(self) -> None:
        """Destroy the offscreen window."""
        self.window.close()


class StreamViewer:
    """Connects a :class:`ViewerWindow` to a live process: SUB for the stream, DEALER for volume requests."""

    def __init__(self, connect: str, window: ViewerWindow, refresh_interval_s: float = 0.1,
                 max_messages_per_tick: int = 200) -> None:
        import zmq

        self.zmq = zmq
        self.context = zmq.Context.instance()
        self.sub = self.context.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(connect)
        self.connect_host = connect.rsplit(":", 1)[0]
        self.dealer = None
        self.dealer_endpoint: str | None = None
        self.window = window
        self.window.request_volume = self.request_volume
        self.refresh_ms = max(1, int(refresh_interval_s * 1000))
        self.max_messages = max_messages_per_tick
        self.request_id = 0
        self.pending: float | None = None
        self.wanted: float | None = None
        self.ticks = 0
        self.on_tick = None  # optional callable after each redraw (snapshots, exit checks)
        self.closed = False

    def start(self) -> None:
        """Arm the self-pacing timer (call once the event loop runs or is about to)."""
        from pyqtgraph.Qt import QtCore

        QtCore.QTimer.singleShot(0, self._tick)

    def _tick(self) -> None:
        from pyqtgraph.Qt import QtCore

        if self.closed:  # a tick queued before close() (Qt still delivers it while shutting down)
            return
        try:
            self.poll()
            self.window.render()
            self.ticks += 1
            if self.on_tick is not None:
                self.on_tick()
        finally:
            if not self.closed:
                QtCore.QTimer.singleShot(self.refresh_ms, self._tick)

    def poll(self) -> int:
        """Drain waiting messages without blocking; returns how many were taken."""
        zmq = self.zmq
        taken = 0
        while taken < self.max_messages and self.sub.poll(0, zmq.POLLIN):
            self.window.state.apply_parts(self.sub.recv_multipart())
            taken += 1
        status = self.window.state.status
        if status is not None and status.volume_endpoint and self.dealer_endpoint != status.volume_endpoint:
            self._connect_dealer(status.volume_endpoint)
        while self.dealer is not None and self.dealer.poll(0, zmq.POLLIN):
            parts = self.dealer.recv_multipart()
            self.window.state.apply_parts(parts[1:] if parts and parts[0] == b"" else parts)
            self.pending = None
            if self.wanted is not None:
                self.request_volume(self.wanted)
        return taken

    def _connect_dealer(self, endpoint: str) -> None:
        zmq = self.zmq
        if self.dealer is not None:
            self.dealer.close(linger=0)
        port = endpoint.rsplit(":", 1)[1]
        host = self.connect_host if "127.0.0.1" in endpoint or "*" in endpoint else endpoint.rsplit(":", 1)[0]
        self.dealer = self.context.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.connect(f"{host}:{port}")
        self.dealer_endpoint = endpoint
        self.pending = None

    def request_volume(self, time_s: float) -> None:
        """Ask for the orthoslices at ``time_s``; one request in flight, the newest wish wins."""
        if self.dealer is None:
            return
        if self.pending is not None and time.monotonic() - self.pending < 5.0:
            self.wanted = time_s
            return
        self.wanted = None
        self.request_id += 1
        self.dealer.send_multipart([b""] + encode_volume_request(self.request_id, time_s))
        self.pending = time.monotonic()

    def close(self) -> None:
        """Stop the timer's ticks and close the sockets."""
        self.closed = True
        self.sub.close(linger=0)
        if self.dealer is not None:
            self.dealer.close(linger=0)


def write_snapshot(window: ViewerWindow, directory: Path, name: str) -> Path:
    """Write ``name`` and ``latest.png`` of ``window`` into ``directory``, plus ``panels.json`` (panels drawn)."""
    path = window.save_png(Path(directory) / name)
    window.save_png(Path(directory) / "latest.png")
    write_json_atomic(Path(directory) / "panels.json", sorted(window.drawn), indent=None)
    return path


def _headless(settings) -> bool:
    """Whether the viewer runs offscreen (asked, or no display); a headless viewer needs --snapshots."""
    from tiltstream.errors import UserError

    headless = settings.headless
    if not headless and not has_display():
        log.warning("no display (DISPLAY/WAYLAND_DISPLAY unset): running headless")
        headless = True
    if headless and settings.snapshots is None:
        raise UserError("a headless viewer needs --snapshots DIR to write its panels to")
    return headless


def open_run_window(run_dir: Path, time_s: float | None, headless: bool, checkpoint: str = "auto"):
    """A window drawing the run directory ``run_dir`` offline (:class:`tiltstream.live.run_view.RunSource`).

    Parameters
    ----------
    run_dir
        A run directory of ``tiltstream live`` or ``recon train``.
    time_s
        Time of the orthoslices shown first, seconds (None: the latest frame time).
    headless
        Render offscreen.
    checkpoint
        Which state's orthoslices to draw (:data:`tiltstream.recon.run_dir.CHECKPOINTS`; ``auto``: the state
        ``recon volumes`` reads).

    Returns
    -------
    app, window
        The QApplication and the drawn :class:`ViewerWindow`; its time slider (with "follow latest" off)
        computes the orthoslices at the slider's time from the run's reconstruction.
    """
    from tiltstream.live.run_view import RunSource

    source = RunSource(run_dir, checkpoint=checkpoint)
    app = qt_app(headless)
    state = ViewerState()
    window = ViewerWindow(state)
    window.widget.setWindowTitle(f"tiltstream run {run_dir}: {source.state}")
    window.caption = f"drawn: {source.state}"
    for message in source.messages(time_s):
        state.apply(message)
    requests = [0]

    def request_volume(at_s: float) -> None:
        requests[0] += 1
        slices = source.orthoslices(at_s, request_id=requests[0])
        if slices is not None:
            state.apply(slices)
            window.render()

    window.request_volume = request_volume
    window.render()
    return app, window


def end_process(code: int) -> NoReturn:
    """End the viewer process now, without Python's finalisation (output flushed first).

    PySide6 objects collected during interpreter shutdown can abort an otherwise clean exit ("Fatal
    Python error: none_dealloc", exit 134); everything the viewer owns is closed before this is called.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_offline_view(settings) -> NoReturn:
    """``tiltstream view --run RUN``: draw a run directory; headless, write one snapshot and exit, else
    until the window closes (or the timeout)."""
    from pyqtgraph.Qt import QtCore

    headless = _headless(settings)
    app, window = open_run_window(settings.run_dir, settings.time_s, headless, settings.checkpoint)
    try:
        if headless:
            write_snapshot(window, settings.snapshots, "run.png")
        else:
            window.widget.show()
            if settings.timeout_s:
                QtCore.QTimer.singleShot(int(settings.timeout_s * 1000), app.quit)
            app.exec()
    finally:
        window.close()
        app.shutdown()
    end_process(0)


def run_view(settings) -> NoReturn:
    """Run the viewer until the window closes, SIGINT/SIGTERM, the live process finishes or the timeout
    (with ``settings.run_dir``: draw that run directory offline, :func:`run_offline_view`).

    Parameters
    ----------
    settings
        :class:`tiltstream.live.settings.ViewSettings`.
    """
    import signal

    if settings.run_dir is not None:
        return run_offline_view(settings)
    headless = _headless(settings)
    app = qt_app(headless)
    state = ViewerState()
    window = ViewerWindow(state)
    viewer = StreamViewer(settings.connect, window, settings.refresh_interval_s)
    started = time.monotonic()
    last_snapshot = [started]
    count = [0]

    def snapshot() -> None:
        if settings.snapshots is not None:
            write_snapshot(window, settings.snapshots, f"snapshot_{count[0]:04d}.png")
            count[0] += 1
            last_snapshot[0] = time.monotonic()

    def check() -> None:
        now = time.monotonic()
        if settings.snapshots is not None and now - last_snapshot[0] >= settings.snapshot_interval_s:
            snapshot()
        finished = state.status is not None and state.status.state in ("finished", "stopped")
        if (settings.until_finished and finished) or (settings.timeout_s and now - started >= settings.timeout_s):
            app.quit()

    viewer.on_tick = check
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: app.quit())
    window.widget.show()
    viewer.start()
    try:
        app.exec()
        viewer.poll()
        window.render()
        snapshot()
    finally:
        viewer.close()
        window.close()
        app.shutdown()
    if state.skipped:
        log.warning("skipped %d malformed messages", state.skipped)
    end_process(0)
