"""Benchmark: DIP-STER quality ablations at a fixed step budget, against non-negative moving-window SIRT.

Every variant is the ``fast`` preset (or the one named by ``--base``) with a few settings changed, or a
trainer-side change of the loss or of the intensity normalisation; all variants train on the same
seeded synthetic session (Poisson noise at 40 e/A^2) with the same seed for the same number of steps
(budgets in steps, not seconds, so results are comparable on a shared CPU). After training, every
volume is compared with the ground truth (``tiltstream.recon.metrics.metrics_table``): SSIM and RMSE means, the
alloying error after step 4 (nanorod, nanocube; percentage points), the surface/volume error
(nanoshell, percent), and the fraction of time steps whose SSIM is above non-negative SIRT's (window
30, 30 iterations). Results are cached as JSON lines in ``--results`` (one per variant, phantom, size,
count, steps and seed), so a table can be rebuilt or extended without re-training.

Example::

    OMP_NUM_THREADS=1 python bench/ablations.py --phantoms nanorod,nanoshell --size 32 --count 60 \\
        --steps 3000 --variants base,angle,min32
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tiltstream.acquire.session import read_ground_truth, read_session  # noqa: E402
from tiltstream.recon import metrics  # noqa: E402

# name -> (DipsterConfig overrides, trainer options); trainer options: data_scale
# ("mean": the first frame's mean instead of its robust maximum)
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "base": ({}, {}),
    "angle": ({"use_angle": True}, {}),
    "uncentred": ({"centre_coords": False}, {}),
    "min32": ({"cnn_min_channels": 32}, {}),
    "min64": ({"cnn_min_channels": 64}, {}),
    "flat64": ({"channel_halving": False}, {}),
    "mapnet512": ({"mapnet_widths": (512, 512)}, {}),
    "l2": ({"loss": "l2"}, {}),
    "l1": ({"loss": "l1"}, {}),
    "scale_mean": ({}, {"data_scale": "mean"}),
    "lr3e-4": ({"lr": 3e-4}, {}),
    "lr2e-3": ({"lr": 2e-3}, {}),
    "lr3e-3": ({"lr": 3e-3}, {}),
    "lr_decay_fast": ({"lr_gamma": 0.9, "lr_step_steps": 200}, {}),
    "batch8": ({"batch_frames": 8}, {}),
    "rows1": ({"rows_per_frame": 1}, {}),
    "rows4": ({"rows_per_frame": 4}, {}),
    "ybands4": ({"y_bands": 4}, {}),
    "tbands1": ({"t_bands": 1}, {}),
    "ema0.99": ({"ema_decay": 0.99}, {}),
    "ema0.995": ({"ema_decay": 0.995}, {}),
    "ema0.999": ({"ema_decay": 0.999}, {}),
    "tbands2": ({"t_bands": 2}, {}),
    "tbands4": ({"t_bands": 4}, {}),
    "yt_bands": ({"y_bands": 4, "t_bands": 2}, {}),
    "base8": ({"base_size": 8, "latent_cell_voxels": 0}, {}),
    "rows4_decay": ({"rows_per_frame": 4, "lr_gamma": 0.9, "lr_step_steps": 200}, {}),
    "rows4_l1": ({"rows_per_frame": 4, "loss": "l1"}, {}),
    "rows4_decay_l1": ({"rows_per_frame": 4, "lr_gamma": 0.9, "lr_step_steps": 200, "loss": "l1"}, {}),
    "beta2_0.999": ({"adam_beta2": 0.999}, {}),
    "l1_beta2_0.99": ({"loss": "l1", "adam_beta2": 0.99}, {}),
    "l1_beta2_0.999": ({"loss": "l1", "adam_beta2": 0.999}, {}),
    "ybands6": ({"y_bands": 6}, {}),
    "ybands8": ({"y_bands": 8}, {}),
    "ybands4_rows4": ({"y_bands": 4, "rows_per_frame": 4}, {}),
    "ybands4_rows4_decay": ({"y_bands": 4, "rows_per_frame": 4, "lr_gamma": 0.9, "lr_step_steps": 200}, {}),
    # for --base kplanes: the factorised field's settings one at a time
    "features32": ({"plane_features": 32}, {}),
    "scales124": ({"plane_scales": (1, 2, 4)}, {}),
    "scales1": ({"plane_scales": (1,)}, {}),
    "smooth1e-4": ({"plane_smooth_weight": 1e-4}, {}),
    "smooth1e-2": ({"plane_smooth_weight": 1e-2}, {}),
    "smooth3e-4": ({"plane_smooth_weight": 3e-4}, {}),
    "smooth1e-3": ({"plane_smooth_weight": 1e-3}, {}),
    "tcells12": ({"plane_time_cells": 12}, {}),
    "tcells50": ({"plane_time_cells": 50}, {}),
    "tsmooth1e-3": ({"plane_time_smooth_weight": 1e-3}, {}),
    "tsmooth1e-1": ({"plane_time_smooth_weight": 1e-1}, {}),
    "lr3e-2": ({"lr": 3e-2}, {}),
    "rows8": ({"rows_per_frame": 8}, {}),
    "sm1e-4_rows8": ({"plane_smooth_weight": 1e-4, "rows_per_frame": 8}, {}),
    "sm3e-4_rows8": ({"plane_smooth_weight": 3e-4, "rows_per_frame": 8}, {}),  # the kplanes preset
    "s1_sm1e-4": ({"plane_scales": (1,), "plane_smooth_weight": 1e-4}, {}),
    "s1_sm1e-4_l1": ({"plane_scales": (1,), "plane_smooth_weight": 1e-4, "loss": "l1"}, {}),
    "s1_sm1e-4_rows8": ({"plane_scales": (1,), "plane_smooth_weight": 1e-4, "rows_per_frame": 8}, {}),
    "s1_sm1e-4_l1_rows8": ({"plane_scales": (1,), "plane_smooth_weight": 1e-4, "loss": "l1",
                            "rows_per_frame": 8}, {}),
    "s1_sm1e-4_l1_rows8_ema": ({"plane_scales": (1,), "plane_smooth_weight": 1e-4, "loss": "l1",
                                "rows_per_frame": 8, "ema_decay": 0.99}, {}),
    "s12_sm1e-4_l1_rows8": ({"plane_smooth_weight": 1e-4, "loss": "l1", "rows_per_frame": 8}, {}),
    # for --base paper: the fast preset's fixes one at a time
    "centred": ({"centre_coords": True}, {}),
    "no_angle": ({"use_angle": False}, {}),
    "lr1e-3": ({"lr": 1e-3}, {}),
    "centred_lr1e-3": ({"centre_coords": True, "lr": 1e-3}, {}),
    # the CNN's upsampling between stages (fast: nearest; paper: bilinear)
    "nearest": ({"upsample": "nearest"}, {}),
    "bilinear": ({"upsample": "bilinear"}, {}),
    # for --base fast_1128: the data term on (Hann-windowed) ramp-filtered rows, an 8x8 latent map,
    # both (today's fast)
    "ramp": ({"residual_filter": "ramp", "ramp_window": "hann"}, {}),
    "ramp_base8": ({"residual_filter": "ramp", "ramp_window": "hann", "base_size": 8, "latent_cell_voxels": 0}, {}),
}


def base_config(base: str):
    """The preset ``base`` (``fast``, ``paper``, ``kplanes``), or ``fast_y0``: ``fast`` without Fourier
    bands (the ``fast`` preset before issue 9's ablations, the base of the table in
    docs/benchmarks/ablations.md), or ``fast_1128``: ``fast`` as of 2026-11-28 (no ramp filter, a 4x4
    latent map), or ``kplanes_v0``: ``kplanes`` as first measured (4 rows per frame, plane smoothness
    1e-3)."""
    from tiltstream.recon.presets import preset

    if base in ("fast_1128", "fast_y0"):
        # fast's later changes undone: the ramp filter (and its data window), the map of 4-voxel cells
        # (base_size is not used while latent_cell_voxels is set) and its 32 channels
        fast_1128 = preset("fast").model_copy(update={"residual_filter": "none", "ramp_window": "hann",
                                                      "latent_cell_voxels": 0, "base_size": 4, "cnn_channels": 64})
        return fast_1128 if base == "fast_1128" else fast_1128.model_copy(update={"y_bands": 0})
    if base == "kplanes_v0":
        return preset("kplanes").model_copy(update={"rows_per_frame": 4, "plane_smooth_weight": 1e-3})
    return preset(base)


def session_for(work: Path, phantom: str, size: int, count: int, seed: int) -> Path:
    """A cached synthetic session of ``phantom`` (same layout as ``bench/recon_quality.py``)."""
    from tiltstream.simulator.tiltseries import write_synthetic_session

    path = work / f"{phantom}_{size}_{count}_s{seed}"
    if not (path / "ground_truth.tif").is_file():
        write_synthetic_session(path, phantom, size, count, seed=seed)
    return path


def summarise(phantom: str, rows: list[dict], sirt_rows: list[dict]) -> dict[str, float]:
    """SSIM/RMSE means, the physical-property error and the fraction of steps above SIRT."""
    ssim = np.array([r["ssim"] for r in rows])
    out = {"ssim_mean": float(ssim.mean()), "ssim_min": float(ssim.min()),
           "rmse_mean": float(np.mean([r["rmse_percent"] for r in rows])),
           "above_sirt": float(np.mean(ssim > np.array([r["ssim"] for r in sirt_rows])))}
    if phantom in ("nanorod", "nanocube"):
        err = 100.0 * np.abs([r["alloying_degree"] - r["alloying_degree_ref"] for r in rows])
        out["alloy_err_after4"] = float(np.nanmean(err[4:]))
    if phantom == "nanoshell":
        rec = np.array([r["surface_to_volume"] for r in rows])
        ref = np.array([r["surface_to_volume_ref"] for r in rows])
        out["sv_err_mean"] = float(np.mean(100.0 * (rec - ref) / ref))
    if phantom == "nanostar":
        rec = np.array([r["redistribution_nm3"] for r in rows[1:]])
        ref = np.array([r["redistribution_ref_nm3"] for r in rows[1:]])
        out["redis_corr"] = float(np.corrcoef(rec, ref)[0, 1]) if rec.std() > 0 else float("nan")
    return out


def run_variant(name: str, base: str, phantom: str, session_path: Path, steps: int, eval_every: int,
                seed: int, sirt_rows: list[dict], precision: str = "fp32") -> dict[str, Any]:
    """Train one variant on one session; returns its summary, the SSIM curve and the rate."""
    from tiltstream.recon.frame_feed import add_recorded_frame
    from tiltstream.recon.run_dir import recorded_time_scale_s
    from tiltstream.recon.session_frames import load_session_frames
    from tiltstream.recon.trainer import Trainer

    overrides, options = VARIANTS[name]
    config = base_config(base).model_copy(update=overrides)
    session, frames = load_session_frames(session_path)
    truth, times_s = read_ground_truth(session_path)
    trainer = Trainer(config, frames.shape[1:], recorded_time_scale_s(session), seed=seed, precision=precision)
    if options.get("data_scale") == "mean":
        trainer.data_scale = float(np.mean(frames[0]))
    for record, frame in zip(session.records, frames):
        add_recorded_frame(trainer, record, frame)
    curve, train_s = [], 0.0
    while trainer.steps_done < steps:
        start = time.perf_counter()
        trainer.train_steps(min(eval_every, steps - trainer.steps_done))
        train_s += time.perf_counter() - start
        volumes = np.stack([trainer.volume(t) for t in times_s])
        mean = float(np.mean([metrics.ssim(volumes[i], truth[i]) for i in range(len(truth))]))
        curve.append((trainer.steps_done, round(mean, 4)))
        print(f"  {phantom} {name}: {trainer.steps_done} steps, {train_s:.0f} s, SSIM mean {mean:.4f}",
              file=sys.stderr, flush=True)
    rows = metrics.metrics_table(volumes, truth, times_s)
    return {**summarise(phantom, rows, sirt_rows), "curve": curve, "steps_per_s": steps / train_s}


def sirt_table(session_path: Path) -> list[dict]:
    """Metrics of non-negative moving-window SIRT (window 30, 30 iterations) of the session."""
    from tiltstream.recon.sirt import moving_window_sirt

    session = read_session(session_path)
    truth, times_s = read_ground_truth(session_path)
    sirt = moving_window_sirt(session.load_frames(), session.angles_deg, truth.shape[1:], window=30,
                              iterations=30, nonnegative=True)
    return metrics.metrics_table(sirt, truth, times_s)


def _matches(result: dict, key: dict) -> bool:
    """Whether a cached result was run with ``key``'s settings (results cached before ``--precision``
    existed ran in fp32)."""
    return all(result.get(k, "fp32" if k == "precision" else None) == v for k, v in key.items())


def load_results(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def table(results: list[dict], phantoms: list[str], variants: list[str], key: dict) -> list[str]:
    """Markdown rows: one per variant, the phantoms' metrics side by side."""
    head = "| variant | " + " | ".join(
        f"{p} SSIM (at 1st eval) | {p} RMSE % | {p} {'alloy err (pts)' if p in ('nanorod', 'nanocube') else 'S/V err %' if p == 'nanoshell' else 'redis. corr'} | {p} > SIRT"
        for p in phantoms) + " |"
    lines = [head, "|---|" + "---|" * (4 * len(phantoms))]
    for name in ["SIRT >= 0", *variants]:
        cells = []
        for p in phantoms:
            hit = [r for r in results if r["variant"] == name and r["phantom"] == p
                   and _matches(r, key)]
            if not hit:
                cells += ["-"] * 4
                continue
            r = hit[-1]
            prop = r.get("alloy_err_after4", r.get("sv_err_mean", r.get("redis_corr", float("nan"))))
            first = f" ({r['curve'][0][1]:.2f})" if r.get("curve") else ""
            cells += [f"{r['ssim_mean']:.3f}{first}", f"{r['rmse_mean']:.1f}", f"{prop:+.1f}" if p == "nanoshell"
                      else f"{prop:.2f}" if p == "nanostar" else f"{prop:.1f}", f"{r['above_sirt']:.0%}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phantoms", default="nanorod,nanoshell", help="comma-separated phantom names")
    parser.add_argument("--size", type=int, default=32, help="volume edge, voxels")
    parser.add_argument("--count", type=int, default=60, help="frames (= time steps)")
    parser.add_argument("--steps", type=int, default=3000, help="training steps per variant")
    parser.add_argument("--eval-every", type=int, default=1000, help="steps between SSIM evaluations")
    parser.add_argument("--variants", default="base", help=f"comma-separated, from: {', '.join(VARIANTS)}")
    parser.add_argument("--base", default="fast", help="preset the variants modify: fast, paper, kplanes, "
                        "fast_y0 (fast without Fourier bands), fast_1128 (fast of 2026-11-28: no ramp filter, "
                        "4x4 latent map) or kplanes_v0 (kplanes as first measured)")
    parser.add_argument("--seed", type=int, default=0, help="seed of phantoms, noise and training")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--precision", default="fp32", help="network precision: fp32, tf32 or bf16")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tiltstream_bench"), help="session cache dir")
    parser.add_argument("--results", type=Path, default=Path("/tmp/tiltstream_bench/ablations.jsonl"),
                        help="JSON-lines cache of results")
    parser.add_argument("--table-only", action="store_true", help="print the table from the cache")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    phantoms, variants = args.phantoms.split(","), args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; allowed: {', '.join(VARIANTS)}")
    args.work.mkdir(parents=True, exist_ok=True)
    key = {"size": args.size, "count": args.count, "steps": args.steps, "seed": args.seed, "base": args.base,
           "precision": args.precision}
    results = load_results(args.results)
    for phantom in [] if args.table_only else phantoms:
        session_path = session_for(args.work, phantom, args.size, args.count, args.seed)
        sirt_rows = sirt_table(session_path)
        done = {r["variant"] for r in results if r["phantom"] == phantom and _matches(r, key)}
        if "SIRT >= 0" not in done:
            results.append({"variant": "SIRT >= 0", "phantom": phantom, **key,
                            **summarise(phantom, sirt_rows, sirt_rows)})
            with args.results.open("a") as handle:
                handle.write(json.dumps(results[-1]) + "\n")
        for name in variants:
            if name in done:
                continue
            summary = run_variant(name, args.base, phantom, session_path, args.steps, args.eval_every,
                                  args.seed, sirt_rows, args.precision)
            results.append({"variant": name, "phantom": phantom, **key, **summary})
            with args.results.open("a") as handle:
                handle.write(json.dumps(results[-1]) + "\n")
    print(f"{args.size}^3 x {args.count}, {args.steps} steps, base preset {args.base}, seed {args.seed}, "
          f"{args.precision}")
    print("\n".join(table(results, phantoms, variants, key)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
