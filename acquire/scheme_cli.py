"""``tiltstream scheme``: print or write a tilt plan (targets and backlash moves) without touching a microscope."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Literal

import pydantic

from tiltstream.acquire.backlash import HolderLimits, check_backlash_config, plan_moves
from tiltstream.command import register_command
from tiltstream.config import describe_validation_error
from tiltstream.errors import UserError
from tiltstream.acquire.plan_summary import AcquisitionEstimate, summarize_plan, with_tracking
from tiltstream.acquire.scheme import SchemeKind, TiltScheme, iter_targets, scheme_angle_deg
from tiltstream.acquire.scheme_formats import moves_csv, moves_json, rawtlt, serialem_script
from tiltstream.acquire.tilt_range import MaxTiltDeg, MinTiltDeg, TiltRange

OutputFormat = Literal["csv", "json", "rawtlt", "serialem"]


class SchemeSettings(AcquisitionEstimate, TiltRange):
    """Settings of ``tiltstream scheme`` (defaults also in ``config/scheme.toml``)."""

    kind: SchemeKind = pydantic.Field(
        "grs", description="tilt scheme: grs (golden ratio, paper Eq. 1), incremental, dose-symmetric")
    min_deg: MinTiltDeg
    max_deg: MaxTiltDeg
    count: int | None = pydantic.Field(
        None, ge=1, description="number of frames to plan (required: an endless scheme cannot be printed)")
    start_index: int = pydantic.Field(
        0, ge=0, description="first frame index to plan, to continue a session (frame number, from 0)")
    step_deg: float = pydantic.Field(
        3.0, gt=0, allow_inf_nan=False,
        description="angular step of dose-symmetric (deg); incremental takes its step from the count")
    backlash_deg: float = pydantic.Field(
        2.0, ge=0, allow_inf_nan=False,
        description="overshoot below a target approached from above (deg); 0 turns the correction off")
    start_deg: float = pydantic.Field(
        0.0, allow_inf_nan=False, description="stage alpha before the first move (deg)")
    limit_min_deg: float = pydantic.Field(-80.0, allow_inf_nan=False, description="lowest holder alpha (deg)")
    limit_max_deg: float = pydantic.Field(80.0, allow_inf_nan=False, description="highest holder alpha (deg)")
    format: OutputFormat = pydantic.Field(
        "csv", description="output: csv (index,move,angle_deg per stage move), json (moves and summary), "
        "rawtlt (IMOD, one target angle in deg per line), serialem (SerialEM script)")
    out: Path | None = pydantic.Field(None, description="write to this file (overwritten) instead of stdout")
    tracking: Literal["manual", "auto"] = pydantic.Field(
        "manual", description="manual: --tracking-s and --tracking-dose-e-per-A2 per frame (the paper's 28 s, "
        "~20 e/A^2); auto: tiltstream's measured tracking and focus overhead per frame and no tracking dose "
        "(replaces those two)")

    @pydantic.model_validator(mode="after")
    def _check_ranges(self) -> SchemeSettings:
        if not self.limit_min_deg < self.limit_max_deg:
            raise ValueError(f"limit_min_deg {self.limit_min_deg} deg must be below "
                             f"limit_max_deg {self.limit_max_deg} deg")
        return self


MAX_PLAN_FRAMES = 100_000  # a plan this long already spans months; longer ones are refused at once
SAMPLE_FRAMES = 1_000  # frames planned to say what a refused count would take


def _duration(seconds: float) -> str:
    """A long duration in the largest fitting unit: ``3.2 years``, ``12.5 days``, ``4.0 h``."""
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("h", 3600)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds / 60:.1f} min"


OPTION_NAMES = {"min_deg": "--min", "max_deg": "--max", "backlash_deg": "--backlash", "step_deg": "--step",
                "limit_min_deg": "--limit-min", "limit_max_deg": "--limit-max"}
ESTIMATE_FIELDS = tuple(AcquisitionEstimate.model_fields)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``tiltstream scheme``."""
    plan_fields = tuple(name for name in SchemeSettings.model_fields if name not in ESTIMATE_FIELDS)
    register_command(
        subparsers, "scheme", settings=SchemeSettings, run=run, config_name="scheme", rename=OPTION_NAMES,
        groups={"plan": plan_fields, "timing and dose estimate (json summary)": ESTIMATE_FIELDS}, logs=False,
        help="print a tilt plan (targets and backlash moves, time and dose) without a microscope",
        description="Plan a tilt series without connecting to a microscope: the target angles of a GRS, "
        "incremental or dose-symmetric scheme, the backlash moves that approach every target from below, "
        "and (json) the estimated travel, time, dose and angular coverage per frame. "
        "Settings: config/scheme.toml < --config FILE < TILTSTREAM_<FIELD> environment < options.")


