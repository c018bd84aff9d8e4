"""SirtReconstructor: the moving-window SIRT baseline behind the Reconstructor protocol."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tiltstream.errors import UserError
from tiltstream.acquire.session import read_session
from tiltstream.recon.projector import ParallelProjector
from tiltstream.recon.reconstructor import Reconstructor, reconstructor_class
from tiltstream.recon.run_dir import RUN_FILE
from tiltstream.recon.sirt import moving_window_sirt
from tiltstream.recon.sirt_reconstructor import SirtReconstructor
from tiltstream.simulator.tiltseries import write_synthetic_session

SIZE, FRAMES, WINDOW, ITERATIONS = 16, 12, 4, 10


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """A noiseless 16^3 nanorod session of 12 GRS frames (seed 0)."""
    path = write_synthetic_session(tmp_path_factory.mktemp("sirt") / "session", "nanorod", SIZE, FRAMES,
                                   noise="none", seed=0, seconds_per_step=2.0)
    recorded = read_session(path)
    return recorded, recorded.load_frames()


def _filled(session, **kwargs) -> SirtReconstructor:
    recorded, frames = session
    rec = SirtReconstructor(frames.shape[1:], window=WINDOW, iterations=ITERATIONS, **kwargs)
    for record, frame in zip(recorded.records, frames):
        rec.add_frame(record.index, frame, record.angle_deg, record.time_s,
                      metadata={"dose_e_per_A2": record.dose_e_per_A2, "temperature_C": record.temperature_C})
    return rec


def test_registered_and_satisfies_the_protocol():
    assert reconstructor_class("sirt") is SirtReconstructor
    assert isinstance(SirtReconstructor((4, 4)), Reconstructor)


def test_equals_moving_window_sirt(session):
    """Frames added one at a time with training in between (as the live process does) give, once every
    stale window is recomputed, the volumes of tiltstream.recon.sirt.moving_window_sirt (non-negative, cold start)
    at every frame time, to 1e-5."""
    recorded, frames = session
    rec = SirtReconstructor(frames.shape[1:], window=WINDOW, iterations=ITERATIONS)
    for record, frame in zip(recorded.records, frames):
        rec.add_frame(record.index, frame, record.angle_deg, record.time_s)
        rec.train(steps=2)
    rec.train()
    assert rec.stale_windows == 0
    expected = moving_window_sirt(frames, recorded.angles_deg, (SIZE, SIZE, SIZE), window=WINDOW,
                                  iterations=ITERATIONS, nonnegative=True)
    for i, t in enumerate(recorded.times_s):
        np.testing.assert_allclose(rec.volume(t), expected[i], rtol=1e-5, atol=1e-5)
    assert expected.min() >= 0.0
    # the nearest frame in time decides: 0.9 s after frame 3 (2 s apart) is still frame 3's window
    np.testing.assert_allclose(rec.volume(recorded.times_s[3] + 0.9), expected[3], rtol=1e-5, atol=1e-5)


def test_train_counts_windows_and_recomputes_only_stale_ones(session):
    """A new last frame makes the last window//2 + 1 windows stale (here 3); a second train() does nothing."""
    rec = _filled(session)
    assert rec.train() < 0.05  # relative squared residual of noiseless windows
    assert rec.steps_done == FRAMES and rec.stale_windows == 0
    assert np.isnan(rec.train()) and rec.steps_done == FRAMES
    recorded, frames = session
    rec.add_frame(99, frames[0], 10.0, 100.0)
    assert rec.stale_windows == WINDOW // 2 + 1
    rec.train(steps=1)
    assert rec.steps_done == FRAMES + 1 and rec.stale_windows == WINDOW // 2


def test_reproject_projects_the_window_volume(session):
    recorded, _ = session
    rec = _filled(session)
    rec.train()
    t = recorded.times_s[5]
    expected = ParallelProjector([33.0], (SIZE, SIZE, SIZE))(rec.volume(t))[0]
    np.testing.assert_allclose(rec.reproject(t, 33.0), expected, rtol=1e-6, atol=1e-6)


def test_save_load_round_trip(session, tmp_path):
    """Save half-trained, load, finish: equal to finishing without the round trip; records and metadata
    (dose, temperature) survive; run.json says method sirt and keeps what was there."""
    (tmp_path / RUN_FILE).write_text(json.dumps({"session": "s"}))
    rec = _filled(session)
    rec.add_frame(50, session[1][0], 0.0, 1.0, held_out=True)
    rec.train(steps=5)
    rec.save(tmp_path)
    loaded = SirtReconstructor.load(tmp_path)
    assert json.loads((tmp_path / RUN_FILE).read_text())["method"] == "sirt"
    assert json.loads((tmp_path / RUN_FILE).read_text())["session"] == "s"
    assert loaded.frame_records == rec.frame_records
    assert loaded.frame_records[0]["dose_e_per_A2"] == session[0].records[0].dose_e_per_A2
    assert loaded.frame_records[-1]["held_out"] is True
    assert (loaded.steps_done, loaded.stale_windows) == (5, FRAMES - 5)
    rec.train()
    loaded.train()
    assert loaded.loss_history == rec.loss_history
    for t in session[0].times_s:
        np.testing.assert_array_equal(loaded.volume(t), rec.volume(t))


def test_bad_input_is_one_line(tmp_path):
    rec = SirtReconstructor((4, 4))
    with pytest.raises(UserError, match="shape"):
        rec.add_frame(0, np.ones((3, 4)), 0.0, 0.0)
    rec.add_frame(0, np.ones((4, 4)), 0.0, 0.0)
    with pytest.raises(UserError, match="already added"):
        rec.add_frame(0, np.ones((4, 4)), 0.0, 0.0)
    with pytest.raises(UserError, match="no SIRT reconstruction"):
        SirtReconstructor.load(tmp_path)


def test_heldout_frames_are_left_out_and_measured(session):
    """A held-out frame is in no window; its reprojection error on this noiseless session is small
    (measured 11.0 %, SSIM 0.99; required < 15 %) against 100 % for an all-zero prediction."""
    recorded, frames = session
    rec = SirtReconstructor(frames.shape[1:], window=WINDOW, iterations=ITERATIONS)
    for record, frame in zip(recorded.records, frames):
        rec.add_frame(record.index, frame, record.angle_deg, record.time_s, held_out=record.index == 6)
    assert rec.stale_windows == FRAMES - 1
    rec.train()
    metrics = rec.heldout_metrics()
    assert 0 < metrics["heldout_rmse_percent"] < 15.0 and metrics["heldout_ssim"] > 0.5
    assert SirtReconstructor((4, 4)).heldout_metrics() is None
