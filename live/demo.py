"""``tiltstream demo``: simulated microscope + acquisition + live DIP-STER + viewer on one machine, then a report.

What runs (all on loopback):

1. the simulated microscope (:class:`tiltstream.simulator.microscope.SimulatedMicroscope`, a dynamic phantom on
   an accelerated clock) served by :func:`tiltstream.simulator.bridge_server.running_server` in a thread here;
2. ``tiltstream acquire`` (subprocess): a GRS tilt series through the temscript bridge, recorded in
   ``OUT/session`` and published on a frame stream;
3. ``tiltstream live`` (subprocess, headless, PNG snapshots in ``OUT/snapshots``): DIP-STER trained
   while frames arrive, status stream for the viewer, volumes in ``OUT/run/volumes.tif`` at the end;
4. ``tiltstream view`` (subprocess) unless headless or no display is available.

Then the report (``OUT/report.md`` and ``OUT/report.json``): frames, dose, final reprojection error,
SSIM/RMSE against the ground truth (the phantom step each frame was taken at, written into the
session as ``ground_truth.tif``) for DIP-STER and for moving-window SIRT of the same session
(``OUT/sirt_volumes.tif``), and the time taken.

Dose: the acquisition computes a frame's dose from beam current, dwell time and pixel size
(:func:`tiltstream.acquire.dose.stem_dose_e_per_A2`); the simulator's dose rate is set so its frames carry the
same dose (``dose / (dwell * pixels)`` e/A^2 per second of unblanked beam).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

import pydantic

from tiltstream.command import register_command
from tiltstream.errors import UserError
from tiltstream.live.run_state import ENDPOINTS_FILE
from tiltstream.recon.presets import PresetName
from tiltstream.simulator.heating_log import HeatingLog

log = logging.getLogger("tiltstream.live.demo")

PA = 1e-12
ELEMENTARY_CHARGE_C = 1.602176634e-19
STOP_NOW_S = 1.0  # an interrupted demo waits this long for its children before killing them, seconds


class DemoSettings(pydantic.BaseModel):
    """``tiltstream demo`` (config/demo.toml)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    out: Path = pydantic.Field(default=Path("tiltstream-demo"), description="output directory")
    phantom: Literal["nanoshell", "nanorod", "nanostar", "nanocube"] = pydantic.Field(
        default="nanorod", description="dynamic specimen")
    size: int = pydantic.Field(default=32, ge=8, le=128, description="phantom grid edge = frame size, voxels")
    frames: int = pydantic.Field(default=60, ge=4, description="frames in the GRS tilt series")
    dose_e_per_A2: float = pydantic.Field(default=24.0, gt=0, description="dose per frame, e/A^2")
    dwell_time_s: float = pydantic.Field(default=1.6e-6, gt=0, description="STEM dwell time per pixel, seconds")
    pixel_size_nm: float = pydantic.Field(default=0.5, gt=0, description="pixel (voxel) size, nm")
    seconds_per_step: float = pydantic.Field(
        default=3.5, gt=0, description="specimen time per phantom step, simulated seconds")
    time_factor: float = pydantic.Field(
        default=2.0, gt=0, description="simulated clock speed over wall time (2: twice as fast)")
    noise: Literal["none", "poisson"] = pydantic.Field(default="poisson", description="detector shot noise")
    seed: int = pydantic.Field(default=0, description="seed of the specimen, the noise and the network")
    preset: PresetName = pydantic.Field(default="fast", description="DIP-STER preset: paper, fast or kplanes")
    device: Literal["auto", "cpu", "cuda"] = pydantic.Field(default="auto", description="torch device")
    threads: int | None = pydantic.Field(
        default=1, ge=1, description="torch CPU threads of the live process (1: it shares the CPU with "
        "the microscope and the acquisition)")
    chunk_steps: int = pydantic.Field(default=25, ge=1, description="training steps between stream polls")
    max_steps_per_frame: int = pydantic.Field(
        default=50, ge=0, description="training steps per frame in the model at most before the last frame "
        "(tiltstream live's cap; 0: train for as long as the acquisition lasts)")
    final_steps: int = pydantic.Field(
        default=1500, ge=0, description="training steps after the last frame, steps")
    snapshot_interval_s: float = pydantic.Field(default=15.0, gt=0,
                                                description="seconds between PNG snapshots, wall clock")
    sirt_window: int = pydantic.Field(default=30, ge=1, description="moving-window SIRT window, frames")
    sirt_iterations: int = pydantic.Field(default=30, ge=1, description="SIRT iterations per window")
    heating_to_C: float = pydantic.Field(
        default=300.0, ge=0, description="simulated heating holder: a log ramping linearly from 25 C to "
        "this temperature over the expected session, Celsius (0: no temperature log)")
    headless: bool = pydantic.Field(default=False, description="no viewer window (snapshots only)")
    timeout_s: float = pydantic.Field(default=1800.0, gt=0,
                                      description="give up (and stop everything) after this long, seconds")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tiltstream", *args]


