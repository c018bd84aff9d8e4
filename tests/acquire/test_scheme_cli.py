"""``tiltstream scheme``: outputs equal the pure plan; bad values give one line on stderr and a non-zero exit."""

import csv
import io
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tiltstream.acquire.backlash import HolderLimits, plan_moves
from tiltstream.acquire.plan_summary import AcquisitionEstimate, summarize_plan
from tiltstream.acquire.scheme import TiltScheme, iter_targets
from tiltstream.acquire.scheme_cli import SchemeSettings
from tiltstream.cli import main

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args, env=None):
    """Run ``python -m tiltstream`` (the ``tiltstream`` entry point) in a subprocess."""
    return subprocess.run([sys.executable, "-m", "tiltstream", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=60)


def run_in_process(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def expected_moves(count, min_deg=-70.0, max_deg=70.0, backlash=2.0, start=0.0, start_index=0, kind="grs"):
    scheme = TiltScheme(kind=kind, min_deg=min_deg, max_deg=max_deg, count=count, start_index=start_index)
    return list(plan_moves(iter_targets(scheme), start, backlash, HolderLimits()))


def test_csv_equals_plan_moves():
    result = run_cli("scheme", "--count", "100", "--min", "-70", "--max", "70", "--backlash", "2", "--format", "csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert result.stdout.splitlines()[0] == "index,move,angle_deg"
    expected = expected_moves(100)
    assert len(rows) == len(expected)
    for row, move in zip(rows, expected):
        assert (int(row["index"]), row["move"]) == (move.index, move.kind)
        assert float(row["angle_deg"]) == pytest.approx(move.angle_deg, abs=1e-9)
    assert sum(row["move"] == "target" for row in rows) == 100
    assert len(result.stderr.splitlines()) == 1 and "100 frames" in result.stderr


@pytest.mark.parametrize("kind", ["grs", "incremental", "dose-symmetric"])
def test_csv_for_each_kind_and_a_start(capsys, kind):
    code, out, _ = run_in_process(capsys, "scheme", "--kind", kind, "--count", "20", "--min", "-30", "--max", "40",
                                  "--start-deg", "15.5", "--backlash", "1.5")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    expected = expected_moves(20, -30, 40, backlash=1.5, start=15.5, kind=kind)
    assert [(int(r["index"]), r["move"], float(r["angle_deg"])) for r in rows] == [
        (m.index, m.kind, m.angle_deg) for m in expected]  # repr round-trips exactly


def test_start_index_continues_the_full_plan(capsys):
    _, full_out, _ = run_in_process(capsys, "scheme", "--count", "40")
    full = list(csv.DictReader(io.StringIO(full_out)))
    stage_deg = [r for r in full if r["move"] == "target"][9]["angle_deg"]  # after frame 9
    code, out, _ = run_in_process(capsys, "scheme", "--count", "40", "--start-index", "10", "--start-deg", stage_deg)
    assert code == 0
    assert list(csv.DictReader(io.StringIO(out))) == [r for r in full if int(r["index"]) >= 10]


def test_json_has_moves_and_summary(capsys):
    code, out, _ = run_in_process(capsys, "scheme", "--count", "30", "--format", "json", "--tracking-s", "10",
                                  "--frame-dose-e-per-A2", "30")
    assert code == 0
    document = json.loads(out)
    moves = expected_moves(30)
    assert [(m["index"], m["move"], m["angle_deg"]) for m in document["moves"]] == [
        (m.index, m.kind, m.angle_deg) for m in moves]
    summary = summarize_plan(moves, 0.0, -70, 70, AcquisitionEstimate(tracking_s=10, frame_dose_e_per_A2=30))
    got = document["summary"]
    assert got["total_travel_deg"] == pytest.approx(summary.total_travel_deg, abs=1e-9)
    assert got["total_time_s"] == pytest.approx(summary.total_time_s, abs=1e-9)
    assert got["total_dose_e_per_A2"] == pytest.approx(30 * (30 + 20))
    assert len(got["frames"]) == 30
    assert [f["coverage_gap_deg"] for f in got["frames"]] == pytest.approx(
        [f.coverage_gap_deg for f in summary.frames], abs=1e-9)
    assert document["settings"]["count"] == 30 and document["settings"]["tracking_s"] == 10


def test_rawtlt_lists_the_targets(capsys, tmp_path):
    out_file = tmp_path / "plan.rawtlt"
    code, out, _ = run_in_process(capsys, "scheme", "--count", "25", "--format", "rawtlt", "--out", str(out_file))
    assert code == 0 and out == ""
    angles = [float(line) for line in out_file.read_text().splitlines()]
    assert angles == pytest.approx([m.angle_deg for m in expected_moves(25) if m.kind == "target"], abs=1e-9)


def test_serialem_script_moves_and_records(capsys):
    code, out, _ = run_in_process(capsys, "scheme", "--count", "12", "--format", "serialem")
    assert code == 0
    lines = [line for line in out.splitlines() if line and not line.startswith("#")]
    assert lines[0] == "MacroName tiltstream"
    moves = expected_moves(12)
    tilts = [float(line.split()[1]) for line in lines if line.startswith("TiltTo ")]
    assert tilts == pytest.approx([m.angle_deg for m in moves], abs=1e-9)
    # every target: TiltTo, Record, Save; a backlash TiltTo is followed by another TiltTo
    body = lines[1:]
    for position, line in enumerate(body):
        if line == "Record":
            assert body[position - 1].startswith("TiltTo ") and body[position + 1] == "Save"
    assert body.count("Record") == body.count("Save") == 12


def test_config_file_and_environment(tmp_path, capsys, monkeypatch):
    config = tmp_path / "my.toml"
    config.write_text("count = 7\nmin_deg = -50.0\nbacklash_deg = 0.0\n")
    monkeypatch.setenv("TILTSTREAM_MAX_DEG", "60")
    code, out, _ = run_in_process(capsys, "scheme", "--config", str(config), "--format", "rawtlt")
    assert code == 0
    angles = [float(line) for line in out.splitlines()]
    scheme = TiltScheme(min_deg=-50, max_deg=60, count=7)
    assert angles == pytest.approx([a for _, a in iter_targets(scheme)], abs=1e-9)


def test_default_file_equals_model_defaults():
    with open(REPO / "config" / "scheme.toml", "rb") as handle:
        values = tomllib.load(handle)
    defaults = SchemeSettings()
    for name, info in SchemeSettings.model_fields.items():
        if info.default is None:
            assert name not in values  # TOML has no null: a None default stays commented out
        else:
            assert values[name] == getattr(defaults, name), name
    assert set(values) <= set(SchemeSettings.model_fields)


@pytest.mark.parametrize("args, fragment", [
    (["--count", "0"], "count"),
    (["--count", "10", "--min", "70", "--max", "-70"], "must be below"),
    (["--count", "10", "--min", "20", "--max", "20"], "must be below"),
    (["--count", "10", "--backlash", "-1"], "backlash_deg"),
    (["--count", "10", "--min", "-79"], "min -79 deg minus backlash 2 deg = -81 deg is outside the holder limits"),
    (["--count", "10", "--min", "-85", "--backlash", "0"], "outside the holder limits"),
    (["--count", "10", "--format", "xml"], "format"),
    ([], "--count is missing"),
    (["--count", "ten"], "count"),
    (["--count", "10", "--start-deg", "95"], "start 95 deg"),
    (["--count", "10", "--kind", "dose-symmetric", "--min", "-9", "--max", "9"], "exceeds the 7"),
    (["--count", "10", "--start-index", "11"], "start_index 11"),
    (["--count", "10", "--config", "/nonexistent/scheme.toml"], "does not exist"),
    (["--count", "10", "--no-such-option"], "unrecognized arguments"),
])
def test_bad_values_exit_nonzero_with_one_line(args, fragment):
    result = run_cli("scheme", *args)
    assert result.returncode != 0
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert fragment in result.stderr
    assert result.stdout == ""


def test_bad_value_writes_no_file(tmp_path):
    out_file = tmp_path / "plan.csv"
    result = run_cli("scheme", "--count", "10", "--min", "-79", "--out", str(out_file))
    assert result.returncode != 0 and not out_file.exists()


def test_absurd_count_is_refused_at_once_saying_what_it_would_take(capsys):
    code, out, err = run_in_process(capsys, "scheme", "--count", "100000000")
    assert code != 0 and out == ""
    assert "--count 100000000" in err and "years" in err and "100000" in err and len(err.strip().splitlines()) == 1


def test_tracking_auto_takes_the_measured_overhead_and_no_tracking_dose(capsys):
    from tiltstream.acquire.plan_summary import AUTO_TRACKING_S

    results = {}
    for tracking in ("manual", "auto"):
        code, out, _ = run_in_process(capsys, "scheme", "--count", "10", "--format", "json", "--tracking", tracking)
        assert code == 0
        results[tracking] = json.loads(out)["summary"]
    manual, auto = results["manual"], results["auto"]
    assert manual["total_time_s"] - auto["total_time_s"] == pytest.approx(10 * (28.0 - AUTO_TRACKING_S))
    assert manual["total_dose_e_per_A2"] - auto["total_dose_e_per_A2"] == pytest.approx(10 * 20.0)
