"""Where the specimen sits in a frame: the centre of mass of its thresholded image, relative to the frame centre.

For a HAADF frame (signal proportional to projected mass) the centre of mass of the specimen is the
projection of its 3-D centre of mass, so it follows the eucentric model ``x0 + z sin(alpha)`` across any
angle gap, where a cross-correlation of projections far apart in angle is biased. A specimen cut off by
the frame edge biases it towards the centre: that axis is not measured.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

THRESHOLD_FRACTION = 0.2  # of the smoothed peak contrast: what counts as specimen
SMOOTHING_PX = 1.0  # Gaussian standard deviation against shot noise, pixels


def specimen_offset_px(frame: np.ndarray) -> tuple[float, float]:
    """The specimen's centre of mass relative to the frame centre (x, y), pixels; NaN on an axis it is cut off.

    The contrast ``|frame - median|`` (bright or dark specimens), smoothed, above
    :data:`THRESHOLD_FRACTION` of its maximum is the specimen; its contrast-weighted centroid is returned.
    An axis along which the specimen touches the frame edge, or a frame with no contrast, gives NaN.

    Parameters
    ----------
    frame
        (ny, nx) image.
    """
    image = np.asarray(frame, dtype=np.float64)
    contrast = ndimage.gaussian_filter(np.abs(image - np.median(image)), SMOOTHING_PX)
    peak = float(contrast.max()) if contrast.size else 0.0
    if not peak > 0:
        return math.nan, math.nan
    weights = np.where(contrast > THRESHOLD_FRACTION * peak, contrast, 0.0)
    mask = weights > 0
    total = float(weights.sum())
    ys, xs = np.indices(image.shape, dtype=np.float64)
    centre_y, centre_x = (image.shape[0] - 1) / 2.0, (image.shape[1] - 1) / 2.0
    x_px = float((weights * xs).sum() / total) - centre_x
    y_px = float((weights * ys).sum() / total) - centre_y
    if mask[:, 0].any() or mask[:, -1].any():
        x_px = math.nan
    if mask[0, :].any() or mask[-1, :].any():
        y_px = math.nan
    return x_px, y_px
