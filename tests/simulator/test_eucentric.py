"""Eucentric height, image shift, stage x/y/z and probe defocus act on what the simulator images (over HTTP)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from tiltstream.simulator.faults import FaultInjector, apply_fault_spec
from tiltstream.errors import UserError
from tests.simulator.conftest import served

pytestmark = pytest.mark.timeout(60)
PIXEL_NM = 0.5


def _centroid_xy(image: np.ndarray) -> np.ndarray:
    cy, cx = ndimage.center_of_mass(np.clip(image, 0, None))
    return np.array([cx, cy])


def test_default_keeps_todays_frames(manual_microscope) -> None:
    plain = manual_microscope()
    explicit = manual_microscope(eucentric_offset_nm=0.0)
    for sim in (plain, explicit):
        sim.set_stage_position({"a": math.radians(40.0)})
    np.testing.assert_array_equal(plain.acquire("HAADF")["HAADF"], explicit.acquire("HAADF")["HAADF"])
    assert plain.frames[-1].displacement_m == (0.0, 0.0) and plain.frames[-1].blur_px == 0.0


def test_tilt_moves_the_image_by_z_sin_alpha_and_image_shift_cancels_it(manual_microscope) -> None:
    z_nm, alpha_deg = 2.0, 50.0  # 2 nm above the axis: 1.53 nm = 3.06 px at 50 deg
    reference = manual_microscope(pixel_size_nm=PIXEL_NM)
    sim = manual_microscope(pixel_size_nm=PIXEL_NM, eucentric_offset_nm=z_nm)
    expected_px = z_nm * math.sin(math.radians(alpha_deg)) / PIXEL_NM
    with served(reference) as ref_remote, served(sim) as remote:
        for r in (ref_remote, remote):
            r.set_stage_position({"a": math.radians(alpha_deg)})
        centred = _centroid_xy(ref_remote.acquire("HAADF")["HAADF"])
        moved = _centroid_xy(remote.acquire("HAADF")["HAADF"])
        assert moved[0] - centred[0] == pytest.approx(expected_px, abs=0.05)
        assert moved[1] - centred[1] == pytest.approx(0.0, abs=0.05)
        remote.set_image_shift([-z_nm * 1e-9 * math.sin(math.radians(alpha_deg)), 1e-9])
        assert remote.get_image_shift() == pytest.approx([-z_nm * 1e-9 * math.sin(math.radians(alpha_deg)), 1e-9])
        corrected = _centroid_xy(remote.acquire("HAADF")["HAADF"])
        assert corrected - centred == pytest.approx([0.0, 1.0 / PIXEL_NM], abs=0.05)
        remote.set_image_shift([0.0, 0.0])
        remote.set_stage_position({"x": -1e-9})  # the stage moves the specimen like image shift does
        assert _centroid_xy(remote.acquire("HAADF")["HAADF"])[0] - moved[0] == pytest.approx(-2.0, abs=0.05)


def test_height_change_blurs_and_probe_defocus_or_stage_z_refocuses(manual_microscope) -> None:
    z_nm, alpha_deg = 400.0, 60.0  # height change -200 nm; 10 mrad -> 2 nm = 4 px blur
    sim = manual_microscope(pixel_size_nm=PIXEL_NM, eucentric_offset_nm=z_nm)
    height_m = z_nm * 1e-9 * (math.cos(math.radians(alpha_deg)) - 1.0)
    with served(sim) as remote:
        remote.set_stage_position({"a": math.radians(alpha_deg)})
        remote.set_image_shift([-z_nm * 1e-9 * math.sin(math.radians(alpha_deg)), 0.0])
        blurred = remote.acquire("HAADF")["HAADF"]
        assert sim.frames[-1].blur_px > 3.9
        assert sim.frames[-1].blur_px == pytest.approx(abs(height_m) * 0.01 / (PIXEL_NM * 1e-9), rel=1e-9)
        remote.set_probe_defocus(height_m)
        assert remote.get_probe_defocus() == pytest.approx(height_m)
        sharp = remote.acquire("HAADF")["HAADF"]
        assert sim.frames[-1].blur_px == pytest.approx(0.0, abs=1e-9)
        remote.set_probe_defocus(0.0)
        remote.set_stage_position({"z": -height_m})
        remote.acquire("HAADF")
        assert sim.frames[-1].blur_px == pytest.approx(0.0, abs=1e-9)
    gradient = lambda image: float(np.mean(np.hypot(*np.gradient(image))))  # noqa: E731
    assert gradient(sharp) > 1.5 * gradient(blurred)


def test_fault_specs_arm_the_injector_and_bad_ones_are_one_line() -> None:
    injector = FaultInjector()
    assert "3" in apply_fault_spec(injector, "acquire:error:3")
    assert [injector.take("acquire").kind for _ in range(4)] == ["error"] * 3 + [None]
    apply_fault_spec(injector, "stage_position:drop")
    assert injector.take("stage_position").kind == "drop"
    apply_fault_spec(injector, "*:delay:0.25")
    assert injector.take("beam_blanked").delay_s == 0.25
    for bad in ("acquire", "acquire:explode", "acquire:error:0", "acquire:error:1.5", ":error"):
        with pytest.raises(UserError, match="--fault"):
            apply_fault_spec(injector, bad)


def test_sim_serve_refuses_a_bad_fault_spec_in_one_line_before_the_setup(capsys) -> None:
    from tiltstream.cli import main

    assert main(["sim", "serve", "--port", "0", "--fault", "acquire:explode"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ENDPOINT:KIND[:N]" in err[0]
