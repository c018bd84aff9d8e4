"""``tiltstream acquire``: drive a continuous tilt series through the temscript bridge, record it, stream it.

Ctrl-C once: the run ends after the current frame; twice: at once. Either way the beam is blanked, the
session stays consistent (``--resume`` continues it) and the exit status is 130. ``--resume`` on a
session that does not exist yet, or was killed before its first frame, starts it (a restart script
cannot know how far a crash got).

``--track previous|model`` and ``--focus tilt-model|measure`` correct each frame before its exposure (image
shift, stage x/y, probe defocus; within the configured limits, checked before sending) from the
recorded frames themselves: no extra exposure (``--focus measure`` adds a 5-scan sharpness sweep every
``--focus-every`` frames, which does cost dose).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

from tiltstream.acquire.acquire_settings import AcquireSettings
from tiltstream.command import register_command
from tiltstream.errors import MicroscopeFault, UserError
from tiltstream.progress import ProgressLine
from tiltstream.acquire.session import FRAMES_DIR, RECORDS_FILE, SETTINGS_FILE

log = logging.getLogger(__name__)

EXIT_INTERRUPTED = 130


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``tiltstream acquire``."""
    register_command(
        subparsers, "acquire", settings=AcquireSettings, run=run, config_name="microscope", arguments=_arguments,
        rename={"min_deg": "--min", "max_deg": "--max"}, logs=False,
        help="acquire a continuous GRS tilt series through the temscript bridge",
        description="Drive a continuous tilt series (GRS by default) through a temscript bridge, with "
        "backlash correction, record every frame crash-safely in a session directory and optionally "
        "publish it over ZeroMQ. Ctrl-C ends after the current frame (twice: at once); --resume continues.")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--session", required=True, type=Path, help="session directory to create (or resume)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the session in --session at its next frame index (its scheme is kept); "
                        "a session that does not exist yet is started")
    parser.add_argument("--extend", action="store_true",
                        help="with --resume: change the session's frame count to --count (without it, a --count "
                        "that differs from the session's is refused)")
    parser.add_argument("--temperature-log", type=Path, default=None,
                        help="CSV written by the heating-holder program (time and temperature in Celsius "
                        "columns); read at each frame")


