"""Where a reconstruction's alloying error (paper Eq. 10) comes from, on a synthetic session.

Eq. 10 as the paper measures it (``tiltstream.recon.metrics.alloying_against_reference``) compares each step's
intensity spread with the ground truth's first, so the error at a step is the core-shell contrast the
volume of that step lost or invented. This prints, for one session with ground truth:

1. the error that known degradations of the ground truth itself cost (averaging in time, Gaussian blur
   in space), with the fraction of the truth's spread each keeps at a few steps;
2. for reconstructed volumes (``--volumes``, e.g. from ``tiltstream recon volumes``): their error, the
   fraction of the truth's spread and the SSIM at the same steps, and their error by the reading used
   until 2026-12-05 (each step against the reconstruction's own first volume);
3. the reprojection residual of each of those frames (RMS over the frame, data units) for the
   reconstruction and for the ground truth (the noise floor): a frame the network under-fits has a
   residual above the floor.

Usage::

    python bench/alloying_diagnosis.py --session /tmp/tiltstream_bench/nanorod_64_100_s0 \\
        --volumes rod64.tif

Results: docs/benchmarks/quality.md, "Where the nanorod's alloying error comes from".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tiltstream.acquire.session import read_ground_truth, read_session  # noqa: E402
from tiltstream.recon import metrics  # noqa: E402


def points_after_step_4(got: np.ndarray, ref: np.ndarray) -> float:
    """Mean |alloying degree - the truth's| after step 4, percentage points (as bench/recon_quality.py)."""
    return 100.0 * float(np.nanmean(np.abs(got - ref)[4:]))


def error_points(rec: np.ndarray, truth: np.ndarray) -> float:
    """:func:`points_after_step_4` of a series against its ground truth."""
    ref, got = metrics.alloying_against_reference(rec, truth)
    return points_after_step_4(got, ref)


def spreads(series: np.ndarray, mask: np.ndarray, steps: list[int]) -> np.ndarray:
    """Intensity spread inside ``mask`` of the volumes at ``steps``."""
    return np.array([metrics.intensity_spread(series[i], mask) for i in steps])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--session", type=Path, required=True, help="synthetic session with ground truth")
    parser.add_argument("--volumes", type=Path, help="reconstructed volumes (T, Z, Y, X) .tif, one per frame")
    parser.add_argument("--steps", default="0,1,2,4,8,16,32,64,-1",
                        help="time steps to report, comma-separated (negative: from the end)")
    args = parser.parse_args(argv)

    from scipy.ndimage import gaussian_filter, uniform_filter1d

    truth, _ = read_ground_truth(args.session)
    truth = truth.astype(np.float64)
    count = len(truth)
    steps = [int(s) % count for s in args.steps.split(",")]
    mask = metrics.particle_mask(truth[0])
    truth_spread = spreads(truth, mask, steps)
    print(f"steps {steps}")
    print("1. the ground truth, degraded")
    for frames in (3, 5, 9, 15):
        blurred = uniform_filter1d(truth, frames, axis=0, mode="nearest")
        print(f"  mean over {frames:2d} frames in time: {error_points(blurred, truth):5.1f} points")
    middle = count // 2
    for sigma in (0.5, 0.75, 1.0, 1.5):
        blurred = np.stack([gaussian_filter(v, sigma) for v in truth])
        kept = spreads(blurred, mask, steps) / truth_spread
        print(f"  Gaussian blur {sigma:4.2f} voxel: {error_points(blurred, truth):5.1f} points; SSIM at step "
              f"{middle} {metrics.ssim(blurred[middle], truth[middle]):.3f}; spread kept {np.round(kept, 3).tolist()}")
    if args.volumes is None:
        return 0

    import tifffile

    from tiltstream.recon.projector import ParallelProjector

    rec = tifffile.imread(args.volumes).astype(np.float64)
    if rec.shape != truth.shape:
        print(f"alloying_diagnosis: --volumes has shape {rec.shape}; the session's ground truth is {truth.shape}",
              file=sys.stderr)
        return 2
    ref, got = metrics.alloying_against_reference(rec, truth)
    print(f"2. the reconstruction {args.volumes.name}: {points_after_step_4(got, ref):.1f} points")
    kept = spreads(rec, mask, steps) / truth_spread
    print(f"  spread kept {np.round(kept, 3).tolist()}")
    print(f"  SSIM        {[round(metrics.ssim(rec[i], truth[i]), 3) for i in steps]}")
    own_start = got - got[0]  # sigma_0 from the reconstruction's own first volume
    print(f"  against its own first volume (the reading until 2026-12-05): "
          f"{points_after_step_4(own_start, ref):.1f} points")
    session = read_session(args.session)
    frames = session.load_frames().astype(np.float64)

    def residual(volume: np.ndarray, i: int) -> float:
        row = ParallelProjector([session.angles_deg[i]], volume.shape)(volume)[0]
        return float(np.sqrt(np.mean((row - frames[i]) ** 2)))

    print("3. reprojection residual per frame (RMS, data units)")
    print(f"  reconstruction {[round(residual(rec[i], i), 3) for i in steps]}")
    print(f"  ground truth   {[round(residual(truth[i], i), 3) for i in steps]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