class Demo:
    """One demo run: start everything, wait, stop everything, evaluate."""

    def __init__(self, settings: DemoSettings) -> None:
        self.s = settings
        self.out = Path(settings.out)
        self.session = self.out / "session"
        self.run_dir = self.out / "run"
        self.snapshots = self.out / "snapshots"
        self.procs: dict[str, subprocess.Popen] = {}
        self.heating: HeatingLog | None = None
        self.logs: dict[str, Path] = {}

    def check_out(self) -> None:
        if self.session.exists() or self.run_dir.exists():
            raise UserError(f"{str(self.out)!r} already holds a demo (session/ or run/); choose another --out "
                            "or remove it")
        self.out.mkdir(parents=True, exist_ok=True)

    def microscope(self):
        from tiltstream.simulator.microscope import SimulatedMicroscope
        from tiltstream.simulator.settings import SimSettings

        s = self.s
        dose_rate = s.dose_e_per_A2 / (s.dwell_time_s * s.size * s.size)
        return SimulatedMicroscope(SimSettings(
            phantom=s.phantom, size=s.size, steps=s.frames, seed=s.seed, device=s.device,
            seconds_per_step=s.seconds_per_step, time_factor=s.time_factor, mode="realistic",
            pixel_size_nm=s.pixel_size_nm, dose_rate_e_per_A2_s=dose_rate, dwell_time_s=s.dwell_time_s,
            noise=s.noise))

    def beam_current_pA(self) -> float:
        """The probe current that gives ``dose_e_per_A2`` per frame with this dwell time and pixel size."""
        s = self.s
        pixel_A2 = (s.pixel_size_nm * 10.0) ** 2
        return s.dose_e_per_A2 * pixel_A2 * ELEMENTARY_CHARGE_C / s.dwell_time_s / PA

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        self.logs[name] = self.out / f"{name}.log"
        handle = open(self.logs[name], "w")
        proc = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=dict(os.environ))
        handle.close()
        self.procs[name] = proc
        return proc

    def stop_all(self, now: bool = False) -> None:
        """Stop the children: at the end of a run, SIGINT the acquisition (ends after the frame) and SIGTERM
        the live process (checkpoints), waiting up to 30 s each; ``now`` (the demo was interrupted):
        SIGTERM every child, the viewer too, and kill what is still running after :data:`STOP_NOW_S`."""
        if self.heating is not None:
            self.heating.close()
        signals = {"acquire": signal.SIGTERM, "live": signal.SIGTERM, "view": signal.SIGTERM} if now else {
            "acquire": signal.SIGINT, "live": signal.SIGTERM}
        for name, sig in signals.items():
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.send_signal(sig)
        deadline = time.monotonic() + (STOP_NOW_S if now else 30.0)
        for name, proc in self.procs.items():
            if name not in signals:  # the viewer: a window the user closes; it ends with the run when offscreen
                continue
            try:
                proc.wait(max(0.0, deadline - time.monotonic()) if now else 30.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def log_tail(self, name: str, lines: int = 5) -> str:
        text = self.logs[name].read_text(errors="replace").replace("\r", "\n")
        return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())

    def run_processes(self, url: str) -> float:
        """Start acquisition, live process and viewer; wait until the live process finishes; returns the
        acquisition's wall time, seconds."""
        from tiltstream.live.viewer import has_display, launch_viewer

        s = self.s
        publish = f"tcp://127.0.0.1:{_free_port()}"
        live_args = ["live", "--connect", publish, "--session", str(self.session), "--out", str(self.run_dir),
                     "--status", "tcp://127.0.0.1:*", "--volume-endpoint", "tcp://127.0.0.1:*", "--headless",
                     "--snapshots", str(self.snapshots), "--snapshot-interval-s", str(s.snapshot_interval_s),
                     "--device", s.device, "--preset", s.preset, "--seed", str(s.seed),
                     "--expected-frames", str(s.frames), "--chunk-steps", str(s.chunk_steps),
                     "--max-steps-per-frame", str(s.max_steps_per_frame), "--final-steps", str(s.final_steps),
                     "--checkpoint-interval-s", "30"]
        if s.threads is not None:
            live_args += ["--threads", str(s.threads)]
        live = self.start("live", _cli(*live_args))
        acquire_args = ["acquire", "--session", str(self.session), "--bridge", url, "--count", str(s.frames),
                        "--publish", publish, "--dwell-time-s", repr(s.dwell_time_s),
                        "--pixel-size-nm", repr(s.pixel_size_nm), "--beam-current-pA", repr(self.beam_current_pA()),
                        "--detector", "HAADF", "--tilt-axis-deg", "0"]  # the simulator draws the axis along y
        if s.heating_to_C > 0:
            # wall seconds of the phantom's evolution: steps x seconds per step / clock speed-up
            ramp_s = s.frames * s.seconds_per_step / s.time_factor
            self.heating = HeatingLog(self.out / "temperature.csv", s.heating_to_C, ramp_s)
            acquire_args += ["--temperature-log", str(self.out / "temperature.csv")]
        acquire = self.start("acquire", _cli(*acquire_args))
        acquire_started = time.monotonic()
        endpoints = self.run_dir / ENDPOINTS_FILE
        status_sub = None
        acquire_wall = None
        deadline = time.monotonic() + s.timeout_s
        headless = s.headless or not has_display()
        if not s.headless and headless:
            log.warning("no display (DISPLAY/WAYLAND_DISPLAY unset and QT_QPA_PLATFORM not offscreen): "
                        "running headless; the viewer's panels are written to %s", self.snapshots)
        try:
            while live.poll() is None:
                if time.monotonic() > deadline:
                    raise UserError(f"the demo did not finish within {s.timeout_s:g} s; raise --timeout-s")
                if acquire_wall is None and acquire.poll() is not None:
                    acquire_wall = time.monotonic() - acquire_started
                    if acquire.returncode != 0:
                        raise UserError(f"the acquisition failed (exit {acquire.returncode}): "
                                        f"{self.log_tail('acquire')}")
                if status_sub is None and endpoints.is_file():
                    status = json.loads(endpoints.read_text())["status"]
                    status_sub = StatusLine(status)
                    if not headless:
                        self.logs["view"] = self.out / "view.log"
                        self.procs["view"] = launch_viewer(status, self.logs["view"])
                if status_sub is not None:
                    status_sub.update(self.session)
                time.sleep(0.2)
        finally:
            if status_sub is not None:
                status_sub.close()
        if live.returncode != 0:
            raise UserError(f"the live reconstruction failed (exit {live.returncode}): {self.log_tail('live')}")
        if acquire_wall is None:
            acquire.wait(60)
            acquire_wall = time.monotonic() - acquire_started
        return acquire_wall


