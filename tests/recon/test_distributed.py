"""Data-parallel DIP-STER on real gloo ranks over loopback: N ranks x batch b behave as one process x batch N*b
(loss curves, and the quality against the ground truth a converged run reaches), runs move between world sizes,
volumes and SIRT split across ranks give the same file, a dead rank ends the run."""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from skimage.metrics import structural_similarity

from tiltstream.recon.presets import DipsterConfig
from tiltstream.recon.run_dir import LOG_FILE, REFIT_DIR, RUN_FILE
from tiltstream.recon.sampler import FrameSampler
from tiltstream.recon.projector import project_volume
from tiltstream.recon.trainer import Trainer
from tiltstream.recon.volume_io import read_volumes
from tests.recon.test_train_cli import _cli, _session

N = 16
FRAMES = 12
STEPS = 300
EARLY_STEPS = 50
CONFIG = DipsterConfig(mapnet_widths=(32, 32), cnn_channels=16, channel_halving=True, cnn_min_channels=8,
                       lr=2e-3, lr_step_steps=100, batch_frames=4, rows_per_frame=2)
# the K-planes field: its prior loss is computed on the unwrapped field, outside DDP's forward
KPLANES = DipsterConfig(network="kplanes", plane_features=4, plane_scales=(1, 2), plane_time_cells=6,
                        lr=1e-2, lr_step_steps=100, batch_frames=4, rows_per_frame=2)
CONFIGS = {"dipster": CONFIG, "kplanes": KPLANES}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _truth(i: int) -> np.ndarray:
    """The moving cube at frame ``i`` (16^3)."""
    vol = np.zeros((N, N, N), dtype=np.float32)
    c = 3 + (i * 6) // FRAMES
    vol[c:c + 6, 3:12, c:c + 5] = 1.0
    return vol


def _trainer(batch_frames: int, network: str = "dipster") -> Trainer:
    trainer = Trainer(CONFIGS[network].model_copy(update={"batch_frames": batch_frames}), (N, N),
                      time_scale_s=120.0, seed=4)
    for i in range(FRAMES):
        angle = -70.0 + (i * 0.618034 % 1.0) * 140.0
        trainer.add_frame(i, project_volume(_truth(i), angle), angle, 10.0 * i)
    return trainer


