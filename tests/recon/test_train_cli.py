"""``tiltstream recon train`` / ``recon volumes`` end to end: run directory, resume, held-out log, bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tiltstream.acquire.session import SessionSettings, SessionWriter
from tiltstream.recon.checkpoint import CHECKPOINT_FILE
from tiltstream.recon.projector import project_volume
from tiltstream.recon.run_dir import BEST_DIR, LOG_FILE, RUN_FILE, PlateauStopper, RunDir, heldout_positions
from tiltstream.recon.volume_io import read_volumes


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tiltstream", *args], capture_output=True, text=True,
                          timeout=240)


def _session(path: Path, count: int = 8, n: int = 16, nan_at: int | None = None,
             odd_shape_at: int | None = None) -> Path:
    """A small recorded session of a static cube at GRS-like angles."""
    writer = SessionWriter.create(path, SessionSettings())
    vol = np.zeros((n, n, n), dtype=np.float32)
    vol[4:11, 3:12, 5:10] = 1.0
    for i in range(count):
        angle = -70.0 + (i * 0.618034 % 1.0) * 140.0
        frame = project_volume(vol, angle)
        if i == nan_at:
            frame[3, 3] = np.nan
        if i == odd_shape_at:
            frame = frame[:, :-2]
        writer.append(frame, index=i, target_deg=angle, angle_deg=angle, time_s=10.0 * i,
                      exposure_s=1.0, dose_e_per_A2=40.0)
    return path


def _one_line_error(result: subprocess.CompletedProcess, words: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert words in lines[0], lines[0]


@pytest.mark.timeout(120)
def test_bad_sessions_get_one_clear_line(tmp_path: Path) -> None:
    _one_line_error(_cli("recon", "train", "--session", str(tmp_path / "missing"), "--out",
                         str(tmp_path / "r1")), "does not exist")
    _one_line_error(_cli("recon", "train", "--session", str(tmp_path / "missing"), "--out",
                         str(tmp_path / "r1"), "--workers", "2"), "does not exist")  # before any rank starts
    SessionWriter.create(tmp_path / "empty", SessionSettings())
    _one_line_error(_cli("recon", "train", "--session", str(tmp_path / "empty"), "--out",
                         str(tmp_path / "r2")), "has no frames")
    _session(tmp_path / "odd", count=4, odd_shape_at=2)
    _one_line_error(_cli("recon", "train", "--session", str(tmp_path / "odd"), "--out",
                         str(tmp_path / "r3")), "mixes frame shapes")
    _session(tmp_path / "nan", count=4, nan_at=1)
    _one_line_error(_cli("recon", "train", "--session", str(tmp_path / "nan"), "--out",
                         str(tmp_path / "r4")), "NaN")
    _one_line_error(_cli("recon", "train", "--session", str(tmp_path / "nan"), "--out",
                         str(tmp_path / "r5"), "--holdout", "0.9"), "holdout")
    _one_line_error(_cli("recon", "volumes", "--run", str(tmp_path / "r1"), "--out",
                         str(tmp_path / "v.tif")), "not a trained run")


@pytest.mark.timeout(200)
def test_train_resume_and_volumes(tmp_path: Path) -> None:
    """Resume continues steps and log; volumes are (T, Z, Y, X) float32 with the frames' times."""
    session = _session(tmp_path / "s", count=10)
    run = tmp_path / "run"
    first = _cli("recon", "train", "--session", str(session), "--out", str(run), "--steps", "20",
                 "--eval-every", "10", "--holdout", "0.2", "--threads", "1", "--device", "auto")
    assert first.returncode == 0, first.stderr
    assert "steps/s" in first.stderr and "ETA" in first.stderr
    second = _cli("recon", "train", "--session", str(session), "--out", str(run), "--steps", "10",
                  "--eval-every", "10", "--threads", "1")
    assert second.returncode == 0, second.stderr
    assert "resumed at step 20" in second.stderr
    with open(run / LOG_FILE, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [10, 20, 30]
    assert all(float(r["heldout_ssim"]) <= 1 and float(r["heldout_rmse_percent"]) > 0 for r in rows)
    elapsed = [float(r["elapsed_s"]) for r in rows]
    assert elapsed == sorted(elapsed)
    description = json.loads((run / RUN_FILE).read_text())
    assert description["heldout_indices"] == [4, 9] and description["preset"] == "fast"

    out = tmp_path / "vol.tif"
    result = _cli("recon", "volumes", "--run", str(run), "--out", str(out), "--times", "all")
    assert result.returncode == 0, result.stderr
    volumes, times = read_volumes(out)
    assert volumes.shape == (10, 16, 16, 16) and volumes.dtype == np.float32
    np.testing.assert_allclose(times, 10.0 * np.arange(10))
    result = _cli("recon", "volumes", "--run", str(run), "--out", str(tmp_path / "two.mrc"),
                  "--times", "5,12.5", "--format", "mrc")
    assert result.returncode == 0, result.stderr
    volumes, times = read_volumes(tmp_path / "two.mrc")
    assert volumes.shape == (2, 16, 16, 16)
    np.testing.assert_allclose(times, [5.0, 12.5])


def test_heldout_positions_are_spread_and_skip_the_first_frame() -> None:
    assert heldout_positions(10, 0.2) == [4, 9]
    assert heldout_positions(20, 0.1) == [9, 19]
    assert heldout_positions(5, 0.0) == []
    assert 0 not in heldout_positions(7, 0.5)


def test_plateau_stopper_stops_after_patience_evaluations_without_improvement() -> None:
    stopper = PlateauStopper(patience=2)
    assert [stopper.update(e) for e in (10.0, 8.0, 7.99, 8.5, 6.0, 6.0, 6.0)] == \
        [False, False, False, True, False, False, True]
    never = PlateauStopper(patience=0)
    assert not any(never.update(1.0) for _ in range(10))


@pytest.mark.timeout(180)
def test_preprocess_runs_before_training_and_is_recorded(tmp_path: Path) -> None:
    """``--preprocess paper`` runs tiltstream.recon.preprocess on the session and records its report in run.json;
    a preprocessed run refuses frames the session gained later (one line); a bad value is one line."""
    session = _session(tmp_path / "s", count=6)
    run = tmp_path / "run"
    result = _cli("recon", "train", "--session", str(session), "--out", str(run), "--steps", "20",
                  "--threads", "1", "--preprocess", "paper")
    assert result.returncode == 0, result.stderr
    description = json.loads((run / RUN_FILE).read_text())
    report = description["preprocess"]
    assert report["config"]["align"] is True and report["input_shape"] == [6, 16, 16]
    assert len(report["steps"]) >= 4  # background, mask, normalise, align, centre
    assert description["session_frame_shape"] == [16, 16]

    writer = SessionWriter.resume(session)
    frame = project_volume(np.ones((16, 16, 16), dtype=np.float32), 10.0)
    writer.append(frame, index=6, target_deg=10.0, angle_deg=10.0, time_s=60.0, exposure_s=1.0,
                  dose_e_per_A2=40.0)
    _one_line_error(_cli("recon", "train", "--session", str(session), "--out", str(run), "--steps", "5"),
                    "start a new run")
    _one_line_error(_cli("recon", "train", "--session", str(session), "--out", str(tmp_path / "r2"),
                         "--steps", "5", "--preprocess", "sharpen"), "invalid preprocess = 'sharpen'")


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_a_live_format_run_is_read_by_volumes_and_resumed_by_train(tmp_path: Path) -> None:
    """One run-directory format: a run written through the Reconstructor protocol (as tiltstream live
    writes it: Trainer.save(RUN), run.json naming only the method) and a bare checkpoint.pt (a live run
    of before run.json) are read by recon volumes and continued by recon train; the frame metadata and
    the time scale survive."""
    from tiltstream.acquire.session import read_session
    from tiltstream.recon.reconstructor import reconstructor_class
    from tiltstream.recon.run_dir import session_time_scale_s
    from tiltstream.recon.trainer import Trainer
    from tests.recon.test_trainer import SMALL

    session_dir = _session(tmp_path / "s", count=6)
    session = read_session(session_dir)
    live = Trainer(SMALL, (16, 16), time_scale_s=77.0, seed=1)
    for record in session.records[:4]:
        live.add_frame(record.index, session.load_frame(record), record.angle_deg, record.time_s,
                       metadata={"dose_e_per_A2": record.dose_e_per_A2, "temperature_C": 21.5})
    live.train(steps=3)
    live.save(tmp_path / "live")
    assert json.loads((tmp_path / "live" / RUN_FILE).read_text()) == {"method": "dipster"}
    (tmp_path / "bare").mkdir()
    live.save(tmp_path / "bare" / CHECKPOINT_FILE)

    for run in (tmp_path / "live", tmp_path / "bare"):
        result = _cli("recon", "volumes", "--run", str(run), "--out", str(tmp_path / f"{run.name}.tif"))
        assert result.returncode == 0, result.stderr
        volumes, times = read_volumes(tmp_path / f"{run.name}.tif")
        assert volumes.shape == (4, 16, 16, 16)
        np.testing.assert_allclose(times, [0.0, 10.0, 20.0, 30.0])
        np.testing.assert_allclose(volumes[2], live.volume(20.0), rtol=1e-5, atol=1e-6)
    result = _cli("recon", "metrics", "--volumes", str(tmp_path / "live"), "--reference",
                  str(tmp_path / "bare.tif"), "--out", str(tmp_path / "m.csv"))
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "m.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and all(float(r["ssim"]) > 0.9999 for r in rows)

    result = _cli("recon", "train", "--session", str(session_dir), "--out", str(tmp_path / "live"),
                  "--steps", "4", "--eval-every", "2", "--threads", "1")
    assert result.returncode == 0, result.stderr
    assert "resumed at step 3" in result.stderr and "(2 new)" in result.stderr
    resumed = reconstructor_class("dipster").load(tmp_path / "live")
    assert resumed.steps_done == 7 and resumed.time_scale_s == 77.0
    assert [r["temperature_C"] for r in resumed.frame_records] == [21.5] * 4 + [None] * 2
    assert [r["dose_e_per_A2"] for r in resumed.frame_records] == [40.0] * 6

    # a new offline run takes the live time-scale rule: expected frames x first interval
    assert session_time_scale_s({"count": 20}, [0.0, 10.0, 20.0]) == 200.0
    assert session_time_scale_s({}, [3.0, 10.0, 20.0]) == 21.0  # endless scheme: recorded frames
    result = _cli("recon", "train", "--session", str(session_dir), "--out", str(tmp_path / "new"),
                  "--steps", "2", "--threads", "1")
    assert result.returncode == 0, result.stderr
    description = json.loads((tmp_path / "new" / RUN_FILE).read_text())
    assert description["method"] == "dipster" and description["time_scale_s"] == 60.0


@pytest.mark.timeout(200)
def test_by_default_a_tenth_of_the_frames_is_held_out_and_holdout_0_trains_on_all(tmp_path: Path) -> None:
    """Defaults (config/recon.toml): holdout 0.1 (frames 9 and 19 of 20, logged, best/ kept) and patience 16;
    ``--holdout 0`` trains on all 20 frames without best/ (the default patience then has no effect), and an
    explicit ``--patience`` without held-out frames is one line."""
    session = _session(tmp_path / "s", count=20)
    default = _cli("recon", "train", "--session", str(session), "--out", str(tmp_path / "default"), "--steps",
                   "20", "--eval-every", "10", "--threads", "1")
    assert default.returncode == 0, default.stderr
    assert "18 training + 2 held-out frames" in default.stderr
    description = json.loads((tmp_path / "default" / RUN_FILE).read_text())
    assert description["heldout_indices"] == [9, 19] and description["best"]["n_frames"] == 20
    assert "steps done; 20 steps this run" in default.stderr  # 2 evaluations: patience 16 cannot stop it
    # the steps ended it before patience 16 could: it says so, and where the least held-out error was
    best = RunDir(tmp_path / "default").best_record()
    assert ("recon train: the steps ran out before the held-out error levelled off (--patience 16 not reached; "
            f"its least at step {best.step} of 20)") in default.stderr
    assert (tmp_path / "default" / BEST_DIR / CHECKPOINT_FILE).is_file()

    everything = _cli("recon", "train", "--session", str(session), "--out", str(tmp_path / "all"), "--steps",
                      "20", "--eval-every", "10", "--threads", "1", "--holdout", "0")
    assert everything.returncode == 0, everything.stderr
    assert "20 training + 0 held-out frames" in everything.stderr
    assert json.loads((tmp_path / "all" / RUN_FILE).read_text())["heldout_indices"] == []
    assert not (tmp_path / "all" / BEST_DIR).exists()
    _one_line_error(_cli("recon", "train", "--session", str(session), "--out", str(tmp_path / "p"), "--holdout",
                         "0", "--patience", "3"), "--patience needs held-out frames")


@pytest.mark.timeout(120)
def test_a_budget_that_ends_while_the_held_out_error_falls_says_so(tmp_path: Path) -> None:
    """When the time budget ends a run before its held-out error levels off (patience not reached), one
    line says so, where its least error was, and how to train on (a run ended by its steps says so too:
    the test above)."""
    session = _session(tmp_path / "s", count=10)
    run = tmp_path / "run"
    proc = _cli("recon", "train", "--session", str(session), "--out", str(run), "--minutes", "0.05",
                "--eval-every", "10", "--threads", "1", "--holdout", "0.2", "--refit", "0")
    assert proc.returncode == 0, proc.stderr
    assert "time budget spent" in proc.stderr
    best, rows = RunDir(run).best_record(), RunDir(run).read_log()
    last_step = int(rows[-1]["step"])
    assert ("the budget ran out before the held-out error levelled off (--patience 16 not reached; its least "
            f"at step {best.step} of {last_step})") in proc.stderr



def test_more_workers_than_cpus_is_refused_before_any_rank_starts(tmp_path: Path) -> None:
    result = _cli("recon", "train", "--session", str(tmp_path / "s"), "--out", str(tmp_path / "r"),
                  "--workers", "999", "--device", "cpu")
    assert result.returncode == 2 and not (tmp_path / "r").exists()
    assert result.stderr.strip().startswith("tiltstream recon train: error: --workers 999 is more than this "
                                            "machine's ")
    assert result.stderr.strip().endswith("or add --force-workers") and "Traceback" not in result.stderr
