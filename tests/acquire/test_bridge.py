"""BridgeMicroscope against the real ``temscript-server --null`` (PyPI) over HTTP on loopback."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tiltstream.acquire.bridge import BridgeError, BridgeMicroscope, RetryPolicy, parse_bridge_url
from tiltstream.errors import UserError
from tiltstream.acquire.microscope import AcquisitionParams, Microscope
from tests.acquire.conftest import free_port

pytestmark = pytest.mark.timeout(60)


def test_null_server_stage_beam_and_limits(null_server: str) -> None:
    """NullMicroscope's alpha range is +-pi/6 rad = +-30 deg (temscript 2.1 null_microscope.py)."""
    scope = BridgeMicroscope(null_server, timeout_s=5)
    assert isinstance(scope, Microscope)
    low, high = scope.alpha_limits_deg()
    assert low == pytest.approx(-30.0, abs=1e-9) and high == pytest.approx(30.0, abs=1e-9)
    scope.move_alpha_deg(12.345)
    assert scope.alpha_deg() == pytest.approx(12.345, abs=1e-9)
    assert scope.stage_status() == "READY"
    scope.set_beam_blanked(True)
    assert scope.beam_blanked() is True
    scope.set_beam_blanked(False)
    assert scope.beam_blanked() is False
    assert scope.stage_position().z == 0.0


def test_null_server_offers_ccd_camera_and_acquires_its_dtype(null_server: str) -> None:
    """The null server has no STEM detector; its CCD is 2048 px, binned 8 and QUARTER -> 64 x 64 int16."""
    scope = BridgeMicroscope(null_server, timeout_s=5)
    detectors = scope.detectors()
    assert {name: info.kind for name, info in detectors.items()} == {"CCD": "camera"}
    actual = scope.set_acquisition_params("CCD", AcquisitionParams(image_size="QUARTER", binning=8,
                                                                    exposure_s=0.01))
    assert actual == AcquisitionParams(image_size="QUARTER", binning=8, exposure_s=0.01)
    image = scope.acquire("CCD")
    assert image.shape == (64, 64) and image.dtype == np.int16


def test_unknown_detector_is_one_line_user_error(null_server: str) -> None:
    scope = BridgeMicroscope(null_server, timeout_s=5)
    with pytest.raises(UserError, match=r"detector 'HAADF' is not offered .* available: CCD"):
        scope.acquire("HAADF")


def test_unreachable_bridge_is_retried_then_one_line() -> None:
    waits: list[float] = []
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(BridgeError, match="cannot reach the microscope bridge") as info:
        BridgeMicroscope(url, timeout_s=1, retry=RetryPolicy(attempts=4, backoff_s=0.1, max_backoff_s=0.3),
                         sleep=waits.append)
    assert "\n" not in str(info.value)
    assert waits == [0.1, 0.2, 0.3]


@pytest.mark.parametrize("url", ["127.0.0.1:8080", "http://host", "ftp://h:1", "http://h:1/v1"])
def test_bad_bridge_url(url: str) -> None:
    with pytest.raises(UserError, match="http://HOST:PORT"):
        parse_bridge_url(url)


def test_radians_on_the_wire(recording_null_server) -> None:
    """The recording server sees radians: 20 deg arrives as pi/9."""
    url, moves = recording_null_server
    BridgeMicroscope(url, timeout_s=5).move_alpha_deg(20.0)
    import json
    sent = [json.loads(line) for line in moves.read_text().splitlines()]
    assert sent == [{"pos": {"a": pytest.approx(math.pi / 9, abs=1e-15)}, "method": "GO", "speed": None}]
