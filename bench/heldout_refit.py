"""Benchmark: what ``recon train`` keeps with its defaults (held-out stopping, then the refit), against
the ground truth.

For each specimen, ``tiltstream recon train`` runs as a user runs it (``--holdout 0.1 --patience 16
--refit 0.2``, the defaults, unless given here) on a cached synthetic session (Poisson noise, the
bench's dose) for at most ``--minutes`` of training, in its own process with ``--threads``. Then the
run's best state (``--checkpoint best``: least held-out error, 90 % of the frames) and its refit state
(``--checkpoint refit``: the best trained on with every frame, what ``recon volumes`` reads by default)
are compared with the ground truth at every time step: mean SSIM (:func:`tiltstream.recon.metrics.ssim_series`,
Otsu masks) and the specimen's physical property as ``bench/recon_quality.py`` measures it.

Writes the table into ``docs/benchmarks/stopping.md`` between the ``heldout_refit`` markers (``--doc``)
and prints it. Usage::

    python bench/heldout_refit.py --phantoms nanorod,nanocube,nanostar,nanoshell --size 64 --count 100 \\
        --minutes 10 --threads 2 --precision bf16 --seed 1
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

from tiltstream.acquire.session import read_ground_truth  # noqa: E402
from bench.doc_sections import replace_section  # noqa: E402
from bench.recon_quality import property_rows, property_summary, session_for  # noqa: E402
from tiltstream.recon import metrics  # noqa: E402
from tiltstream.recon.run_dir import RunDir, open_reconstructor  # noqa: E402

START, END = "<!-- heldout_refit:start -->", "<!-- heldout_refit:end -->"


def evaluate(run: Path, checkpoint: str, phantom: str, truth: np.ndarray, times_s: np.ndarray) -> dict:
    """Mean SSIM over the time steps and the physical property of one state of ``run``."""
    reconstructor = open_reconstructor(run, checkpoint=checkpoint)
    volumes = np.stack([reconstructor.volume(float(t)) for t in times_s])
    words, error = property_summary(phantom, property_rows(phantom, volumes, truth))
    return {"steps": reconstructor.steps_done, "ssim_mean": float(metrics.ssim_series(volumes, truth).mean()),
            "property": words, "property_error": error}


def run_one(args: argparse.Namespace, phantom: str) -> dict:
    """Train one specimen with ``recon train`` and evaluate its best and refit states."""
    session = session_for(args.work, phantom, args.size, args.count, args.seed)
    run = args.work / f"refit_{phantom}_{args.size}_{args.count}_s{args.seed}"
    if run.exists():
        shutil.rmtree(run)
    command = [sys.executable, "-m", "tiltstream", "recon", "train", "--session", str(session), "--out", str(run),
               "--minutes", str(args.minutes), "--seed", str(args.seed), "--device", "cpu",
               "--threads", str(args.threads), "--precision", args.precision, *args.train_args]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall_s = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"recon train failed on {phantom}: {result.stderr[-2000:]}")
    print(result.stderr.strip().splitlines()[-1], file=sys.stderr, flush=True)
    truth, times_s = read_ground_truth(session)
    description = RunDir(run).read().to_json()
    rows = {"best": evaluate(run, "best", phantom, truth, times_s)}
    if description.get("refit"):
        rows["refit"] = evaluate(run, "refit", phantom, truth, times_s)
    log = RunDir(run).read_log()
    return {"phantom": phantom, "rows": rows, "wall_s": wall_s, "train_s": float(log[-1]["elapsed_s"]),
            "last_step": int(log[-1]["step"]), "best": description["best"], "refit": description.get("refit")}


def table(results: list[dict]) -> list[str]:
    """Markdown rows: per specimen, where training stopped, the best state and the refit state."""
    lines = ["| specimen | stopped at (train s) | best: step, SSIM, property | refit: steps, SSIM, property |"
             " SSIM gain |", "|---|---|---|---|---|"]
    for r in results:
        best = r["rows"]["best"]
        refit = r["rows"].get("refit")
        refit_cell = (f"+{r['refit']['steps']} = {refit['steps']}, {refit['ssim_mean']:.4f}, {refit['property']}"
                      if refit else "none")
        gain = f"{refit['ssim_mean'] - best['ssim_mean']:+.4f}" if refit else "-"
        lines.append(f"| {r['phantom']} | {r['last_step']} ({r['train_s']:.0f} s) | {best['steps']}, "
                     f"{best['ssim_mean']:.4f}, {best['property']} | {refit_cell} | {gain} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phantoms", default="nanorod,nanocube,nanostar,nanoshell")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=10.0, help="recon train's budget per specimen")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of recon train")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tiltstream_bench"), help="session cache dir")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks" / "stopping.md")
    parser.add_argument("--train-args", nargs=argparse.REMAINDER, default=[],
                        help="further recon train options (e.g. --refit 0.4), last on the line")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    results = [run_one(args, phantom) for phantom in args.phantoms.split(",")]
    extra = (" --train-args " + " ".join(args.train_args)) if args.train_args else ""
    text = [START, "## Refit: the best state trained on with its held-out frames (`recon train --refit`)", "",
            f"`python bench/heldout_refit.py --phantoms {args.phantoms} --size {args.size} --count {args.count} "
            f"--minutes {args.minutes:g} --threads {args.threads} --precision {args.precision} --seed {args.seed}"
            f"{extra}` ({platform.machine()}, {os.cpu_count()} CPUs; one `recon train` at a time).", "",
            *table(results), "", END]
    replace_section(args.doc, START, END, "\n".join(text))
    print("\n".join(text))
    print(json.dumps(results, indent=1, default=str), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