class StatusLine:
    """Subscribes to the live status stream and keeps one progress line on stderr (throttled in a log)."""

    def __init__(self, endpoint: str) -> None:
        import zmq

        from tiltstream.progress import ProgressLine

        self.zmq = zmq
        self.context = zmq.Context()
        self.sub = self.context.socket(zmq.SUB)
        self.sub.linger = 0
        self.sub.subscribe(b"status")
        self.sub.connect(endpoint)
        self.last = None
        self.progress = ProgressLine()

    def update(self, session: Path) -> None:
        from tiltstream.wire import WireError
        from tiltstream.live.status import StatusHeader, decode_status_message

        while self.sub.poll(0, self.zmq.POLLIN):
            try:
                message = decode_status_message(self.sub.recv_multipart())
            except WireError:
                continue
            if isinstance(message, StatusHeader):
                self.last = message
        acquired = 0
        records = session / "frames.jsonl"
        if records.is_file():
            acquired = records.read_bytes().count(b"\n")
        s = self.last
        model = (f"model {s.frames_in_model}/{s.frames_expected or '?'}, step {s.step}, loss "
                 f"{s.loss if s.loss is None else f'{s.loss:.4g}'}, {s.steps_per_s:.0f} steps/s"
                 if s is not None else "model starting")
        self.progress.update(f"demo: acquired {acquired} frames | {model}")

    def close(self) -> None:
        self.progress.end()
        self.sub.close(0)
        self.context.term()


