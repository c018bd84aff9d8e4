"""When a frame is measured against the model's reprojection, and how the fallbacks are said and counted."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from tiltstream.acquire.model_link import ModelAnswer
from tiltstream.acquire.model_reference import ModelReference, fitted_error_percent
from tiltstream.acquire.tracking import Tracker


def _blob(shift_x: float = 0.0) -> np.ndarray:
    y, x = np.mgrid[:32, :32]
    return np.exp(-((x - 16 - shift_x) ** 2 + (y - 16) ** 2) / 20.0).astype(np.float32)


class Answers:
    """A model source that gives the queued answers in order."""

    def __init__(self, *answers: ModelAnswer) -> None:
        self.answers = list(answers)

    def answer(self, angle_deg: float, time_s: float | None = None) -> ModelAnswer:
        return self.answers.pop(0)


def test_good_model_is_used_and_fallbacks_are_counted_and_said_once(caplog) -> None:
    """No answer, a model not ready and one that predicts the frame with an error above the threshold fall
    back (one warning, the first); a good model's reprojection (of another scale and offset) is the
    reference; the summary counts each. The peak test is off here (ratio 0): the error alone rejects."""
    tracker = Tracker(pixel_size_nm=1.0)
    tracker.measure(0, 0.0, _blob(), (0.0, 0.0))
    noise = np.random.default_rng(1).normal(size=(32, 32)).astype(np.float32)
    source = Answers(ModelAnswer(None, reason="timeout"), ModelAnswer(None, reason="no training chunk done yet"),
                     ModelAnswer(noise, step=25), ModelAnswer(4.0 * _blob() + 2.0, step=50, error_percent=300.0))
    reference = ModelReference(source, max_error_percent=60.0, peak_ratio=0.0)
    with caplog.at_level(logging.WARNING, logger="tiltstream.acquire.model_reference"):
        picks = [reference.reference(i, 5.0 * i, _blob(1.0), None, tracker) for i in range(1, 5)]
    assert [p is not None for p in picks] == [False, False, False, True]
    assert len(caplog.records) == 1 and "frame 1" in caplog.text and "no answer in time" in caplog.text
    assert reference.summary() == ("tracking against the model on 1 of 4 frames; previous on 3 "
                                   "(not ready 1, quality 1, timeout 1)")


@pytest.mark.parametrize("ratio, used", [(0.8, False), (0.0, True)])
def test_model_whose_peak_falls_below_the_previous_frames_is_not_used(ratio: float, used: bool) -> None:
    """A reprojection that correlates far worse with the frame than the previous frame does is not used
    (the error test is off here: the peak alone rejects)."""
    tracker = Tracker(pixel_size_nm=1.0)
    tracker.measure(0, 0.0, _blob(), (0.0, 0.0))
    noise = np.random.default_rng(0).normal(size=(32, 32)).astype(np.float32)
    reference = ModelReference(Answers(ModelAnswer(noise, step=1)), max_error_percent=1e9, peak_ratio=ratio)
    assert (reference.reference(1, 2.0, _blob(0.5), None, tracker) is not None) is used
    assert reference.fallbacks == ({} if used else {"quality": 1})


def test_fitted_error_is_free_of_scale_and_offset() -> None:
    """The frame's own content at another scale and offset, moved onto it, predicts it to < 1 %; noise
    predicts nothing of a positive blob (about 100 %); a wrong shift costs."""
    frame = _blob(1.0)
    assert fitted_error_percent(frame, 3.0 * _blob() + 5.0, (0.0, 1.0)) < 1.0
    assert fitted_error_percent(frame, 3.0 * _blob() + 5.0, (0.0, -3.0)) > 30.0
    noise = np.random.default_rng(0).normal(size=(32, 32))
    assert 80.0 < fitted_error_percent(frame, noise, (0.0, 0.0)) <= 100.0
