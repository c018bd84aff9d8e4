"""The viewer opens offscreen in a subprocess, draws every panel from a real stream, and grabs itself to PNG."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from skimage.io import imread

from tiltstream.live.viewer import PANELS
from tests.live.status_feed import StatusFeed


@pytest.mark.timeout(60)
def test_viewer_renders_every_panel_offscreen(tmp_path):
    """A ``tiltstream view --headless`` subprocess receives a loopback status stream, draws all twelve
    panels (panels.json lists what was drawn) and writes a PNG that is not blank (many distinct grey
    levels, not one flat colour)."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    with StatusFeed(finish_after_s=1.5) as feed:
        proc = subprocess.run(
            [sys.executable, "-m", "tiltstream", "view", "--connect", feed.endpoint, "--headless",
             "--snapshots", str(tmp_path), "--until-finished", "--timeout-s", "40"],
            env=env, capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr
    drawn = json.loads((tmp_path / "panels.json").read_text())
    assert sorted(drawn) == sorted(PANELS)
    image = imread(tmp_path / "latest.png")
    assert image.shape[0] >= 600 and image.shape[1] >= 800
    grey = image[..., :3].mean(axis=-1)
    assert grey.std() > 10
    assert len(np.unique(image[..., :3].reshape(-1, 3), axis=0)) > 50


@pytest.mark.timeout(60)
def test_viewer_skips_malformed_messages(tmp_path):
    """Wrong topic, bad JSON, wrong buffer size and a NaN reprojection on the stream are logged and
    skipped; the viewer still draws every panel and exits normally."""
    from tiltstream.live.status import encode_message, make_reprojection

    good = [bytes(p) for p in encode_message(make_reprojection("feed", 1, 0.0, 1.0, 1, np.ones((4, 4), np.float32),
                                                               np.ones((4, 4), np.float32)))]
    nan = np.full((2, 4, 4), np.nan, np.float32).tobytes()
    extra = [[b"bogus", b"{}", b""], [b"status", b"{not json", b""], [good[0], good[1], good[2][:-4]],
             [good[0], good[1], nan], [b"only-one-part"]]
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    with StatusFeed(finish_after_s=1.5, extra=extra) as feed:
        proc = subprocess.run(
            [sys.executable, "-m", "tiltstream", "view", "--connect", feed.endpoint, "--headless",
             "--snapshots", str(tmp_path), "--until-finished", "--timeout-s", "40"],
            env=env, capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr
    assert "skipped a malformed status message" in proc.stderr
    for reason in ("unknown status topic", "not UTF-8 JSON", "buffer has", "NaN", "3 parts"):
        assert reason in proc.stderr, reason
    assert sorted(json.loads((tmp_path / "panels.json").read_text())) == sorted(PANELS)