def run_demo(settings: DemoSettings) -> int:
    """Run the whole demo; returns 0 when the report was written."""
    from tiltstream.simulator.bridge_server import running_server

    from tiltstream.live.demo_report import evaluate, write_report

    demo = Demo(settings)
    demo.check_out()
    started = time.monotonic()
    log.info("building the simulated microscope (%s, %d^3, %d steps)", settings.phantom, settings.size,
             settings.frames)
    microscope = demo.microscope()
    try:
        with running_server(microscope) as url:
            log.info("simulated microscope on %s; acquiring %d frames, training live", url, settings.frames)
            acquire_wall = demo.run_processes(url)
    except BaseException:
        demo.stop_all(now=True)
        raise
    demo.stop_all()
    log.info("evaluating against the ground truth and moving-window SIRT")
    report = evaluate(settings, demo, microscope, acquire_wall, time.monotonic() - started)
    write_report(demo.out, report)
    if demo.procs.get("view") is not None and demo.procs["view"].poll() is None:
        log.info("the viewer window stays open with the final state; close it when done")
    for line in summary_lines(report):
        log.info("%s", line)
    return 0


def summary_lines(report: dict) -> list[str]:
    """The log's closing lines: what was measured, in one screen."""
    d, s = report["dipster"], report["sirt"]
    return [
        f"frames {report['frames']}, dose {report['dose_total_e_per_A2']:.0f} e/A^2 "
        f"({report['dose_per_frame_e_per_A2']:.1f} per frame), acquisition {report['acquisition_wall_s']:.0f} s",
        f"DIP-STER: {report['training_steps']} steps, final reprojection error "
        f"{report['final_reprojection_error_percent']:.1f} %",
        f"SSIM vs ground truth: DIP-STER {d['ssim_mean']:.3f} (last frame {d['ssim_last']:.3f}), moving-window "
        f"SIRT {s['ssim_mean']:.3f} (last frame {s['ssim_last']:.3f})",
        f"RMSE vs ground truth: DIP-STER {d['rmse_percent_mean']:.1f} %, SIRT {s['rmse_percent_mean']:.1f} %",
        f"{'DIP-STER beats' if report['dipster_beats_sirt'] else 'DIP-STER does NOT beat'} moving-window SIRT; "
        f"total {report['total_wall_s']:.0f} s; report {report['report_md']}",
    ]


def _run(settings: DemoSettings, args: argparse.Namespace) -> int:
    return run_demo(settings)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``tiltstream demo`` (every part on one machine: the ``[all]`` extra)."""
    register_command(
        subparsers, "demo", settings=DemoSettings, run=_run, config_name="demo", extra="all",
        help="simulated microscope + GRS acquisition + live DIP-STER + viewer, then a report",
        description="Run a simulated dynamic specimen on an accelerated clock, acquire a GRS tilt series "
        "through the temscript bridge, reconstruct it live with DIP-STER, show it in the viewer (or write "
        "snapshots with --headless), and write volumes, snapshots and a report comparing DIP-STER and "
        "moving-window SIRT against the ground truth.")