class _ShareOfDraws:
    """Rank ``rank``'s share of what one sampler draws for ``ranks`` x the batch: with every rank holding
    the same seed, the ranks together train on exactly the samples one process of batch N*b draws."""

    def __init__(self, sampler: FrameSampler, rank: int, ranks: int) -> None:
        self.sampler, self.rank, self.ranks = sampler, rank, ranks
        self.train_slots = sampler.train_slots

    def draw(self, batch_frames: int, rows_per_frame: int, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        slots, rows = self.sampler.draw(batch_frames * self.ranks, rows_per_frame, n_rows)
        share = slice(self.rank * batch_frames, (self.rank + 1) * batch_frames)
        return slots[share], rows[share]


def _leave() -> None:
    """Leave the process group cleanly, after the caller dropped its trainers: their DDP wrappers (and
    the reducers' gloo work) are freed while the group still exists, then the ranks wait for each other
    and destroy it. A DDP object freed after ``destroy_process_group`` (the last trainer of a rank
    function, at its return) aborted a rank with "terminate called without an active exception" in a
    fresh CI run."""
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


def _rank_main(rank: int, world_size: int, port: int, out: str, network: str) -> None:
    """One gloo rank (batch 2): 300 steps on a shared draw, then 300 on its own samples; rank 0 saves
    both loss histories and volumes."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
                            timeout=dt.timedelta(seconds=60))
    results = {}
    for name in ("shared", "own"):
        trainer = _trainer(2, network)
        trainer.data_parallel(rank, world_size)
        if name == "shared":  # data_parallel reseeded rank r > 0: the shared draw needs the common seed
            trainer.sampler.generator.manual_seed(trainer.seed)
            trainer.sampler = _ShareOfDraws(trainer.sampler, rank, world_size)
        trainer.train(steps=EARLY_STEPS)
        results[f"{name}_early_volumes"] = np.stack([trainer.volume(10.0 * i) for i in range(FRAMES)])
        trainer.train(steps=STEPS - EARLY_STEPS)
        results[f"{name}_losses"] = np.asarray(trainer.loss_history)
    if rank == 0:
        np.savez(out, **results)
    del trainer
    _leave()


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    return float(structural_similarity(a, b, data_range=float(b.max() - b.min())))


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("network", ["dipster", "kplanes"])
def test_two_ranks_of_batch_b_train_like_one_process_of_batch_2b(tmp_path: Path, network: str) -> None:
    """2 gloo ranks x 2 frames per step against 1 process x 4 frames per step, 300 steps, 16^3 x 12 frames,
    for both networks (the K-planes field adds its prior loss to the data term on every rank).

    - Same samples (each rank takes its half of the 1-process draw): DDP's averaged gradient is the
      gradient of the 4-frame batch. The loss curves agree to 2e-3 relative per step over the first 50
      steps (measured: the DIP-STER network in NCHW agreed to 1e-3 up to step 65, when float rounding in
      the all-reduce has grown; channels-last on the CPU, since 2026-12-07 evening, to 1e-3 up to step 38
      and 1.3e-3 at most over 50 steps: its convolutions round differently for batches of 2 and 4),
      the mean loss of the last 100 of 300 steps within 5 % (measured 0.040285 vs 0.040621, 0.8 %),
      and the volumes after 50 steps agree to SSIM 0.99 against each other (measured min 0.99992).
      Later volumes are not compared: 300 steps of this tiny run are far from converged and the rounding
      difference moves them (SSIM 0.86-0.94 to each other at step 300).
    - Own samples (the real configuration, rank r seeded seed + r): the mean loss of the last 100 steps
      within 25 % of the 1-process run's. Volume quality cannot be compared to 0.01 SSIM here: two
      1-process runs that differ only in their sampler seed differ by 0.09 SSIM against the ground
      truth after 300 steps at this size (0.276 vs 0.182).
    """
    out = tmp_path / "ranks.npz"
    context = mp.start_processes(_rank_main, args=(2, _free_port(), str(out), network), nprocs=2, join=False,
                                 start_method="spawn")
    deadline = time.monotonic() + 100
    while not context.join(timeout=1):
        assert time.monotonic() < deadline, "the two ranks did not finish in 100 s"
    ranks = np.load(out)
    torch.set_num_threads(1)
    single = _trainer(4, network)
    single.train(steps=EARLY_STEPS)
    single_early = [single.volume(10.0 * i) for i in range(FRAMES)]
    single.train(steps=STEPS - EARLY_STEPS)
    shared = ranks["shared_losses"]
    assert len(shared) == STEPS
    np.testing.assert_allclose(shared[:50], single.loss_history[:50], rtol=2e-3)
    late_shared, late_single = float(shared[-100:].mean()), float(np.mean(single.loss_history[-100:]))
    assert abs(late_shared - late_single) < 0.05 * late_single, (late_shared, late_single)
    early = [_ssim(v, w) for v, w in zip(ranks["shared_early_volumes"], single_early)]
    assert min(early) > 0.99, early
    own = ranks["own_losses"]
    loss_ranks, loss_single = float(own[-100:].mean()), float(np.mean(single.loss_history[-100:]))
    assert abs(loss_ranks - loss_single) < 0.25 * loss_single, (loss_ranks, loss_single)


QUALITY_FRAMES = 24
QUALITY_STEPS = 3000
CONVERGING = DipsterConfig(mapnet_widths=(64, 64), use_angle=False, centre_coords=True, cnn_channels=16,
                           channel_halving=True, cnn_min_channels=8, lr=2e-3, lr_gamma=0.5, lr_step_steps=1200,
                           batch_frames=4, rows_per_frame=2)
"""Small enough for 3000 steps in a test, and converging: centred coordinates without the angle input (the
fast preset's choices) and the learning rate halved every 1200 steps (halving every 600 ended lower,
0.835-0.857, and twice as spread)."""


def _moving_truth(i: int) -> np.ndarray:
    """The cube moving diagonally at frame ``i`` of ``QUALITY_FRAMES`` (16^3)."""
    vol = np.zeros((N, N, N), dtype=np.float32)
    c = 3 + (i * 6) // QUALITY_FRAMES
    vol[c:c + 6, 3:12, c:c + 5] = 1.0
    return vol


def _converging_trainer(batch_frames: int, seed: int) -> Trainer:
    trainer = Trainer(CONVERGING.model_copy(update={"batch_frames": batch_frames}), (N, N),
                      time_scale_s=10.0 * QUALITY_FRAMES, seed=seed)
    for i in range(QUALITY_FRAMES):
        angle = -70.0 + (i * 0.618034 % 1.0) * 140.0
        trainer.add_frame(i, project_volume(_moving_truth(i), angle), angle, 10.0 * i)
    return trainer


def truth_ssim(trainer: Trainer) -> float:
    """Mean SSIM of the volumes at the frame times against the ground truth (data range 1)."""
    return float(np.mean([structural_similarity(trainer.volume(10.0 * i), _moving_truth(i), data_range=1.0)
                          for i in range(QUALITY_FRAMES)]))


def _quality_rank_main(rank: int, world_size: int, port: int, seed: int, steps: int, out: str) -> None:
    """One gloo rank of batch 2 on its own samples (rank r seeded seed + r); rank 0 writes the truth SSIM."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
                            timeout=dt.timedelta(seconds=120))
    trainer = _converging_trainer(2, seed)
    trainer.data_parallel(rank, world_size)
    trainer.train(steps=steps)
    if rank == 0:
        Path(out).write_text(json.dumps({"truth_ssim": truth_ssim(trainer)}))
    del trainer
    _leave()


