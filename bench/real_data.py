"""Benchmark: a real HAADF-STEM tilt series from import to scored volume, every method on held-out frames.

The series is etspy 1.3.0's test needle (``HAADF.mrc`` + ``.rawtlt``: 77 frames 256^2, -76..+76 deg in 2 deg
steps, 3.36 nm pixels; fetched by the fixture of ``tests/recon/test_import_real.py`` into
``~/.cache/tiltstream-test-data``). Stages, each timed:

1. import: ``tiltstream recon import HAADF.mrc``;
2. prepare: as ``recon train --preprocess real`` does (:func:`prepare`: background, resize to 256 / ``--bin``,
   the tilt axis estimated and projection matching as ``recon align`` does, normalisation), without the
   paper's 0.9 x Otsu mask unless ``--otsu-mask 0.9`` (drawn frame by frame, it makes the frames
   inconsistent with any one volume: docs/benchmarks/real_data.md);
3. per split (dense: every 8th frame held out; sparse: every 4th frame trains, same held-out frames;
   :func:`tiltstream.recon.heldout_scoring.split_positions`), the training frames are written as a session
   and reconstructed: DIP-STER as ``recon train --preprocess real`` trains (:func:`run_dipster`), static non-negative SIRT
   of all training frames (one volume) at several iteration counts, ASTRA's own non-negative SIRT of the
   same frames with its ``linear`` and ``strip`` projectors (:func:`astra_sirt`), and the moving-window SIRT that
   ``recon sirt`` runs by default; the floor predicts a held-out frame from its training neighbours;
4. score: :func:`tiltstream.recon.heldout_scoring.heldout_nrmse` (one scale + offset fitted on the
   training frames), and the same after each held-out frame is registered to each method's own prediction
   (:func:`tiltstream.recon.heldout_scoring.registered_heldout_nrmse`, a check on the preparation's bias);
5. one command (``--one-command``): the user's path after import, ``recon train --preprocess real`` at the
   paper's 128^2 for ``--steps`` and ``recon volumes``, timed (:func:`one_command`).

Writes ``results.json`` and ``real_data_slices.png`` into ``--work`` and, with ``--doc``, the table into
``docs/benchmarks/real_data.md`` between the ``real_data`` markers and the PNG beside it. Usage::

    OMP_NUM_THREADS=1 python bench/real_data.py --work /tmp/real_data --bin 4 --steps 6000 --threads 1 --splits dense
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.doc_sections import replace_section  # noqa: E402
from bench.static_drift import stillness  # noqa: E402
from tiltstream.acquire.session import SessionSettings, SessionWriter  # noqa: E402
from tiltstream.recon.heldout_scoring import (heldout_nrmse, neighbour_floor,  # noqa: E402
                                             registered_heldout_nrmse, split_positions)
from tiltstream.recon.preprocess import apply, real_data_config  # noqa: E402
from tiltstream.recon.session_frames import load_session_frames  # noqa: E402

SOURCE = Path.home() / ".cache" / "tiltstream-test-data" / "etspy-1.3.0" / "HAADF.mrc"
DOC = ROOT / "docs" / "benchmarks" / "real_data.md"
START, END = "<!-- real_data:start -->", "<!-- real_data:end -->"
SPLITS = {"dense": 1, "sparse": 4}  # training frames: every frame / every 4th, less the held-out ones


def prepare(session: Path, bin_factor: int, otsu_mask: float | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """The imported frames prepared as ``recon train --preprocess real`` prepares them
    (:func:`tiltstream.recon.preprocess.real_data_config`: median background, frames resized so their
    larger side is 256 / ``bin_factor``, the geometry of ``recon align`` - tilt axis estimated, projection
    matching - then per-frame normalisation), optionally with the paper's Otsu mask (``otsu_mask``: the
    fraction of the threshold, the paper's 0.9; it makes the frames inconsistent with any one volume:
    docs/benchmarks/real_data.md). Returns frames, angles, times and a report."""
    record, frames = load_session_frames(session)
    angles, times = record.angles_deg, record.times_s
    config = real_data_config().model_copy(update={"fit_size": max(frames.shape[1:]) // bin_factor,
                                                   "mask_otsu_fraction": otsu_mask})
    prepared, report = apply(frames, angles, config, session_extra=record.settings.model_extra,
                             log=lambda line: print(line, file=sys.stderr, flush=True))
    geometry = report["geometry"]
    axis = {key: geometry[key] for key in ("tilt_axis_deg", "tilt_axis_from", "offset_px", "angle_contrast",
                                           "residual", "residual_untouched")}
    axis["matching_rounds"] = len(geometry["projection_matching"]["rounds"])
    scale = max(frames.shape[1:]) / max(prepared.shape[1:])  # the geometry may turn the frames by 90 deg
    return prepared, angles, times, {"axis": axis, "preprocess_steps": report["steps"],
                                     "pixel_size_nm": record.settings.pixel_size_nm * scale}


def one_command(session: Path, work: Path, args: argparse.Namespace) -> dict[str, float]:
    """What a user runs after import, timed: ``recon train --preprocess real`` (the paper's frame size, 128^2,
    its geometry included) for ``--steps``, then ``recon volumes`` of every frame time; wall s of each."""
    run, out = work / "run_one_command", work / "one_command_volumes.tif"
    if run.exists():
        shutil.rmtree(run)
    times = {}
    for name, command in (("train_s", ["recon", "train", "--session", str(session), "--out", str(run),
                                       "--preprocess", "real", "--preset", args.preset, "--steps", str(args.steps),
                                       "--seed", str(args.seed), "--device", "cpu", "--threads", str(args.threads)]),
                          ("volumes_s", ["recon", "volumes", "--run", str(run), "--out", str(out), "--device", "cpu"])):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "tiltstream", *command], capture_output=True, text=True)
        times[name] = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:2])} failed: {done.stderr[-2000:]}")
        print(done.stderr.strip().splitlines()[-1], file=sys.stderr, flush=True)
    return times


def write_session(path: Path, frames: np.ndarray, angles: np.ndarray, times: np.ndarray,
                  pixel_size_nm: float) -> Path:
    """The given frames as a new session (indices 0..n-1, the frames' own angles and times)."""
    if path.exists():
        shutil.rmtree(path)
    writer = SessionWriter.create(path, SessionSettings(
        scheme={"kind": "imported", "count": len(frames)}, pixel_size_nm=pixel_size_nm))
    for index, (frame, angle, time_s) in enumerate(zip(frames, angles, times)):
        writer.append(frame.astype(np.float32), index=index, target_deg=float(angle), angle_deg=float(angle),
                      time_s=float(time_s), exposure_s=0.0, dose_e_per_A2=0.0)
    return path


def run_dipster(session: Path, run: Path, args: argparse.Namespace, times: np.ndarray,
                angles: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, str, dict[str, float]]:
    """DIP-STER as ``recon train --preprocess real`` trains on frames already prepared (the same
    :func:`tiltstream.recon.training.train_session` with the real-data loss terms,
    :data:`tiltstream.recon.presets.REAL_DATA_UPDATE`, and ``recon train``'s defaults: 10 % of the training
    frames held out of its own training for early stopping, patience 16, refit 0.2), ``--steps`` steps;
    the state ``recon volumes`` reads (refit, else best, else last). Returns the reprojections at every
    frame (n, ny, nx), the middle volume, wall s, the state in words, and how still the volumes stay
    (:func:`bench.static_drift.stillness` of the volumes at every 4th frame's time: the specimen is static)."""
    from tiltstream.recon import distributed
    from tiltstream.recon.presets import REAL_DATA_UPDATE
    from tiltstream.recon.run_dir import open_state
    from tiltstream.recon.train_cli import ReconTrainSettings
    from tiltstream.recon.training import Budget, NewRunSettings, train_session

    if run.exists():
        shutil.rmtree(run)
    defaults = ReconTrainSettings()
    new = NewRunSettings(preset=args.preset, seed=args.seed, holdout=defaults.holdout, config_update=REAL_DATA_UPDATE)
    budget = Budget(steps=args.steps, seconds=None, eval_every=defaults.eval_every, patience=defaults.patience,
                    refit=defaults.refit)
    started = time.perf_counter()
    outcome = train_session(session, run, new, budget, "cpu", distributed.world_from_env(), None,
                            say=lambda line: print(line, file=sys.stderr, flush=True))
    wall_s = time.perf_counter() - started
    model, state = open_state(run, checkpoint="auto")
    print(f"DIP-STER: {outcome.stop_reason} after {outcome.steps_total} steps; scored: {state}", file=sys.stderr)
    reprojections = np.stack([model.reproject(float(t), float(a)) for t, a in zip(times, angles)])
    still = stillness(np.stack([model.volume(float(t)) for t in np.sort(times)[::4]]))
    return reprojections, model.volume(float(np.median(times))), wall_s, state, still


def static_sirt(frames: np.ndarray, angles: np.ndarray, train: np.ndarray,
                counts: list[int]) -> dict[int, tuple[np.ndarray, np.ndarray, float]]:
    """Non-negative SIRT of all training frames (one volume), continued through ``counts`` iterations:
    per count the reprojections at every angle, the volume and the cumulative wall time, s."""
    from tiltstream.recon.projector import ParallelProjector
    from tiltstream.recon.sirt import sirt

    nx = frames.shape[2]
    shape = (nx, frames.shape[1], nx)
    project = ParallelProjector(angles, shape, n_det=nx)
    volume, done, spent_s, out = None, 0, 0.0, {}
    for count in sorted(counts):
        started = time.perf_counter()
        volume = sirt(frames[train], angles[train], shape, iterations=count - done, x0=volume, nonnegative=True)
        spent_s += time.perf_counter() - started
        done = count
        out[count] = (np.asarray(project(volume)), volume, spent_s)
    return out


def astra_sirt(frames: np.ndarray, angles: np.ndarray, train: np.ndarray, counts: list[int],
               kernel: str) -> dict[int, tuple[np.ndarray, float]] | None:
    """ASTRA's own non-negative SIRT as its users run it on a CPU (astra-toolbox, the ``test`` extra: 2-D
    ``SIRT`` per orthoslice, ``MinConstraint = 0``, projector ``kernel`` - ``linear`` or ``strip`` - at angle
    ``-alpha``), continued through ``counts`` iterations and reprojected with the same ASTRA projector: per
    count the reprojections at every angle and the cumulative wall time, s. None without astra-toolbox."""
    try:
        import astra
    except ImportError:
        print("real_data: astra-toolbox is not installed (pip install -e '.[test]'): no ASTRA rows", file=sys.stderr)
        return None
    n, ny = frames.shape[2], frames.shape[1]
    vol_geom = astra.create_vol_geom(n, n)
    train_geom = astra.create_proj_geom("parallel", 1.0, n, np.deg2rad(-angles[train]))
    all_geom = astra.create_proj_geom("parallel", 1.0, n, np.deg2rad(-angles))
    train_projector = astra.create_projector(kernel, train_geom, vol_geom)
    all_projector = astra.create_projector(kernel, all_geom, vol_geom)
    runs = []
    for k in range(ny):
        sino_id = astra.data2d.create("-sino", train_geom, frames[train][:, k, :].astype(np.float32))
        rec_id = astra.data2d.create("-vol", vol_geom, 0)
        cfg = astra.astra_dict("SIRT")
        cfg.update(ProjectorId=train_projector, ProjectionDataId=sino_id, ReconstructionDataId=rec_id,
                   option={"MinConstraint": 0.0})
        runs.append((astra.algorithm.create(cfg), sino_id, rec_id))
    out, done, spent_s = {}, 0, 0.0
    try:
        for count in sorted(counts):
            started = time.perf_counter()
            for algorithm, _, _ in runs:
                astra.algorithm.run(algorithm, count - done)
            spent_s += time.perf_counter() - started
            done = count
            reprojections = np.empty(frames.shape, dtype=np.float32)
            for k, (_, _, rec_id) in enumerate(runs):
                sino_id, sino = astra.create_sino(astra.data2d.get(rec_id), all_projector)
                reprojections[:, k, :] = sino
                astra.data2d.delete(sino_id)
            out[count] = (reprojections, spent_s)
    finally:
        for algorithm, sino_id, rec_id in runs:
            astra.algorithm.delete(algorithm)
            astra.data2d.delete([sino_id, rec_id])
        astra.projector.delete(train_projector)
        astra.projector.delete(all_projector)
    return out


def window_sirt(frames: np.ndarray, angles: np.ndarray, train: np.ndarray,
                heldout: np.ndarray) -> tuple[np.ndarray, float]:
    """``recon sirt``'s default (window 30 training frames, 30 cold non-negative iterations, Z = the frame
    width): reprojections at every position, wall s. A held-out frame is predicted by the window of the
    nearest training frame before it in acquisition order."""
    from tiltstream.recon.projector import project_volume
    from tiltstream.recon.sirt import moving_window_sirt

    nx = frames.shape[2]
    started = time.perf_counter()
    volumes = moving_window_sirt(frames[train], angles[train], (nx, frames.shape[1], nx))
    out = np.zeros(frames.shape, dtype=np.float64)
    for k, position in enumerate(train):
        out[position] = project_volume(volumes[k], float(angles[position]))
    for position in heldout:
        k = int(np.searchsorted(train, position)) - 1
        out[position] = project_volume(volumes[max(k, 0)], float(angles[position]))
    return out, time.perf_counter() - started


def score_split(name: str, frames: np.ndarray, angles: np.ndarray, times: np.ndarray, args: argparse.Namespace,
                pixel_size_nm: float) -> dict:
    """Every method on one split: held-out NRMSE and wall time per method; the slices for the figure."""
    train, heldout = split_positions(len(frames), train_every=SPLITS[name])
    rows: list[dict] = []

    def add(method: str, reprojections: np.ndarray, wall_s: float, **extra: object) -> None:
        parts = (reprojections[train], frames[train], reprojections[heldout], frames[heldout])
        error, registered = heldout_nrmse(*parts), registered_heldout_nrmse(*parts)
        rows.append({"method": method, "nrmse": error, "nrmse_registered": registered, "wall_s": wall_s, **extra})
        print(f"{name}: {method}: held-out NRMSE {error:.4f}, registered {registered:.4f} ({wall_s:.0f} s)",
              file=sys.stderr, flush=True)

    for linear in (False, True):
        floor = np.zeros(frames.shape)
        floor[heldout] = neighbour_floor(frames, angles, train, heldout, linear=linear)
        floor[train] = frames[train]
        add("neighbours, linear in angle" if linear else "neighbour mean (floor)", floor, 0.0)
    static = static_sirt(frames, angles, train, args.sirt_iterations)
    for count, (reprojections, _, wall_s) in static.items():
        add(f"SIRT static, non-negative, {count} it.", reprojections, wall_s, iterations=count)
    for kernel in ("linear", "strip"):
        for count, (reprojections, wall_s) in (astra_sirt(frames, angles, train, args.sirt_iterations, kernel)
                                               or {}).items():
            add(f"ASTRA SIRT ({kernel} kernel), MinConstraint 0, {count} it.", reprojections, wall_s,
                astra_iterations=count)
    reprojections, wall_s = window_sirt(frames, angles, train, heldout)
    add("recon sirt default (window 30, 30 it.)", reprojections, wall_s)
    session = write_session(args.work / f"train_{name}", frames[train], angles[train], times[train], pixel_size_nm)
    reprojections, volume, wall_s, state, still = run_dipster(session, args.work / f"run_{name}", args, times,
                                                              angles)
    add(f"DIP-STER (--preprocess real's loss, recon train defaults, --preset {args.preset}, {args.steps} steps)",
        reprojections, wall_s, state=state, stillness=still)
    best_sirt = min((r for r in rows if "iterations" in r), key=lambda r: r["nrmse"])
    return {"split": name, "training": train.tolist(), "heldout": heldout.tolist(), "rows": rows,
            "slices": {"DIP-STER": volume, f"SIRT {best_sirt['iterations']} it.": static[best_sirt["iterations"]][1]}}


def write_figure(results: list[dict], path: Path) -> None:
    """Central slices of DIP-STER and the best static SIRT, side by side: per split, the z-centre plane
    (along the needle) and the y-centre orthoslice (across it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(r["split"], method, volume) for r in results for method, volume in r["slices"].items()]
    fig, axes = plt.subplots(2, len(panels), figsize=(3.2 * len(panels), 6.4), squeeze=False)
    for column, (split, method, volume) in enumerate(panels):
        high = float(np.percentile(volume, 99.9)) or 1.0
        for row, (plane, title) in enumerate(((volume[volume.shape[0] // 2].T, "z centre"),
                                              (volume[:, volume.shape[1] // 2, :], "y centre"))):
            axes[row, column].imshow(plane, cmap="gray", vmin=0, vmax=high)
            axes[row, column].set_title(f"{split}: {method}\n{title}", fontsize=8)
            axes[row, column].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(results: list[dict]) -> list[str]:
    """Markdown rows: method, held-out NRMSE dense and sparse, wall times."""
    by_method: dict[str, dict[str, dict]] = {}
    for result in results:
        for row in result["rows"]:
            by_method.setdefault(row["method"], {})[result["split"]] = row
    lines = ["| method | held-out NRMSE, dense (67 training frames) | held-out NRMSE, sparse (every 4th, 20) "
             "| registered, dense / sparse | wall s, dense / sparse |", "|---|---|---|---|---|"]
    for method, cells in by_method.items():
        errors = [f"{cells[s]['nrmse']:.4f}" if s in cells else "-" for s in SPLITS]
        registered = " / ".join(f"{cells[s]['nrmse_registered']:.4f}" if s in cells else "-" for s in SPLITS)
        walls = " / ".join(f"{cells[s]['wall_s']:.0f}" if s in cells else "-" for s in SPLITS)
        lines.append(f"| {method} | {errors[0]} | {errors[1]} | {registered} | {walls} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE, help="HAADF.mrc (with HAADF.rawtlt beside it)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/real_data"))
    parser.add_argument("--bin", type=int, default=2, help="frames resized to 256 / BIN pixels: 2 gives 128^2 (the paper's), 4 gives 64^2")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--splits", default="dense,sparse")
    parser.add_argument("--sirt-iterations", type=lambda s: [int(v) for v in s.split(",")],
                        default=[30, 100, 200, 300, 500, 1000])
    parser.add_argument("--otsu-mask", type=float, default=None, help="zero pixels below this fraction of "
                        "each frame's Otsu threshold, as the paper does (0.9); default: no mask")
    parser.add_argument("--one-command", action="store_true", help="also time the user's path after import: "
                        "recon train --preprocess real (128^2) for --steps, then recon volumes")
    parser.add_argument("--doc", action="store_true", help="write the table and PNG into docs/benchmarks")
    args = parser.parse_args()
    if not args.source.is_file():
        print(f"real_data: {args.source} is missing: run `pytest tests/recon/test_import_real.py` once to fetch "
              "etspy's test data, or give --source", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    session = args.work / "session"
    if session.exists():
        shutil.rmtree(session)
    stages: dict[str, float] = {}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tiltstream", "recon", "import", str(args.source), "--out", str(session)],
                   check=True)
    stages["import_s"] = time.perf_counter() - started
    started = time.perf_counter()
    frames, angles, times, prepared = prepare(session, args.bin, args.otsu_mask)
    stages["prepare_s"] = time.perf_counter() - started
    print(f"prepared {frames.shape}: {json.dumps(prepared['axis'])}", file=sys.stderr, flush=True)
    results = []
    for name in args.splits.split(","):
        started = time.perf_counter()
        results.append(score_split(name, frames, angles, times, args, prepared["pixel_size_nm"]))
        stages[f"{name}_all_methods_s"] = time.perf_counter() - started
    if args.one_command:
        stages.update({f"one_command_{k}": v for k, v in one_command(session, args.work, args).items()})
    record = {"args": {k: str(v) for k, v in vars(args).items()}, "frames": list(frames.shape), "stages": stages,
              "prepared": prepared, "threads": args.threads, "cpus": os.cpu_count(), "machine": platform.node(),
              "results": [{k: v for k, v in r.items() if k != "slices"} for r in results]}
    (args.work / "results.json").write_text(json.dumps(record, indent=1))  # before the figure: nothing is lost
    png = args.work / "real_data_slices.png"
    write_figure(results, png)
    lines = table(results)
    print("\n".join(lines))
    print(json.dumps(stages))
    if args.doc:
        shutil.copy(png, DOC.parent / f"real_data_slices_{frames.shape[1]}_{args.splits.replace(',', '_')}.png")
        block = "\n".join([START, f"Frames {frames.shape[1]}^2 (bin {args.bin}), {args.threads} thread(s); stage "
                           f"wall times, s: {json.dumps({k: round(v) for k, v in stages.items()})}", "",
                           *lines, END])
        replace_section(DOC, START.replace("real_data", f"real_data_{frames.shape[1]}"),
                        END.replace("real_data", f"real_data_{frames.shape[1]}"),
                        block.replace("real_data:", f"real_data_{frames.shape[1]}:"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
