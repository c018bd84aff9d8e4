"""``tiltstream recon metrics``: the paper's quality metrics of a volume series against a reference series.

Per time: RMSE (percent of the reference range) and SSIM inside the Otsu masks, the same two as the
paper measured them (whole volume, reconstruction masked by its Otsu mask), surface/volume of
both, volume redistribution of both (nm^3), alloying degree of both (:mod:`tiltstream.recon.metrics`). The table
goes to ``--out`` as CSV (or to stdout), and a summary (mean/min/max) to stderr. ``--volumes`` may be a
run directory (live or offline, any method): its ``--checkpoint`` state (as ``recon volumes``) is
queried at the reference's times.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pydantic

from tiltstream.command import register_command
from tiltstream.errors import UserError

if TYPE_CHECKING:
    import numpy as np

COLUMNS = ("index", "time_s", "rmse_percent", "rmse_paper", "ssim", "ssim_paper", "surface_to_volume",
           "surface_to_volume_ref", "redistribution_nm3", "redistribution_ref_nm3", "alloying_degree",
           "alloying_degree_ref")
SUMMARISED = ("rmse_percent", "rmse_paper", "ssim", "ssim_paper", "surface_to_volume_error_percent",
              "alloying_degree_error")
TIME_TOLERANCE_S = 1e-3


class ReconMetricsSettings(pydantic.BaseModel):
    """Settings of ``tiltstream recon metrics``."""

    model_config = pydantic.ConfigDict(extra="forbid")
    voxel_size_nm: float | None = pydantic.Field(
        default=None, gt=0, description="voxel edge length, nm, for the redistributed volume (default: the "
        "reference session's pixel size, else 1 = voxel units)")
    checkpoint: Literal["auto", "refit", "best", "last"] = pydantic.Field(
        default="auto", description="with --volumes RUN: which state of the run (as recon volumes): refit "
        "(the best trained on with its held-out frames), best by held-out error, last, or auto (the first "
        "of refit, best, last that the run keeps)")


def _reference_path(path: Path) -> tuple[Path, float | None]:
    """A volume file, or a simulated session directory (its ground_truth.tif and pixel size)."""
    if path.is_dir():
        from tiltstream.acquire.session import GROUND_TRUTH_FILE, read_session

        truth = path / GROUND_TRUTH_FILE
        if not truth.is_file():
            raise UserError(f"{str(path)!r} is a directory without {GROUND_TRUTH_FILE}; give a volume file "
                            "or a simulated session")
        return truth, read_session(path).settings.pixel_size_nm
    return path, None


def _run_volumes(run_dir: Path, times_s: np.ndarray, checkpoint: str) -> np.ndarray:
    """The volumes of run directory ``run_dir``'s ``checkpoint`` state (:data:`tiltstream.recon.run_dir.CHECKPOINTS`)
    at ``times_s`` seconds, (T, Z, Y, X) float32."""
    import numpy as np

    from tiltstream.recon.run_dir import open_reconstructor

    if not np.isfinite(times_s).all():
        raise UserError("the reference has volumes without a time; a run directory can only be compared "
                        "against a reference with times (its _times.csv)")
    reconstructor = open_reconstructor(run_dir, checkpoint=checkpoint)
    return np.stack([reconstructor.volume(float(t)) for t in times_s]).astype(np.float32)


def summarise(rows: list[dict]) -> dict[str, tuple[float, float, float]]:
    """Mean, min and max of RMSE and SSIM (each in-mask and the paper's), surface/volume error (percent) and
    alloying error over time."""
    series: dict[str, list[float]] = {name: [] for name in SUMMARISED}
    for row in rows:
        for name in ("rmse_percent", "rmse_paper", "ssim", "ssim_paper"):
            series[name].append(row[name])
        ref = row["surface_to_volume_ref"]
        if ref and math.isfinite(ref) and math.isfinite(row["surface_to_volume"]):
            series["surface_to_volume_error_percent"].append(100.0 * (row["surface_to_volume"] - ref) / ref)
        if math.isfinite(row["alloying_degree"]) and math.isfinite(row["alloying_degree_ref"]):
            series["alloying_degree_error"].append(row["alloying_degree"] - row["alloying_degree_ref"])
    return {name: (sum(v) / len(v), min(v), max(v)) for name, v in series.items() if v}


def run_metrics(settings: ReconMetricsSettings, args: argparse.Namespace) -> int:
    """Compute and write the metrics table of a volume series against a reference."""
    import numpy as np

    from tiltstream.recon.metrics import metrics_table
    from tiltstream.recon.volume_io import read_volumes

    ref_path, session_voxel_nm = _reference_path(Path(args.reference))
    ref, ref_times = read_volumes(ref_path)
    if Path(args.volumes).is_dir():
        rec, rec_times = _run_volumes(Path(args.volumes), ref_times, settings.checkpoint), ref_times
    else:
        rec, rec_times = read_volumes(args.volumes)
    if rec.shape != ref.shape:
        raise UserError(f"--volumes {args.volumes} holds (T, Z, Y, X) = {rec.shape} but --reference "
                        f"{ref_path} holds {ref.shape}; they must match (same times, same grid)")
    known = np.isfinite(rec_times) & np.isfinite(ref_times)
    if known.any() and np.abs(rec_times[known] - ref_times[known]).max() > TIME_TOLERANCE_S:
        worst = int(np.argmax(np.where(known, np.abs(rec_times - ref_times), -1)))
        print(f"recon metrics: warning: times differ (volume {worst}: {rec_times[worst]:.3f} s vs reference "
              f"{ref_times[worst]:.3f} s); comparing volume by volume", file=sys.stderr)
    times = np.where(np.isfinite(rec_times), rec_times, ref_times)
    voxel_nm = settings.voxel_size_nm or session_voxel_nm or 1.0
    rows = metrics_table(rec, ref, times_s=times, voxel_size_nm=voxel_nm)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if row[k] is None else row[k]) for k in COLUMNS} for row in rows)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(buffer.getvalue())
    else:
        sys.stdout.write(buffer.getvalue())
    print(f"recon metrics: {len(rows)} volumes {rec.shape[1:]} (Z, Y, X), voxel {voxel_nm:g} nm"
          + (f"; table in {args.out}" if args.out else ""), file=sys.stderr)
    for name, (mean, low, high) in summarise(rows).items():
        print(f"  {name:32s} mean {mean:10.4f}  min {low:10.4f}  max {high:10.4f}", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``metrics`` to the ``recon`` group."""
    register_command(
        subparsers, "metrics", settings=ReconMetricsSettings, run=run_metrics, arguments=_arguments, logs=False,
        help="the paper's quality metrics of a volume series against a reference series",
        description="RMSE (percent of the reference range) and SSIM inside Otsu masks, the paper's SSIM "
        "(reconstruction masked by its Otsu mask, whole volume), surface/volume, "
        "volume redistribution (nm^3) and alloying degree, per time, with a mean/min/max summary.")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--volumes", required=True, metavar="FILE|RUN",
                        help="volume series to assess (.tif or .mrc), or a run directory (live or offline) "
                        "queried at the reference's times")
    parser.add_argument("--reference", required=True, metavar="FILE",
                        help="reference series (.tif/.mrc), or a simulated session directory (its ground truth)")
    parser.add_argument("--out", metavar="CSV", help="write the per-time table here (default: stdout)")
