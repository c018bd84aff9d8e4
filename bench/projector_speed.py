"""Projector speed: the voxel-driven scatter/gather path vs ParallelProjector's cached sparse matrix.

Times forward + adjoint of a ``SIZE^3`` volume at ``ANGLES`` tilt angles, both ways, in one process,
and prints medians, the ratio, and the one-off matrix build time. The "scatter" path is what
``ParallelProjector`` did before it cached the matrix: :func:`tiltstream.recon.projector.project` over the
volume's orthoslices repeated per angle, then :func:`tiltstream.recon.projector.backproject` summed over angles.
Then one SIRT window (``--angles`` + 1 frames, 30 iterations: one volume of the moving-window
baseline), the same update run on the scatter path vs :func:`tiltstream.recon.sirt.sirt`.

Usage: ``python bench/projector_speed.py [--size 64] [--angles 30] [--repeats 9] [--device auto]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from tiltstream.recon.projector import ParallelProjector, backproject, project
from tiltstream.recon.device import resolve_device
from tiltstream.recon.sirt import sirt


def _median_s(fn, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="volume edge, voxels")
    parser.add_argument("--angles", type=int, default=30, help="number of tilt angles over +-70 deg")
    parser.add_argument("--repeats", type=int, default=9, help="timed repeats per path")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = parser.parse_args()
    device = resolve_device(args.device)
    n = args.size
    angles_deg = np.linspace(-70.0, 70.0, args.angles)
    angles_rad = torch.as_tensor(np.deg2rad(angles_deg), dtype=torch.float32, device=device)
    volume = torch.rand(n, n, n, generator=torch.Generator().manual_seed(0)).to(device)

    def scatter_path() -> torch.Tensor:
        slices = volume.permute(1, 0, 2)[None].expand(args.angles, n, n, n)
        frames = project(slices, angles_rad, n)  # (angles, ny, n_det)
        return backproject(frames, angles_rad, (n, n)).sum(dim=0)

    operator = ParallelProjector(angles_deg, (n, n, n))
    build_start = time.perf_counter()
    operator.matrices(torch.float32, device)
    build_s = time.perf_counter() - build_start

    def matrix_path() -> torch.Tensor:
        return operator.T(operator(volume))

    with torch.no_grad():
        scatter_path(), matrix_path()  # warm-up
        before = _median_s(scatter_path, args.repeats, device)
        after = _median_s(matrix_path, args.repeats, device)
    print(f"device {device}, torch threads {torch.get_num_threads()}, volume {n}^3, {args.angles} angles, "
          f"forward+adjoint, median of {args.repeats}:")
    print(f"  scatter/gather (before): {before * 1e3:8.1f} ms")
    print(f"  cached CSR matrix (after): {after * 1e3:6.1f} ms   speed-up x{before / after:.1f}")
    print(f"  one-off matrix build:    {build_s * 1e3:8.1f} ms")

    window_deg = np.linspace(-70.0, 70.0, args.angles + 1)
    window_rad = torch.as_tensor(np.deg2rad(window_deg), dtype=torch.float32, device=device)
    frames = ParallelProjector(window_deg, (n, n, n))(volume)

    def scatter_fwd(x: torch.Tensor) -> torch.Tensor:
        return project(x.permute(1, 0, 2)[None].expand(len(window_deg), n, n, n), window_rad, n)

    def scatter_adj(y: torch.Tensor) -> torch.Tensor:
        return backproject(y, window_rad, (n, n)).sum(dim=0).permute(1, 0, 2)

    def scatter_sirt() -> torch.Tensor:
        row = scatter_fwd(torch.ones_like(volume))
        col = scatter_adj(torch.ones_like(frames))
        r = torch.where(row > 1e-6, 1.0 / row.clamp_min(1e-6), torch.zeros_like(row))
        c = torch.where(col > 1e-6, 1.0 / col.clamp_min(1e-6), torch.zeros_like(col))
        x = torch.zeros_like(volume)
        for _ in range(30):
            x = x + c * scatter_adj(r * (frames - scatter_fwd(x)))
        return x

    frames_np = frames.cpu().numpy()
    repeats = max(1, args.repeats // 3)
    with torch.no_grad():
        before = _median_s(scatter_sirt, repeats, device)
    after = _median_s(lambda: sirt(frames_np, window_deg, (n, n, n), 30, device=device), repeats, device)
    print(f"one SIRT window ({len(window_deg)} frames, 30 iterations, incl. operator set-up), median of {repeats}:")
    print(f"  scatter/gather (before): {before:8.2f} s")
    print(f"  tiltstream.recon.sirt.sirt (after): {after:8.2f} s   speed-up x{before / after:.1f}")


if __name__ == "__main__":
    main()
