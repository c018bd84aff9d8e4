"""The ``tiltstream sim`` subcommand: ``serve`` (a simulated microscope on the temscript bridge) and ``tiltseries``."""

from __future__ import annotations

import argparse
import errno
import signal
import socket
import sys
from pathlib import Path

from tiltstream.command import register_command, register_group
from tiltstream.errors import UserError
from tiltstream.simulator.settings import SimSettings

SERVE_ONLY = ("mode", "time_factor", "tilt_speed_deg_per_s", "settle_s", "backlash_deg", "alpha_min_deg",
              "alpha_max_deg", "beam_current_pA", "dose_rate_e_per_A2_s", "dwell_time_s", "host", "port", "steps",
              "replay_window", "eucentric_offset_nm", "convergence_mrad")
TILTSERIES_ONLY = ("count", "min_deg", "max_deg", "dose_e_per_A2")
RENAME = {"dose_e_per_A2": "--dose", "dose_rate_e_per_A2_s": "--dose-rate", "min_deg": "--min",
          "max_deg": "--max", "alpha_min_deg": "--alpha-min", "alpha_max_deg": "--alpha-max",
          "tilt_speed_deg_per_s": "--tilt-speed"}


def _set_threads(settings: SimSettings) -> None:
    if settings.threads > 0:
        import torch

        torch.set_num_threads(settings.threads)


def _check_port_free(host: str, port: int) -> None:
    """Bind-test ``(host, port)`` before the slow setup; a busy port is a one-line UserError."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UserError(_bind_message(host, port, exc)) from None


def _bind_message(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is already in use; stop the other server or choose another --port"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}; check --host and --port"


def _stop_on_signals() -> None:
    """Make Ctrl+C (SIGINT) and SIGTERM stop the server cleanly, whatever the parent process left them
    set to: a job a non-interactive shell starts in the background inherits SIGINT *ignored*, and Python
    then installs no handler, so ``kill -INT`` would do nothing. Main thread only."""
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.default_int_handler)  # raises KeyboardInterrupt, whichever signal


def run_serve(settings: SimSettings, args: argparse.Namespace) -> int:
    """Serve a simulated (or replayed) microscope until interrupted."""
    _stop_on_signals()  # also during the slow set-up below (an interrupt there exits 130, nothing to close)
    _set_threads(settings)
    from tiltstream.simulator.faults import FaultInjector, apply_fault_spec

    for spec in args.fault:  # check every spec before the slow set-up
        apply_fault_spec(FaultInjector(), spec)
    _check_port_free(settings.host, settings.port)
    from tiltstream.simulator.bridge_server import SimulatorServer
    from tiltstream.simulator.microscope import PhantomSpecimen, SimulatedMicroscope
    from tiltstream.simulator.phantoms import make_phantom
    from tiltstream.progress import stderr_progress
    from tiltstream.recon.device import resolve_device

    if args.replay is not None:
        from tiltstream.simulator.replay_specimen import ReplaySpecimen
        specimen = ReplaySpecimen(args.replay, window=settings.replay_window)
        what = f"replay of {args.replay} ({len(specimen.records)} frames)"
    else:
        device = resolve_device(settings.device)
        report = stderr_progress(f"tiltstream sim serve: generating {settings.phantom} {settings.size}^3 steps")
        volumes = make_phantom(settings.phantom, settings.size, settings.steps, seed=settings.seed,
                               device=device, progress=lambda done: report(done, settings.steps))
        specimen = PhantomSpecimen(volumes, settings.seconds_per_step, device)
        what = f"{settings.phantom} {settings.size}^3 x {settings.steps} steps of {settings.seconds_per_step} s"
    microscope = SimulatedMicroscope(settings, specimen=specimen)
    for spec in args.fault:
        print(f"tiltstream sim serve: fault armed: {apply_fault_spec(microscope.faults, spec)}", file=sys.stderr)
    try:
        server = SimulatorServer((settings.host, settings.port), microscope)
    except OSError as exc:
        raise UserError(_bind_message(settings.host, settings.port, exc)) from None
    try:  # the address is printed inside: whoever reads it may signal at once
        host, port = server.server_address[:2]
        print(f"tiltstream sim serve: {what}, {settings.mode} stage, on http://{host}:{port} "
              "(temscript v1; Ctrl+C stops)", file=sys.stderr, flush=True)
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        print("tiltstream sim serve: stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0


def run_tiltseries(settings: SimSettings, args: argparse.Namespace) -> int:
    """Write a synthetic session with ground truth."""
    _set_threads(settings)
    from tiltstream.simulator.detector import DetectorConfig
    from tiltstream.progress import stderr_progress
    from tiltstream.simulator.tiltseries import write_synthetic_session

    detector = DetectorConfig(pixel_size_nm=settings.pixel_size_nm, noise=settings.noise,
                              efficiency=settings.haadf_efficiency, read_noise=settings.read_noise,
                              drift_px_per_frame=settings.drift_px_per_frame, scan_jitter=settings.scan_jitter,
                              shadow_start_deg=settings.shadow_start_deg,
                              shadow_strength=settings.shadow_strength)
    path = write_synthetic_session(
        Path(args.out), settings.phantom, settings.size, settings.count, noise=settings.noise,
        dose_e_per_A2=settings.dose_e_per_A2, seed=settings.seed, min_deg=settings.min_deg,
        max_deg=settings.max_deg, seconds_per_step=settings.seconds_per_step, detector=detector,
        device=settings.device, progress=stderr_progress("tiltstream sim tiltseries: steps+frames"))
    print(f"wrote {settings.count} frames of {settings.phantom} {settings.size}^3 with ground truth to {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sim`` with its ``serve`` and ``tiltseries`` subcommands."""
    sim_sub = register_group(subparsers, "sim", extra="sim", help="simulated microscope and synthetic tilt series",
                             description="Simulated STEM microscope with dynamic specimens.")
    register_command(
        sim_sub, "serve", settings=SimSettings, run=run_serve, config_name="sim", arguments=_serve_arguments,
        skip=TILTSERIES_ONLY, rename=RENAME, logs=False,
        help="serve a simulated microscope on the temscript v1 HTTP bridge",
        description="Serve a simulated STEM microscope (dynamic phantom, goniometer with backlash, HAADF/BF "
        "detectors, dose) on the temscript v1 HTTP API, so temscript.RemoteMicroscope and "
        "'tiltstream acquire' drive it unchanged. With --replay, serve a recorded session instead.")
    register_command(
        sim_sub, "tiltseries", settings=SimSettings, run=run_tiltseries, config_name="sim",
        arguments=_tiltseries_arguments, skip=SERVE_ONLY, rename=RENAME, logs=False,
        help="write a synthetic GRS session with ground truth",
        description="Write a recorded session (docs/design.md 5) of a dynamic phantom: frame i is phantom step i "
        "projected at GRS angle i, plus ground_truth.tif (T, Z, Y, X) and ground_truth_times.csv.")


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--replay", type=Path, default=None, metavar="SESSION",
                        help="serve this recorded session: each exposure returns, of the next "
                        "--replay-window unused frames, the one nearest the true stage angle")
    parser.add_argument("--fault", action="append", default=[], metavar="ENDPOINT:KIND[:N]",
                        help="rehearse a failing bridge (repeatable): KIND error (the next N requests to "
                        "ENDPOINT answer HTTP 500), drop (the next N are closed unanswered) or delay (every "
                        "request waits N s); ENDPOINT is the path after /v1/ (acquire, stage_position, ...) "
                        "or *; e.g. acquire:error:3")


def _tiltseries_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, metavar="SESSION", help="new session directory")