def _format_s(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress_text(progress: Any) -> str:
    """The progress line: frame, angle, elapsed, ETA, dose of the frame and in total, tracking shift."""
    record = progress.record
    total = progress.total
    count = f"{progress.done}/{total}" if total is not None else f"{progress.done}"
    eta = "-" if total is None else _format_s(progress.elapsed_s / progress.done * (total - progress.done))
    text = (f"frame {record.index} ({count})  angle {record.angle_deg:+8.3f} deg  "
            f"elapsed {_format_s(progress.elapsed_s)}  ETA {eta}  "
            f"dose {record.dose_e_per_A2:.3g} e/A^2 (total {progress.cumulative_dose_e_per_A2:.4g})")
    tracking = record.tracking
    if tracking is not None:
        text += ("  tracking LOST" if tracking.shift_px is None
                 else f"  shift ({tracking.shift_px[0]:+.1f}, {tracking.shift_px[1]:+.1f}) px")
    return text


def _session_to_start(path: Path) -> bool:
    """For --resume: True when ``path`` holds no session yet (missing, empty, or only an empty frames folder
    left by a crash during creation), which is then cleared for a fresh start."""
    if (path / SETTINGS_FILE).is_file():
        return False
    if not path.exists():
        return True
    frames = path / FRAMES_DIR
    records = path / RECORDS_FILE
    leftovers = [p for p in path.iterdir() if p not in (frames, records)]
    if leftovers or (frames.exists() and any(frames.iterdir())) or (records.exists() and records.stat().st_size):
        return False  # something else is there: SessionWriter.resume says what
    if records.exists():
        records.unlink()
    if frames.exists():
        frames.rmdir()
    return True


def _tilt_axis_record(settings: AcquireSettings) -> dict[str, Any]:
    """``session.json``'s ``tilt_axis_deg`` and where it came from, when the settings give the axis."""
    if settings.tilt_axis_deg is None:
        return {}
    return {"tilt_axis_deg": settings.tilt_axis_deg,
            "tilt_axis_from": "tiltstream acquire --tilt-axis-deg (the detector's calibration)"}


def run(settings: AcquireSettings, args: argparse.Namespace) -> int:
    """Run one acquisition; returns 0 when it ended normally, 130 when interrupted."""
    from tiltstream.acquire.bridge import BridgeMicroscope, RetryPolicy
    from tiltstream.acquire.calibration import read_calibration
    from tiltstream.acquire.executor import AcquisitionControl, Executor, ExecutorConfig
    from tiltstream.acquire.session import SessionSettings, SessionWriter
    from tiltstream.acquire.temperature import TemperatureLog

    scope = BridgeMicroscope(settings.bridge, timeout_s=settings.bridge_timeout_s,
                             retry=RetryPolicy(attempts=settings.retries, backoff_s=settings.retry_backoff_s),
                             speed=settings.stage_speed)
    opened = _open_session(settings, args)
    if opened is None:
        return 0
    writer, scheme = opened
    kind, params = _set_detector_up(scope, settings)
    calibration = read_calibration(scope, settings.detector, settings.pixel_size_nm * settings.binning,
                                   settings.beam_current_pA)
    if writer is None:
        writer = SessionWriter.create(args.session, SessionSettings(
            scheme=scheme.model_dump(),
            microscope={"bridge": settings.bridge, "backlash_deg": settings.backlash_deg,
                        "angle_tolerance_deg": settings.angle_tolerance_deg, **calibration.record()},
            detector={"name": settings.detector, "kind": kind, "image_size": settings.image_size,
                      "binning": settings.binning, "dwell_time_s": params.dwell_time_s,
                      "exposure_s": params.exposure_s},
            pixel_size_nm=calibration.pixel_size_nm, **_tilt_axis_record(settings)))
    config = ExecutorConfig(detector=settings.detector, params=params, beam_current_pA=calibration.beam_current_pA,
                            pixel_size_nm=calibration.pixel_size_nm, backlash_deg=settings.backlash_deg,
                            angle_tolerance_deg=settings.angle_tolerance_deg,
                            stage_timeout_s=settings.stage_timeout_s, speed=settings.stage_speed)
    publisher = None
    if settings.publish is not None:
        from tiltstream.acquire.publisher import FramePublisher, load_server_keys

        curve = load_server_keys(settings.curve_secret_key) if settings.curve_secret_key else None
        publisher = FramePublisher(settings.publish, writer.path, resend_endpoint=settings.resend, curve=curve)
    tracking, model_link = _tracking(settings, calibration.pixel_size_nm)
    if tracking is not None and writer.records:
        from tiltstream.acquire.session import read_session

        seeded = tracking.seed(writer.records, read_session(writer.path).load_frame)
        if seeded:
            print(f"tiltstream acquire: tracking continues from {seeded} recorded frames", file=sys.stderr)
    control = AcquisitionControl()
    interrupted = _install_sigint(control)
    line = ProgressLine()
    executor = Executor(scope, scheme, writer, config, publisher=publisher,
                        temperature=TemperatureLog(args.temperature_log) if args.temperature_log else None,
                        control=control, progress=lambda progress: line.update(progress_text(progress)),
                        tracking=tracking, limits=_limits(settings), pause_on_lost=settings.pause_on_lost)
    try:
        return _execute(executor, args, line, interrupted)
    finally:
        if publisher is not None:
            publisher.close()
        if model_link is not None:
            model_link.close()
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _open_session(settings: AcquireSettings, args: argparse.Namespace) -> tuple[Any, Any] | None:
    """The session writer to resume (None for a new session) and the scheme to run; None when a resumed
    session already has all its frames."""
    from tiltstream.acquire.session import SessionWriter

    if args.resume and _session_to_start(args.session):
        print(f"tiltstream acquire: no session in {args.session} yet; starting it", file=sys.stderr)
    elif args.resume:
        writer = SessionWriter.resume(args.session)
        stored = dict(writer.settings.scheme)
        if settings.count is not None and settings.count != stored.get("count"):
            if not args.extend:
                raise UserError(f"--count {settings.count} differs from session {str(args.session)!r}'s count "
                                f"{stored.get('count')}; leave --count out to continue it, or add --extend to "
                                "change its count")
            stored["count"] = settings.count
        stored["start_index"] = writer.next_index
        scheme = _scheme(stored)
        if scheme.end_index is not None and writer.next_index >= scheme.end_index:
            print(f"tiltstream acquire: session {args.session} already has {writer.next_index} frames "
                  f"(count {scheme.count}); nothing to do", file=sys.stderr)
            return None
        return writer, scheme
    return None, _scheme({"kind": settings.scheme, "min_deg": settings.min_deg, "max_deg": settings.max_deg,
                          "count": settings.count})


def _set_detector_up(scope: Any, settings: AcquireSettings) -> tuple[str, Any]:
    """Check the detector is offered and send its acquisition parameters; returns its kind and them."""
    from tiltstream.acquire.microscope import AcquisitionParams

    detectors = scope.detectors()
    if settings.detector not in detectors:
        raise UserError(f"detector {settings.detector!r} is not offered by the microscope at {settings.bridge}; "
                        f"available: {', '.join(sorted(detectors)) or 'none'}")
    kind = detectors[settings.detector].kind
    params = AcquisitionParams(image_size=settings.image_size, binning=settings.binning,
                               dwell_time_s=settings.dwell_time_s if kind == "stem" else None,
                               exposure_s=settings.exposure_s if kind == "camera" else None)
    scope.set_acquisition_params(settings.detector, params)  # the reported pixel size depends on them
    return kind, params


def _execute(executor: Any, args: argparse.Namespace, line: ProgressLine, interrupted: list[bool]) -> int:
    """Run the executor and say how it ended: the summary, or the beam's state and the resume command."""
    writer, tracking = executor.writer, executor.tracking
    started = time.monotonic()
    print(f"tiltstream acquire: session {writer.path}, starting at frame {writer.next_index}: checking the plan "
          "against the holder, moving to the first angle", file=sys.stderr)  # a first line before the first frame
    try:
        summary = executor.run()
    except KeyboardInterrupt:
        line.end()
        print(f"tiltstream acquire: interrupted; {_beam_state(executor.beam_blanked)}; session {writer.path} has "
              f"{len(writer.records)} frames; continue with: {_resume_command(args)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MicroscopeFault as exc:
        line.end()
        raise MicroscopeFault(f"{exc}; {_beam_state(executor.beam_blanked)}; session {writer.path} has "
                              f"{len(writer.records)} frames; continue with: {_resume_command(args)}") from None
    except UserError:
        line.end()
        raise
    line.end()
    print(f"tiltstream acquire: {summary.ended}: {summary.frames} frames in {_format_s(time.monotonic() - started)}; "
          f"session {writer.path} has {len(writer.records)} frames (next index {summary.next_index}); "
          f"total dose {summary.cumulative_dose_e_per_A2:.4g} e/A^2"
          + (f"; {tracking.model.summary()}" if tracking is not None and tracking.model is not None else "") + (
              f"; {_beam_state(executor.beam_blanked)}; continue with: {_resume_command(args)}"
              if summary.ended != "completed" else ""), file=sys.stderr)
    return EXIT_INTERRUPTED if interrupted else 0


def _beam_state(blanked: bool | None) -> str:
    """What became of the beam on the way out of a failed run, in words."""
    if blanked:
        return "the beam was blanked"
    return "THE BEAM COULD NOT BE BLANKED: blank it at the microscope"


def _resume_command(args: argparse.Namespace) -> str:
    """The exact command that continues this session: the one that ran, with ``--resume``."""
    argv = list(getattr(args, "argv", None) or ["acquire", "--session", str(args.session)])
    return "tiltstream " + shlex.join(argv if "--resume" in argv else [*argv, "--resume"])


def _tracking(settings: AcquireSettings, pixel_size_nm: float) -> tuple[Any, Any]:
    """The run's tracking loop and model link (None, None with tracking and focus off); frame pixels of
    ``pixel_size_nm``."""
    if settings.track == "off" and settings.focus == "off":
        return None, None
    from tiltstream.acquire.corrections import TrackingLoop

    model_link = None
    if settings.track == "model" and settings.model_endpoint is not None:
        from tiltstream.acquire.model_link import ModelLink

        model_link = ModelLink(settings.model_endpoint, timeout_s=settings.model_timeout_s)
    loop = TrackingLoop(settings.track, settings.focus, pixel_size_nm,
                        lost_quality=settings.lost_quality, model=model_link, sweep_every=settings.focus_every,
                        sweep_step_m=settings.focus_step_nm * 1e-9,
                        centre=settings.track != "off" if settings.centre is None else settings.centre)
    return loop, model_link


def _limits(settings: AcquireSettings) -> Any:
    from tiltstream.acquire.corrections import CorrectionLimits

    return CorrectionLimits(image_shift_m=settings.image_shift_limit_nm * 1e-9,
                            stage_xy_travel_m=settings.stage_xy_travel_nm * 1e-9,
                            defocus_m=settings.defocus_limit_nm * 1e-9)


def _scheme(values: dict[str, Any]) -> Any:
    import pydantic

    from tiltstream.config import describe_validation_error
    from tiltstream.acquire.scheme import TiltScheme

    try:
        return TiltScheme.model_validate(values)
    except pydantic.ValidationError as exc:
        raise UserError(describe_validation_error(exc)) from None


def _install_sigint(control: Any) -> list[bool]:
    """First Ctrl-C: stop after the current frame; second: KeyboardInterrupt now. Returns a flag list."""
    interrupted: list[bool] = []

    def handler(signum: int, frame: Any) -> None:
        if interrupted:
            raise KeyboardInterrupt
        interrupted.append(True)
        control.stop()
        print("\ntiltstream acquire: stopping after the current frame (Ctrl-C again to stop now)", file=sys.stderr)

    signal.signal(signal.SIGINT, handler)
    return interrupted
