"""The live intake keeps each frame's tracking record and aligns tracked frames to the first one."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage

from tiltstream.progress import ProgressLine
from tiltstream.acquire.session import read_session
from tiltstream.live.intake import FrameIntake
from tiltstream.recon.preprocess import PreprocessConfig, apply, recorded_shifts_px
from tiltstream.live.settings import LiveSettings
from tests.live.test_tracking_panel import FRAMES, _record_tracked_session


@pytest.fixture(scope="module")
def tracked_session(tmp_path_factory):
    path = tmp_path_factory.mktemp("intake") / "session"
    _record_tracked_session(path)
    return path


def _intake(session, start_index: int, **settings) -> FrameIntake:
    return FrameIntake(LiveSettings(connect="tcp://127.0.0.1:1", session=session, **settings), start_index,
                       ProgressLine())


@pytest.mark.timeout(60)
def test_a_resumed_intake_knows_the_tracking_of_the_frames_before_it_and_aligns_the_new_ones(tracked_session):
    """Resumed at frame 5: frames 0-4's tracking comes from frames.jsonl, frames 5-9 arrive by catch-up with
    theirs; each tracked frame is queued shifted by minus its measured shift (cubic spline, as
    tiltstream.recon.preprocess align_from = recorded), the lost frame 9 unshifted; the latest frame says tracking
    lost the specimen."""
    session = read_session(tracked_session)
    intake = _intake(tracked_session, 5)
    try:
        assert sorted(intake.tracking) == [0, 1, 2, 3, 4]
        deadline = time.monotonic() + 20
        while len(intake.pending) < FRAMES - 5 and time.monotonic() < deadline:
            intake.poll(0.1, set(), 5)
        assert [p.header.index for p in intake.pending] == list(range(5, FRAMES))
        assert sorted(intake.tracking) == list(range(FRAMES))
        for item in intake.pending:
            record = session.records[item.header.index]
            assert intake.tracking[record.index] == record.tracking
            frame = session.load_frame(record).astype(np.float32)
            if record.tracking.lost:
                np.testing.assert_array_equal(item.frame, frame)
            else:
                x_px, y_px = record.tracking.shift_px
                expected = ndimage.shift(frame, (-y_px, -x_px), order=3, mode="constant", cval=0.0)
                np.testing.assert_allclose(item.frame, expected, rtol=1e-6, atol=1e-6)
        assert max(abs(s) for s in session.records[5].tracking.shift_px) > 0.05  # the shift is not trivial
        # the one recorded-shift alignment: recon train --preprocess with align_from = recorded agrees
        records = [session.records[p.header.index] for p in intake.pending]
        offline, _ = apply(np.stack([session.load_frame(r) for r in records]), np.array([r.angle_deg for r in records]),
                           PreprocessConfig(subtract_background=False, mask_otsu_fraction=None, normalise=False,
                                            centre=False, align_from="recorded"), recorded_shifts_px(records))
        np.testing.assert_allclose(np.stack([p.frame for p in intake.pending]), offline, rtol=1e-6, atol=1e-5)
        text, lost = intake.latest_tracking()
        assert lost and text.startswith("tracking lost the specimen at frame 9")
    finally:
        intake.close()


@pytest.mark.timeout(60)
def test_align_tracked_off_queues_the_frames_as_recorded(tracked_session):
    session = read_session(tracked_session)
    intake = _intake(tracked_session, 0, align_tracked=False)
    try:
        deadline = time.monotonic() + 20
        while len(intake.pending) < FRAMES and time.monotonic() < deadline:
            intake.poll(0.1, set(), 0)
        for item in intake.pending:
            np.testing.assert_array_equal(item.frame, session.load_frame(session.records[item.header.index]))
        assert intake.latest_tracking()[1] is True
    finally:
        intake.close()