def _build(settings: SchemeSettings) -> tuple[TiltScheme, HolderLimits]:
    if settings.count is None:
        raise UserError("--count is missing: scheme mode prints a finite plan; give the number of frames, "
                        "e.g. --count 100")
    try:
        scheme = TiltScheme(kind=settings.kind, min_deg=settings.min_deg, max_deg=settings.max_deg,
                            count=settings.count, start_index=settings.start_index, step_deg=settings.step_deg)
        limits = HolderLimits(min_deg=settings.limit_min_deg, max_deg=settings.limit_max_deg)
    except pydantic.ValidationError as exc:
        raise UserError(describe_validation_error(exc)) from None
    check_backlash_config(scheme, settings.backlash_deg, limits)
    if not limits.contains(settings.start_deg):
        raise UserError(f"start {settings.start_deg:g} deg is outside the holder limits {limits.describe()}")
    return scheme, limits


def _refuse_absurd_count(settings: SchemeSettings) -> None:
    """One line saying what a count beyond :data:`MAX_PLAN_FRAMES` would take (from a short sample plan)."""
    frames = int(settings.count or 0) - settings.start_index
    if frames <= MAX_PLAN_FRAMES:
        return
    sample = settings.model_copy(update={"count": settings.start_index + SAMPLE_FRAMES})
    scheme, limits = _build(sample)
    moves = list(plan_moves(iter_targets(scheme), settings.start_deg, settings.backlash_deg, limits))
    estimate = with_tracking(AcquisitionEstimate.model_validate(settings.model_dump(include=set(ESTIMATE_FIELDS))),
                             settings.tracking)
    per_frame_s = summarize_plan(moves, settings.start_deg, scheme.min_deg, scheme.max_deg,
                                 estimate).total_time_s / SAMPLE_FRAMES
    raise UserError(f"--count {settings.count} is too many to plan: at about {per_frame_s:.1f} s per frame it would "
                    f"take {_duration(per_frame_s * frames)} at the microscope; allowed: up to {MAX_PLAN_FRAMES} "
                    "frames per plan")


def render_plan(settings: SchemeSettings) -> tuple[str, str]:
    """The plan as text in ``settings.format``, and a one-line summary; raises UserError before any output."""
    _refuse_absurd_count(settings)
    scheme, limits = _build(settings)
    moves = list(plan_moves(iter_targets(scheme), settings.start_deg, settings.backlash_deg, limits))
    prior_deg = [scheme_angle_deg(scheme, index) for index in range(scheme.start_index)]
    estimate = with_tracking(AcquisitionEstimate.model_validate(settings.model_dump(include=set(ESTIMATE_FIELDS))),
                             settings.tracking)
    summary = summarize_plan(moves, settings.start_deg, scheme.min_deg, scheme.max_deg, estimate, prior_deg)
    described = (f"{scheme.kind} scheme, frames {scheme.start_index}..{scheme.count - 1} in "
                 f"[{scheme.min_deg:g}, {scheme.max_deg:g}] deg, backlash {settings.backlash_deg:g} deg, "
                 f"holder limits {limits.describe()}, stage starts at {settings.start_deg:g} deg")
    if settings.format == "csv":
        text = moves_csv(moves)
    elif settings.format == "json":
        text = moves_json(moves, summary, settings.model_dump(mode="json"))
    elif settings.format == "rawtlt":
        text = rawtlt(moves)
    else:
        text = serialem_script(moves, header=[f"tiltstream scheme: {described}"])
    gap = summary.frames[-1].coverage_gap_deg if summary.frames else scheme.max_deg - scheme.min_deg
    line = (f"{len(summary.frames)} frames, {summary.n_moves} moves, travel {summary.total_travel_deg:.1f} deg, "
            f"est. {summary.total_time_s / 60:.1f} min, dose {summary.total_dose_e_per_A2:.0f} e/A^2, "
            f"largest gap {gap:.2f} deg")
    return text, line


def run(settings: SchemeSettings, args: argparse.Namespace) -> int:
    """Build the plan, write it to ``--out`` or stdout, and a summary line to stderr."""
    text, line = render_plan(settings)
    if settings.out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        try:
            settings.out.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write --out {str(settings.out)!r}: {exc.strerror}") from None
    print(f"tiltstream scheme: {line}", file=sys.stderr)
    return 0