def two_rank_truth_ssim(seed: int, steps: int, out: Path, limit_s: float = 600.0) -> float:
    """Mean truth SSIM of a run of 2 gloo ranks x batch 2 (``seed``, ``steps``)."""
    context = mp.start_processes(_quality_rank_main, args=(2, _free_port(), seed, steps, str(out)), nprocs=2,
                                 join=False, start_method="spawn")
    deadline = time.monotonic() + limit_s
    while not context.join(timeout=1):
        assert time.monotonic() < deadline, f"the two ranks did not finish in {limit_s} s"
    return float(json.loads(out.read_text())["truth_ssim"])


def one_process_truth_ssim(seed: int, steps: int) -> float:
    """Mean truth SSIM of a one-process run of batch 4 (``seed``, ``steps``)."""
    torch.set_num_threads(1)
    trainer = _converging_trainer(4, seed)
    trainer.train(steps=steps)
    return truth_ssim(trainer)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_two_ranks_reach_the_ground_truth_quality_of_one_process(tmp_path: Path) -> None:
    """2 gloo ranks x batch 2 on their own samples against 1 process x batch 4, same seed (0), 3000 steps of
    a converging configuration on a moving cube (16^3 x 24 frames): mean SSIM against the ground truth
    above 0.83 for both, and equal within 0.04.

    Why 0.04 and not issue 10's 0.01: at this budget the quality a run ends at depends on its samples.
    Measured (``one_process_truth_ssim`` / ``two_rank_truth_ssim``, seeds 0, 1, 2): one process 0.877,
    0.871, 0.883 (s.d. 0.006); two ranks 0.852, 0.873, 0.879 (s.d. 0.014); same-seed differences 0.025,
    -0.002, 0.004 (seed 0, tested here: 0.025, deterministic); the 3-seed means differ by 0.009. Two
    runs that differ only in their samples thus differ with a s.d. of ~0.015, so 0.04 (about 2.7 s.d.)
    is the tightest tolerance that does not fail an honest run; 0.01 for a single pair would need a
    per-run s.d. below ~0.004, and neither more frames (48: spread 0.020 with the learning rate halved
    every 600 steps, as 24 frames' 0.022) nor a longer budget (6000 steps: one process 0.912, 0.906,
    0.921, spread 0.015) brings it there; comparing means over several seeds would.
    """
    ranks = two_rank_truth_ssim(0, QUALITY_STEPS, tmp_path / "ranks.json")
    single = one_process_truth_ssim(0, QUALITY_STEPS)
    assert ranks > 0.83 and single > 0.83, (ranks, single)
    assert abs(ranks - single) < 0.04, (ranks, single)


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node 2 -m tiltstream ARGS`` (1 thread per rank)."""
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "tiltstream", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_workers_run_resumes_on_one_process_and_volumes_and_sirt_split_across_ranks(tmp_path: Path) -> None:
    """``recon train --workers 2`` writes one run (rank 0 alone: one log row per interval, one start line)
    and its refit state (the best + 0.2 x its steps on every frame, trained by both ranks); one process
    resumes it; ``recon volumes`` and ``recon sirt`` under torchrun (2 ranks) write the same
    file as one process (volumes equal to 1e-6, SSIM > 0.99)."""
    session = _session(tmp_path / "s", count=8)
    run = tmp_path / "run"
    first = _cli("recon", "train", "--session", str(session), "--out", str(run), "--steps", "20",
                 "--eval-every", "10", "--holdout", "0.2", "--workers", "2")
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("recon train: new run") == 1 and "2 ranks" in first.stderr
    description = json.loads((run / RUN_FILE).read_text())
    assert description["ranks"] == 2
    best_step, refit = description["best"]["step"], description["refit"]  # refit_best under 2 gloo ranks
    assert refit == {"from_step": best_step, "steps": round(0.2 * best_step), "n_frames": 8} and refit["steps"] > 0
    refitted = Trainer.load(run / REFIT_DIR)
    assert refitted.steps_done == best_step + refit["steps"] and not any(refitted.held_out)
    second = _cli("recon", "train", "--session", str(session), "--out", str(run), "--steps", "10",
                  "--eval-every", "10", "--threads", "1")
    assert second.returncode == 0, second.stderr
    assert "resumed at step 20" in second.stderr
    rows = (run / LOG_FILE).read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [10, 20, 30]
    assert Trainer.load(run).steps_done == 30

    one = _cli("recon", "volumes", "--run", str(run), "--out", str(tmp_path / "one.tif"))
    assert one.returncode == 0, one.stderr
    two = _torchrun("recon", "volumes", "--run-dir", str(run), "--out", str(tmp_path / "two.tif"))
    assert two.returncode == 0, two.stderr
    assert "(2 ranks)" in two.stderr
    (v1, t1), (v2, t2) = read_volumes(tmp_path / "one.tif"), read_volumes(tmp_path / "two.tif")
    assert v1.shape == (8, 16, 16, 16)
    np.testing.assert_array_equal(t1, t2)
    np.testing.assert_allclose(v2, v1, rtol=1e-6, atol=1e-6)
    assert min(_ssim(a, b) for a, b in zip(v2, v1)) > 0.99

    sirt_args = ("recon", "sirt", "--session", str(session), "--window", "4", "--iterations", "5")
    one = _cli(*sirt_args, "--out", str(tmp_path / "sirt1.tif"), "--threads", "1")
    assert one.returncode == 0, one.stderr
    two = _torchrun(*sirt_args, "--out", str(tmp_path / "sirt2.tif"))
    assert two.returncode == 0, two.stderr
    np.testing.assert_allclose(read_volumes(tmp_path / "sirt2.tif")[0], read_volumes(tmp_path / "sirt1.tif")[0],
                               rtol=1e-6, atol=1e-6)


@pytest.mark.timeout(180)
def test_a_killed_rank_ends_the_other_with_one_line_and_the_checkpoint_resumes(tmp_path: Path) -> None:
    """Two ranks started as torchrun starts them (RANK, WORLD_SIZE, MASTER_ADDR/PORT on loopback); rank 1
    is SIGKILLed once training has logged a row. Rank 0 exits within 60 s with exit code 1 and one line
    naming the lost peer, no traceback; the last checkpoint then resumes in one process."""
    session = _session(tmp_path / "s", count=8)
    run = tmp_path / "run"
    port = _free_port()
    ranks = []
    for rank in (0, 1):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
               "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
        ranks.append(subprocess.Popen(
            [sys.executable, "-m", "tiltstream", "recon", "train", "--session", str(session), "--out", str(run),
             "--steps", "1000000", "--eval-every", "10", "--peer-timeout-s", "30"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        deadline = time.monotonic() + 90
        while not ((run / LOG_FILE).is_file() and len((run / LOG_FILE).read_text().splitlines()) > 1):
            assert time.monotonic() < deadline and ranks[0].poll() is None, "training did not start"
            time.sleep(0.2)
        ranks[1].send_signal(signal.SIGKILL)
        _, stderr = ranks[0].communicate(timeout=60)
    finally:
        for process in ranks:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert ranks[0].returncode == 1, stderr
    assert "Traceback" not in stderr
    lost = [line for line in stderr.splitlines() if "another rank stopped" in line]
    assert len(lost) == 1 and lost[0] == stderr.strip().splitlines()[-1], stderr
    steps = Trainer.load(run).steps_done
    assert steps >= 10
    resumed = _cli("recon", "train", "--session", str(session), "--out", str(run), "--steps", "5",
                   "--threads", "1")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed at step {steps}" in resumed.stderr
