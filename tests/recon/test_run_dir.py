"""The run directory's one owner of run.json: the typed description reads what earlier versions wrote and
writes it back unchanged; every method is saved and opened the same way."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest

from tiltstream.errors import UserError
from tiltstream.recon.precision import Speed
from tiltstream.recon.reconstructor import METHODS, reconstructor_class
from tiltstream.recon.run_dir import RUN_FILE, BestRecord, RunDescription, RunDir, open_reconstructor
from tiltstream.recon.sirt_reconstructor import SirtReconstructor

OLD_RUN_JSON = {  # as recon train wrote run.json before the description was typed, plus a key it never wrote
    "method": "dipster", "session": "/data/s", "created": "2026-12-01T10:00:00+00:00", "preset": "fast",
    "config": {"lr": 0.001, "ema_decay": 0.99}, "seed": 0, "frame_shape": [16, 16], "time_scale_s": 240,
    "heldout_indices": [4, 9], "device": "cpu", "session_frame_shape": [16, 16], "preprocess": None, "ranks": 1,
    "best": {"step": 40, "heldout_rmse_percent": 3.5, "n_frames": 10},
    "stopper": {"best": 3.5, "since_best": 1},
    "refit": {"from_step": 40, "steps": 8, "n_frames": 10}, "operator": "a key of another version",
}


def test_an_old_run_json_reads_and_writes_back_unchanged(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    (tmp_path / RUN_FILE).write_text(json.dumps(OLD_RUN_JSON))
    description = run.read()
    assert description.best == BestRecord(step=40, heldout_rmse_percent=3.5, n_frames=10)
    assert description.time_scale_s == 240.0 and description.method == "dipster"
    run.write(description)
    assert json.loads((tmp_path / RUN_FILE).read_text()) == OLD_RUN_JSON


def test_a_missing_run_json_is_an_empty_dipster_description(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.method() == "dipster" and run.read().to_json() == {} and not run.exists()
    run.update(method="sirt")
    assert json.loads((tmp_path / RUN_FILE).read_text()) == {"method": "sirt"}


def test_update_keeps_other_fields_drops_cleared_records_and_skips_no_change(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.create(RunDescription(method="dipster", session="s"))
    run.update(best=BestRecord(step=1, heldout_rmse_percent=2.0, n_frames=3))
    inode = (tmp_path / RUN_FILE).stat().st_ino
    run.update(session="s")  # no change: not rewritten
    assert (tmp_path / RUN_FILE).stat().st_ino == inode
    run.update(best=None)
    assert json.loads((tmp_path / RUN_FILE).read_text()) == {"method": "dipster", "session": "s"}


@pytest.mark.parametrize("text", ["{", '{"heldout_indices": "all"}'])
def test_an_unreadable_run_json_is_one_clear_error(tmp_path: Path, text: str) -> None:
    (tmp_path / RUN_FILE).write_text(text)
    with pytest.raises(UserError, match="run.json: not readable"):
        RunDir(tmp_path).read()


def test_every_method_declares_its_state_file_and_loads_the_same_way() -> None:
    classes = [reconstructor_class(method) for method in METHODS]
    assert len({cls.STATE_FILE for cls in classes}) == len(classes)
    assert {tuple(inspect.signature(cls.load).parameters) for cls in classes} == {
        ("run_dir", "device", "precision", "compile_model")}


def test_a_sirt_run_opens_through_the_common_path_whatever_the_speed(tmp_path: Path) -> None:
    rec = SirtReconstructor((4, 4), window=2, iterations=2)
    rec.add_frame(0, np.ones((4, 4), np.float32), 0.0, 0.0)
    rec.train()
    rec.save(tmp_path)
    run = RunDir(tmp_path)
    assert run.has_state() and (tmp_path / SirtReconstructor.STATE_FILE).is_file()
    assert run.read().sirt is not None and run.method() == "sirt"
    opened = open_reconstructor(tmp_path, speed=Speed("bf16", True))
    assert isinstance(opened, SirtReconstructor)
    np.testing.assert_array_equal(opened.volume(0.0), rec.volume(0.0))
