"""The tilt axis found without hands (recon/tilt_axis.py) and ``recon align`` (recon/align_cli.py): simulated
sessions rotated by known in-plane angles with shifted axes (the real HAADF-STEM needle's axis:
tests/recon/test_real_data.py, where ``--preprocess real``'s preparation finds it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from tiltstream.acquire.session import SessionWriter, read_session
from tiltstream.cli import main
from tiltstream.recon.tilt_axis import find_tilt_axis, to_axis_frames
from tiltstream.simulator.tiltseries import write_synthetic_session


PAD_PX = 8  # room around the 32^2 frames so the rotation keeps the specimen


@pytest.fixture(scope="module")
def nanorod(tmp_path_factory) -> tuple[np.ndarray, np.ndarray, Path]:
    path = write_synthetic_session(tmp_path_factory.mktemp("sim") / "s", "nanorod", 32, 40, noise="none")
    session = read_session(path)
    return session.load_frames(), session.angles_deg, path


def rotated(frames: np.ndarray, rotation_deg: float, offset_px: float) -> tuple[np.ndarray, float]:
    """Frames rotated by scipy (its positive angle turns the y axis to 90 - rotation_deg in tilt_axis.py's
    convention) and moved by ``offset_px`` along the axis's normal; returns them and the true direction."""
    padded = np.pad(frames, ((0, 0), (PAD_PX, PAD_PX), (PAD_PX, PAD_PX)))
    turned = ndimage.rotate(padded, rotation_deg, axes=(2, 1), reshape=False, order=3)
    psi = np.deg2rad(90.0 - rotation_deg)
    normal_x, normal_y = np.sin(psi), -np.cos(psi)
    return ndimage.shift(turned, (0.0, offset_px * normal_y, offset_px * normal_x), order=3), 90.0 - rotation_deg


def _errors(found, true_deg: float, offset_px: float) -> tuple[float, float]:
    """Direction error (mod 180) and offset error; a direction 180 deg away flips the offset's sign."""
    turn = (found.axis_deg - true_deg + 90.0) % 360.0 - 90.0  # in [-90, 270)
    flipped = turn > 90.0
    angle_error = turn - 180.0 if flipped else turn
    return abs(angle_error), abs((-found.offset_px if flipped else found.offset_px) - offset_px)


@pytest.mark.parametrize("rotation_deg, offset_px", [(-12.0, 1.3), (3.0, -2.2), (27.0, 0.7), (85.0, 2.5)])
def test_estimated_axis_of_a_rotated_series(nanorod, rotation_deg, offset_px):
    frames, angles, _ = nanorod
    turned, true_deg = rotated(frames, rotation_deg, offset_px)
    found = find_tilt_axis(turned, angles)
    angle_error, offset_error = _errors(found, true_deg, offset_px)
    print(f"rotation {rotation_deg} deg, offset {offset_px} px: found {found.axis_deg:.3f} deg "
          f"(error {angle_error:.3f} deg), offset {found.offset_px:.3f} px (error {offset_error:.3f} px), "
          f"contrast {found.angle_contrast:.3f}, rise {found.residual_rise_1deg:.4f}")
    assert angle_error <= 0.5 and offset_error <= 0.5
    assert found.angle_contrast > 0.9 and found.residual < found.residual_untouched


def test_upright_resampling_is_the_identity_for_the_project_geometry(nanorod):
    frames = nanorod[0]
    np.testing.assert_allclose(to_axis_frames(frames, 90.0, 0.0), frames, atol=1e-4)
    assert to_axis_frames(frames[:, :, :24], 0.0).shape == (len(frames), 24, 32)  # axis along x: shape swaps


def _session_with_axis(path: Path, frames: np.ndarray, source: Path, tilt_axis_deg: float) -> Path:
    settings = read_session(source).settings.model_copy(
        update={"tilt_axis_deg": tilt_axis_deg, "tilt_axis_from": "the test's rotation"})
    writer = SessionWriter.create(path, settings)
    for frame, record in zip(frames, read_session(source).records):
        writer.append(frame.astype(np.float32), **record.model_dump(exclude={"file", "shape", "dtype", "tracking"}))
    return path


