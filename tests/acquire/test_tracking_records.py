"""The tracking record round-trips through frames.jsonl, old sessions still read, and recon can align by it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from tiltstream.acquire.session import SessionSettings, SessionWriter, StagePosition, TrackingRecord, read_session
from tiltstream.acquire.stream import FrameHeader
from tiltstream.recon.preprocess import PreprocessConfig, apply, recorded_shifts_px


def _blob(shift_xy: tuple[float, float]) -> np.ndarray:
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float64)
    return np.exp(-((xx - 15.5 - shift_xy[0]) ** 2 + (yy - 15.5 - shift_xy[1]) ** 2) / 18.0).astype(np.float32)


def _write(path: Path, shifts_xy: list[tuple[float, float] | None]) -> None:
    writer = SessionWriter.create(path, SessionSettings(pixel_size_nm=2.0))
    for index, shift in enumerate(shifts_xy):
        tracking = TrackingRecord(mode="previous", reference=index - 1 if index else None, shift_px=shift,
                                  shift_nm=None if shift is None else (2 * shift[0], 2 * shift[1]),
                                  peak_quality=0.1 if shift is None else 0.97, lost=shift is None,
                                  image_shift_m=(1e-9 * index, -2e-9), defocus_m=-3e-9 * index)
        writer.append(_blob(shift or (0.0, 0.0)), index=index, target_deg=10.0 * index, angle_deg=10.0 * index,
                      time_s=float(index), exposure_s=0.1, dose_e_per_A2=1.0,
                      stage=StagePosition(x=1e-9 * index), tracking=tracking)


def test_tracking_records_round_trip_and_reach_the_stream_header(tmp_path: Path) -> None:
    shifts = [(0.0, 0.0), (3.25, -1.5), None]
    _write(tmp_path / "s", shifts)
    records = read_session(tmp_path / "s").records
    assert [r.tracking.shift_px for r in records] == shifts
    assert records[1].tracking.shift_nm == (6.5, -3.0) and records[1].tracking.image_shift_m == (1e-9, -2e-9)
    assert records[2].tracking.lost and records[2].tracking.defocus_m == pytest.approx(-6e-9)
    assert records[2].stage.x == pytest.approx(2e-9)
    header = FrameHeader.from_record(records[1], "s")
    assert header.tracking == records[1].tracking
    np.testing.assert_allclose(recorded_shifts_px(records), [[0, 0], [3.25, -1.5], [np.nan, np.nan]])


def test_sessions_without_tracking_still_read_and_have_no_recorded_shifts(tmp_path: Path) -> None:
    writer = SessionWriter.create(tmp_path / "old", SessionSettings())
    writer.append(_blob((0, 0)), index=0, target_deg=0.0, angle_deg=0.0, time_s=0.0, exposure_s=0.1,
                  dose_e_per_A2=1.0)
    line = (tmp_path / "old" / "frames.jsonl").read_text()
    assert "tracking" not in json.loads(line)
    records = read_session(tmp_path / "old").records
    assert records[0].tracking is None and recorded_shifts_px(records) is None


def test_preprocess_aligns_by_the_recorded_shifts(tmp_path: Path) -> None:
    shifts = [(0.0, 0.0), (3.25, -1.5), (-2.0, 4.0), None]
    _write(tmp_path / "s", shifts)
    session = read_session(tmp_path / "s")
    frames = session.load_frames()
    config = PreprocessConfig(subtract_background=False, mask_otsu_fraction=None, normalise=False, centre=False,
                              align_from="recorded")
    aligned, report = apply(frames, session.angles_deg, config, recorded_shifts_px(session.records))
    for frame in aligned[:3]:
        assert ndimage.center_of_mass(frame) == pytest.approx((15.5, 15.5), abs=0.05)
    assert report["steps"] == ["align_recorded"] and report["align_unshifted_lost"] == [3]
    with pytest.raises(Exception, match="align_from = recorded needs"):
        apply(frames, session.angles_deg, config, None)
