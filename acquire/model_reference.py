"""Whether a frame is measured against the live model's reprojection, and the count of when it was not.

``tiltstream acquire --track model`` asks the live process for its reprojection at each frame's angle
(:class:`tiltstream.acquire.model_link.ModelLink`) and uses it as the tracking reference only when the model
is good enough:

- it answered in time with an image (else ``timeout`` or ``not ready``);
- its prediction error on this very frame, which the model has not trained on (a held-out frame), is at
  most ``max_error_percent`` (else ``quality``): the RMS of the frame minus the reprojection, moved onto
  the frame and fitted to it with one scale and offset, over the RMS of the frame
  (:func:`fitted_error_percent`). Scale and offset are fitted because tracking needs the specimen's
  shape, not its intensity, which a young model has not learned yet (docs/benchmarks/tracking.md: the
  live process's raw recent error was 100-760 % over frames whose correlation peaks were 0.94-0.98);
- the frame's correlation peak against the reprojection is at least ``peak_ratio`` times its peak
  against the previous frame nearest in angle (cosine-stretched, as :class:`tiltstream.acquire.tracking.Tracker`
  measures it; else ``quality``). A good model's peak on noise-free frames is a little below a close
  neighbour's (0.90 against 0.99 for a SIRT model), on noisy ones above it (the model has no noise).

Otherwise the frame is measured against the previous frames. The first fallback is said once (a log
warning naming the frame and why); :meth:`ModelReference.summary` counts all of them for the session's
summary line.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Protocol

import numpy as np
from scipy import ndimage

from tiltstream.acquire.model_link import ModelAnswer
from tiltstream.acquire.tracking import Tracker, cosine_stretch, specimen_centre_x_px
from tiltstream.registration import register

log = logging.getLogger(__name__)

MAX_ERROR_PERCENT = 60.0  # default: a model predicting the new frame worse than this (scale-free) is not used
PEAK_RATIO = 0.8  # default: the least fraction of the previous frame's correlation peak the model's must reach


def fitted_error_percent(frame: np.ndarray, reprojection: np.ndarray, shift_px: tuple[float, float]) -> float:
    """Prediction error of ``reprojection`` for ``frame``, both (ny, nx), free of scale and offset, percent.

    The reprojection is moved by ``shift_px`` ((y, x): where the frame's content sits relative to it, as
    :func:`tiltstream.registration.register` returns it), fitted to the frame by least squares with one
    scale and one offset, and the RMS of the remainder over the frame's RMS is returned (100 % for a
    reprojection that explains nothing but the frame's mean and its mean is 0).
    """
    frame = np.asarray(frame, dtype=np.float64)
    moved = ndimage.shift(np.asarray(reprojection, dtype=np.float64), shift_px, order=1, mode="nearest")
    design = np.stack([moved.ravel(), np.ones(moved.size)], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, frame.ravel(), rcond=None)
    remainder = frame.ravel() - design @ coefficients
    return 100.0 * float(np.sqrt(np.mean(remainder ** 2)) / max(np.sqrt(np.mean(frame ** 2)), 1e-12))


class ModelSource(Protocol):
    """Anything that answers like :class:`tiltstream.acquire.model_link.ModelLink`."""

    def answer(self, angle_deg: float, time_s: float | None = None) -> ModelAnswer: ...


class ModelReference:
    """Picks the model's reprojection as a frame's reference when it is good enough (module docstring).

    Parameters
    ----------
    source
        The live model (``answer(angle_deg, time_s)``).
    max_error_percent
        Largest scale-free prediction error of the reprojection for the frame (:func:`fitted_error_percent`)
        for it to be used, percent.
    peak_ratio
        Least fraction of the previous frame's correlation peak the model's must reach.
    """

    def __init__(self, source: ModelSource, max_error_percent: float = MAX_ERROR_PERCENT,
                 peak_ratio: float = PEAK_RATIO) -> None:
        self.source = source
        self.max_error_percent = float(max_error_percent)
        self.peak_ratio = float(peak_ratio)
        self.used = 0
        self.fallbacks: Counter[str] = Counter()  # why -> frames

    def reference(self, index: int, alpha_deg: float, frame: np.ndarray, time_s: float | None,
                  tracker: Tracker) -> np.ndarray | None:
        """The model's reprojection to measure frame ``index`` against, or None (measure against the
        previous frames; the fallback is counted)."""
        answer = self.source.answer(alpha_deg, time_s)
        if answer.image is None:
            why = "timeout" if answer.reason == "timeout" else "not ready"
            return self._fall_back(index, why, "no answer in time" if why == "timeout" else
                                   f"the model is not ready: {answer.reason}")
        if answer.image.shape != frame.shape:
            return self._fall_back(index, "quality", f"the reprojection is {answer.image.shape}, the frame "
                                   f"{frame.shape}")
        found = register(answer.image, frame, tracker.max_shift_px)
        error_percent = fitted_error_percent(frame, answer.image, found.shift_px)
        if error_percent > self.max_error_percent:
            return self._fall_back(index, "quality", f"the model predicts this frame with a {error_percent:.0f} % "
                                   f"error (not below {self.max_error_percent:.0f} %)")
        model_peak = found.peak_quality
        previous_peak = self._previous_peak(alpha_deg, frame, tracker)
        if previous_peak is not None and model_peak < self.peak_ratio * previous_peak:
            return self._fall_back(index, "quality", f"its correlation peak {model_peak:.2f} is below the "
                                   f"previous frame's {previous_peak:.2f}")
        self.used += 1
        return answer.image

    @staticmethod
    def _previous_peak(alpha_deg: float, frame: np.ndarray, tracker: Tracker) -> float | None:
        """The frame's correlation peak against the trusted frame nearest in angle (None before one)."""
        known = [o for o in tracker.observations if o.trusted and o.frame.shape == frame.shape]
        if not known:
            return None
        nearest = min(known, key=lambda o: abs(o.alpha_deg - alpha_deg))
        stretched = cosine_stretch(nearest.frame, nearest.alpha_deg, alpha_deg, specimen_centre_x_px(nearest.frame))
        return register(stretched, frame, tracker.max_shift_px).peak_quality

    def _fall_back(self, index: int, why: str, detail: str) -> None:
        if not self.fallbacks:
            log.warning("tracking: frame %d is measured against the previous frames, not the model: %s (later "
                        "fallbacks are counted in the summary)", index, detail)
        log.debug("frame %d: previous-frame reference: %s", index, detail)
        self.fallbacks[why] += 1
        return None

    def summary(self) -> str:
        """The model's share of the frames in words, e.g. ``tracking against the model on 27 of 30 frames;
        previous on 3 (not ready 2, quality 1)``."""
        fell = sum(self.fallbacks.values())
        text = f"tracking against the model on {self.used} of {self.used + fell} frames"
        if fell:
            reasons = ", ".join(f"{why} {n}" for why, n in sorted(self.fallbacks.items()))
            text += f"; previous on {fell} ({reasons})"
        return text