def test_recon_align_takes_the_metadata_axis_and_records_it(nanorod, tmp_path):
    frames, _, source = nanorod
    turned, true_deg = rotated(frames, 90.0, 0.0)  # axis along the rows: IMOD's rotation -90 ... or +90
    session = _session_with_axis(tmp_path / "in", turned, source, tilt_axis_deg=true_deg - 90.0)
    assert main(["recon", "align", "--session", str(session), "--out", str(tmp_path / "out"), "--rounds", "2"]) == 0
    out = read_session(tmp_path / "out")
    record = json.loads((tmp_path / "out" / "session.json").read_text())["aligned"]
    assert record["tilt_axis_from"].startswith("session metadata") and record["angle_contrast"] is None
    assert out.settings.model_extra["tilt_axis_deg"] == 0.0
    assert abs(record["offset_px"]) < 0.5
    matching = record["projection_matching"]["rounds"]
    assert len(matching[0]["residual"]) == len(frames) and len(matching[-1]["shift_px"]) == len(frames)
    centre = slice(PAD_PX, PAD_PX + 32)
    error = np.sqrt(np.mean((out.load_frames()[:, centre, centre] - frames) ** 2)) / frames.std()
    assert error < 0.08, error  # upright again: the input frames up to two resamplings (relative RMS; 0.063)


def test_train_preprocess_real_finds_the_geometry_itself(nanorod, tmp_path):
    """One command after import: ``recon train --preprocess real`` on a session rotated 27 deg with its axis
    0.7 px off centre and no tilt-axis metadata estimates the axis, registers the frames and records both in
    run.json; on a session ``recon align`` wrote, it does not align again."""
    frames, _, source = nanorod
    turned, true_deg = rotated(frames, 27.0, 0.7)
    session = _session_with_axis(tmp_path / "in", turned, source, tilt_axis_deg=0.0)
    settings = json.loads((session / "session.json").read_text())
    del settings["tilt_axis_deg"], settings["tilt_axis_from"]  # nothing known: estimated
    (session / "session.json").write_text(json.dumps(settings))
    train = ["recon", "train", "--steps", "2", "--threads", "1", "--preprocess", "real"]
    assert main([*train, "--session", str(session), "--out", str(tmp_path / "run")]) == 0
    report = json.loads((tmp_path / "run" / "run.json").read_text())["preprocess"]
    assert report["steps"] == ["subtract_background", "geometry", "normalise"]
    geometry = report["geometry"]
    assert geometry["tilt_axis_from"].startswith("estimated")
    assert abs(geometry["tilt_axis_deg"] - (true_deg - 90.0)) <= 0.5, geometry["tilt_axis_deg"]
    assert abs(geometry["offset_px"] - 0.7) <= 0.5, geometry["offset_px"]
    assert len(geometry["projection_matching"]["rounds"][-1]["shift_px"]) == len(frames)

    assert main(["recon", "align", "--session", str(session), "--out", str(tmp_path / "aligned"), "--rounds", "1"]) == 0
    assert main([*train, "--session", str(tmp_path / "aligned"), "--out", str(tmp_path / "run2")]) == 0
    report = json.loads((tmp_path / "run2" / "run.json").read_text())["preprocess"]
    assert report["steps"] == ["subtract_background", "normalise"] and report["geometry"].startswith("skipped")


@pytest.mark.parametrize("argv, message", [
    (["--rounds", "-1"], "rounds"), (["--tilt-axis-deg", "abc"], "tilt_axis_deg"), ([], "already exists")])
def test_recon_align_bad_input_is_one_line(nanorod, tmp_path, capsys, argv, message):
    out = nanorod[2] if message == "already exists" else tmp_path / "out"
    assert main(["recon", "align", "--session", str(nanorod[2]), "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
