"""Preprocessing of experimental tilt series (the paper's Methods), each step optional, driven by a config.

Order of the steps (docs/method.md 7, "Experimental preprocessing"):

1. ``bin_factor``: block-average binning (divided by the factor: line integrals in the new voxel units).
2. ``high_tilt_correction`` (alloying samples): the background (pixels below the frame's Otsu threshold)
   mean and variance are fitted as ``a + b / cos(theta)`` on frames with ``|theta| < fit_max_deg``; each
   frame at or beyond that angle is mapped affinely so its background mean and standard deviation equal
   the fit's. Done before anything that changes the background.
3. ``subtract_background``: subtract each frame's median.
4. ``mask_otsu_fraction``: set pixels below ``fraction * Otsu threshold`` to zero.
5. ``normalise``: each frame to unit standard deviation and a common mean (the mean over frames of
   ``mean / std``), i.e. ``(f - mean_f) / std_f + common``. With ``geometry`` it runs last, after it: a
   scale per frame makes the frames inconsistent with any one volume, and the tilt-axis search judges a
   candidate axis by that consistency (a nanorod rotated 27 deg was found 15 deg off on normalised frames).
6. ``align``: cross-correlation alignment (:func:`tiltstream.registration.register`, subpixel, the
   registration acquisition's tracking uses): frames are chained in angle order from the frame nearest 0
   deg, each registered to its neighbour in angle (so compared frames differ by a small tilt); the shifts
   add up along the chain and every frame is resampled once (cubic spline). With ``align_from = "recorded"``
   the shifts are instead the ones tracking recorded during acquisition (``frames.jsonl``
   ``tracking.shift_px``, :func:`recorded_shifts_px`), converted by :func:`recorded_alignment_px` as in the
   live process: no re-alignment; frames whose tracking lost the specimen are left unshifted and listed in
   the report.
7. ``centre``: shift every frame so the centre of mass of the averaged series lies at the image centre
   (``(n - 1) / 2``).
8. ``crop_shape``: centred crop to ``(ny, nx)``.
9. ``rescale_shape``: resize to ``(ny, nx)`` (the paper: 128 x 128), scaling values by the new/old
   width so frames stay line integrals in the new (larger) voxel units; or ``fit_size``: resize (aspect
   kept, the same value scaling) only frames whose larger side exceeds it, so that side becomes it.
10. ``geometry``: the tilt axis (metadata, else estimated) and projection matching, as ``recon align``
    does (:mod:`tiltstream.recon.series_alignment`), on the frames as the steps above left them (resized:
    cheaper); skipped for a session that ``recon align`` wrote.

:func:`real_data_config` is ``recon train --preprocess real``: the paper's pipeline for experimental
frames straight from ``recon import`` (README, "Real data").

:func:`apply` returns the frames and a JSON-ready report of what each step did (shifts, fits, scales),
which a run directory records next to the config.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pydantic
from scipy import ndimage

from tiltstream.errors import UserError
from tiltstream.registration import register


class PreprocessConfig(pydantic.BaseModel):
    """Which preprocessing steps run, and their parameters (defaults: the paper's pipeline)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    bin_factor: int = pydantic.Field(default=1, ge=1, description="block-average binning factor, pixels (1: off)")
    high_tilt_correction: bool = pydantic.Field(
        default=False, description="rescale high-tilt frames to the 1/cos(theta) background fit (alloying samples)")
    fit_max_deg: float = pydantic.Field(
        default=60.0, gt=0, lt=90, description="frames below this |tilt| fit the 1/cos law; others are rescaled, degrees")
    subtract_background: bool = pydantic.Field(default=True, description="subtract each frame's median")
    mask_otsu_fraction: float | None = pydantic.Field(
        default=0.9, gt=0, description="zero pixels below this fraction of the frame's Otsu threshold (None: off)")
    normalise: bool = pydantic.Field(default=True, description="unit standard deviation and a common mean per frame")
    align: bool = pydantic.Field(default=True, description="cross-correlation alignment, chained in angle order")
    align_from: Literal["correlation", "recorded"] = pydantic.Field(
        default="correlation", description="align by cross-correlation, or by the shifts tracking recorded "
        "during acquisition (acquire --track)")
    centre: bool = pydantic.Field(default=True, description="centre of mass of the averaged series to the image centre")
    crop_shape: tuple[int, int] | None = pydantic.Field(
        default=None, description="centred crop (ny, nx), pixels (None: off)")
    rescale_shape: tuple[int, int] | None = pydantic.Field(
        default=None, description="resize to (ny, nx), pixels, e.g. (128, 128) (None: off)")
    fit_size: int | None = pydantic.Field(
        default=None, ge=2, description="resize frames whose larger side exceeds this many pixels so that "
        "side is this long, aspect kept (after the crop; not with rescale_shape; None: off)")
    geometry: bool = pydantic.Field(
        default=False, description="last: find the tilt axis and register every frame by projection matching "
        "(recon align with its defaults, tiltstream.recon.series_alignment), unless recon align wrote the session")

    @pydantic.model_validator(mode="after")
    def _one_resize(self) -> PreprocessConfig:
        if self.fit_size is not None and self.rescale_shape is not None:
            raise ValueError("give rescale_shape or fit_size, not both")
        return self


REAL_DATA_SIZE = 128  # the paper's frame side for its experimental series, pixels


def real_data_config() -> PreprocessConfig:
    """``--preprocess real``: median background, frames larger than the paper's 128 pixels resized to it
    (aspect kept), the geometry (tilt axis and projection matching, as ``recon align`` does; skipped where
    ``recon align`` wrote the session), then per-frame normalisation.

    No Otsu mask, unlike the paper: drawn frame by frame, it zeroes a different set of pixels in each
    frame, and no volume reprojects to that. On the real needle (docs/benchmarks/real_data.md) every
    method's held-out error rose from about 3 % to 7.5-8 % with it, and no reconstruction beat the
    neighbour floor on the sparse split. No cross-correlation alignment of step 6 and no centring: the
    geometry step's projection matching registers the frames and puts the tilt axis at the image centre;
    step 6's chain of pairwise shifts would add up errors over the series, and centring the mass would
    move the axis off the centre.
    """
    return PreprocessConfig(mask_otsu_fraction=None, align=False, centre=False, fit_size=REAL_DATA_SIZE,
                            geometry=True)


def _check(frames: np.ndarray, angles_deg: np.ndarray) -> None:
    if frames.ndim != 3 or min(frames.shape) < 1:
        raise UserError(f"frames must have shape (n, ny, nx); got {frames.shape}")
    if angles_deg.shape != (frames.shape[0],):
        raise UserError(f"angles_deg must have one angle per frame ({frames.shape[0]}); got {angles_deg.shape}")
    if not np.all(np.isfinite(frames)):
        bad = sorted({int(i) for i in np.argwhere(~np.isfinite(frames))[:, 0]})
        raise UserError(f"frames {bad[:10]} hold NaN or infinite values; drop or repair them first")
    if not np.all(np.isfinite(angles_deg)) or np.any(np.abs(angles_deg) >= 90):
        raise UserError("angles_deg must be finite and within (-90, 90) degrees")


def bin_frames(frames: np.ndarray, factor: int) -> np.ndarray:
    """Block mean over ``factor x factor`` pixels, divided by ``factor`` (edges that do not fill a block are dropped).

    Like :func:`rescale`: frames stay line integrals in the new voxel units (voxels ``factor`` times larger).
    """
    n, ny, nx = frames.shape
    if factor > min(ny, nx):
        raise UserError(f"bin_factor {factor} exceeds the frame size {ny}x{nx}")
    ny, nx = ny // factor * factor, nx // factor * factor
    blocks = frames[:, :ny, :nx].reshape(n, ny // factor, factor, nx // factor, factor)
    return blocks.mean(axis=(2, 4)) / factor


def _otsu(frame: np.ndarray) -> float:
    from skimage.filters import threshold_otsu

    return float(threshold_otsu(frame)) if frame.max() > frame.min() else float(frame.max())


def correct_high_tilt(frames: np.ndarray, angles_deg: np.ndarray, fit_max_deg: float) -> tuple[np.ndarray, dict]:
    """Map frames at ``|theta| >= fit_max_deg`` onto the 1/cos background law fitted below it."""
    inv_cos = 1.0 / np.cos(np.deg2rad(angles_deg))
    backgrounds = [frame[frame <= _otsu(frame)] for frame in frames]
    means = np.array([b.mean() for b in backgrounds])
    variances = np.array([b.var() for b in backgrounds])
    fit = np.abs(angles_deg) < fit_max_deg
    if fit.sum() < 2 or np.ptp(inv_cos[fit]) == 0:
        raise UserError(f"the high-tilt correction needs frames at two or more distinct angles below "
                        f"{fit_max_deg} deg; got {int(fit.sum())}")
    design = np.stack([np.ones(fit.sum()), inv_cos[fit]], axis=1)
    mean_coef = np.linalg.lstsq(design, means[fit], rcond=None)[0]
    var_coef = np.linalg.lstsq(design, variances[fit], rcond=None)[0]
    out = frames.copy()
    scales = np.ones(len(frames))
    for i in np.flatnonzero(~fit):
        target_mean = mean_coef[0] + mean_coef[1] * inv_cos[i]
        target_std = np.sqrt(max(var_coef[0] + var_coef[1] * inv_cos[i], 0.0))
        std = np.sqrt(variances[i])
        scales[i] = target_std / std if std > 0 else 1.0
        out[i] = (frames[i] - means[i]) * scales[i] + target_mean
    report = {"mean_fit": mean_coef.tolist(), "variance_fit": var_coef.tolist(),
              "rescaled_frames": np.flatnonzero(~fit).tolist(), "scales": scales.tolist()}
    return out, report


def alignment_shifts(frames: np.ndarray, angles_deg: np.ndarray) -> np.ndarray:
    """Shifts (n, 2) in pixels (dy, dx) that register every frame to the frame nearest 0 deg.

    Frames are visited in angle order outward from the one nearest 0 deg; each is registered to its
    neighbour in angle (raw frames, no resampling), and the pairwise shifts add up along the chain.
    """
    order = np.argsort(angles_deg, kind="stable")
    start = int(np.argmin(np.abs(angles_deg[order])))
    shifts = np.zeros((len(frames), 2))
    for direction in (1, -1):
        prev = int(order[start])
        position = start + direction
        while 0 <= position < len(order):
            index = int(order[position])
            shifts[index] = shifts[prev] - np.asarray(register(frames[prev], frames[index]).shift_px)
            prev = index
            position += direction
    return shifts


def recorded_shifts_px(records: Sequence[Any]) -> np.ndarray | None:
    """The specimen shifts tracking recorded, (n, 2) pixels (x, y) in record order; NaN where tracking lost
    it; None when no record has tracking (``records``: :class:`tiltstream.acquire.session.FrameRecord`)."""
    if not any(getattr(r, "tracking", None) is not None for r in records):
        return None
    return np.array([r.tracking.shift_px if r.tracking is not None and r.tracking.shift_px is not None
                     else (np.nan, np.nan) for r in records], dtype=np.float64)


def centre_of_mass_shift(frames: np.ndarray) -> np.ndarray:
    """Shift (dy, dx), pixels, that moves the centre of mass of the averaged series to the image centre."""
    mean = frames.mean(axis=0)
    weights = np.clip(mean - mean.min(), 0, None)
    if weights.sum() == 0:
        return np.zeros(2)
    com = np.array(ndimage.center_of_mass(weights))
    return (np.array(mean.shape) - 1) / 2.0 - com


def shifted(frame: np.ndarray, shift_px: np.ndarray) -> np.ndarray:
    """``frame`` (ny, nx) moved by ``shift_px`` (dy, dx), pixels: cubic spline, zeros shifted in; the frame
    itself when the shift is zero."""
    return ndimage.shift(frame, shift_px, order=3, mode="constant", cval=0.0) if np.any(shift_px) else frame


def recorded_alignment_px(shift_px: tuple[float, float] | None, bin_factor: int = 1) -> np.ndarray:
    """The shift (dy, dx), pixels, that aligns a frame whose tracking recorded the specimen shift ``shift_px``.

    The one recorded-shift alignment (``align_from = "recorded"`` here, ``align_tracked`` in the live
    process): minus the recorded shift, in numpy's axis order, in pixels of a frame binned by
    ``bin_factor``; zero where tracking lost the specimen.

    Parameters
    ----------
    shift_px
        A record's ``tracking.shift_px``, (x, y) pixels of the recorded frame (None or NaN: lost).
    bin_factor
        The binning applied to the frame since it was recorded.
    """
    if shift_px is None:
        return np.zeros(2)
    x_px, y_px = np.nan_to_num(np.asarray(shift_px, dtype=np.float64))
    return np.array([-y_px, -x_px]) / bin_factor


def aligned_to_recorded(frame: np.ndarray, shift_px: tuple[float, float] | None) -> np.ndarray:
    """A float ``frame`` (ny, nx) aligned by its recorded specimen shift (:func:`recorded_alignment_px`);
    the frame itself when tracking lost the specimen."""
    return shifted(frame, recorded_alignment_px(shift_px))


def _shift_all(frames: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    return np.stack([shifted(f, s) for f, s in zip(frames, shifts)])


def crop_centre(frames: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Centred crop of every frame to ``shape`` (ny, nx)."""
    ny, nx = frames.shape[1:]
    if shape[0] > ny or shape[1] > nx or min(shape) < 1:
        raise UserError(f"crop_shape {tuple(shape)} must be positive and fit in the frames ({ny}, {nx})")
    y0, x0 = (ny - shape[0]) // 2, (nx - shape[1]) // 2
    return frames[:, y0:y0 + shape[0], x0:x0 + shape[1]]


def rescale(frames: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize every frame to ``shape``; values scaled by new/old width: line integrals in the new voxel units.

    A frame is a line integral in voxel units; with voxels ``k`` times larger, the same path is ``k``
    times fewer voxels long, so a reconstruction of the rescaled frames keeps the same voxel values.
    """
    from skimage.transform import resize

    if min(shape) < 1:
        raise UserError(f"rescale_shape {tuple(shape)} must be positive")
    factor = shape[1] / frames.shape[2]
    return np.stack([resize(f, shape, order=1, anti_aliasing=True, preserve_range=True) for f in frames]) * factor


def fitted_shape(shape: tuple[int, int], size: int) -> tuple[int, int]:
    """``shape`` (ny, nx) scaled so its larger side is ``size`` (aspect kept, rounded); unchanged when it
    already fits."""
    factor = size / max(shape)
    if factor >= 1:
        return (int(shape[0]), int(shape[1]))
    return (max(1, round(shape[0] * factor)), max(1, round(shape[1] * factor)))


def _align(frames: np.ndarray, angles: np.ndarray, config: PreprocessConfig, recorded_shifts: np.ndarray | None,
           report: dict[str, Any]) -> np.ndarray:
    """The alignment step of :func:`apply`: by the recorded tracking shifts or by cross-correlation."""
    if config.align_from == "recorded":
        if recorded_shifts is None or np.shape(recorded_shifts) != (len(frames), 2):
            raise UserError("align_from = recorded needs a session acquired with tracking on (acquire --track "
                            "previous|model); this one has no recorded shifts: use align_from = correlation")
        lost = np.flatnonzero(~np.all(np.isfinite(recorded_shifts), axis=1))
        shifts = np.array([recorded_alignment_px(s, config.bin_factor) for s in recorded_shifts])
        report["align_unshifted_lost"] = lost.tolist()
        report["steps"].append("align_recorded")
    else:
        shifts = alignment_shifts(frames, angles)
        report["steps"].append("align")
    report["align_shifts_px"] = shifts.tolist()
    return _shift_all(frames, shifts)


def apply(frames: np.ndarray, angles_deg: np.ndarray, config: PreprocessConfig,
          recorded_shifts: np.ndarray | None = None, session_extra: Mapping[str, Any] | None = None,
          log: Callable[[str], None] = print) -> tuple[np.ndarray, dict[str, Any]]:
    """Run the configured steps, in the module's order.

    Parameters
    ----------
    frames
        Tilt series (n, ny, nx), any real dtype, in acquisition order.
    angles_deg
        Tilt angle of each frame, degrees, shape (n,).
    config
        Which steps run.
    recorded_shifts
        For ``align_from = "recorded"``: :func:`recorded_shifts_px` of the session, (n, 2) pixels (x, y).
    session_extra
        For ``geometry``: the session's extra ``session.json`` fields (``tilt_axis_deg`` from the
        metadata; ``aligned`` when ``recon align`` wrote the session, which skips the step).
    log
        For ``geometry``: where its progress lines go.

    Returns
    -------
    frames : np.ndarray
        (n, ny', nx') float32, same order.
    report : dict
        JSON-ready: the config, the steps run, and per step what it did (shifts in pixels, fits, scales).
    """
    frames = np.asarray(frames, dtype=np.float64)
    angles = np.asarray(angles_deg, dtype=np.float64).reshape(-1)
    _check(frames, angles)
    report: dict[str, Any] = {"config": config.model_dump(mode="json"), "steps": [],
                              "input_shape": list(frames.shape)}
    if config.bin_factor > 1:
        frames = bin_frames(frames, config.bin_factor)
        report["steps"].append("bin")
    if config.high_tilt_correction:
        frames, report["high_tilt"] = correct_high_tilt(frames, angles, config.fit_max_deg)
        report["steps"].append("high_tilt_correction")
    if config.subtract_background:
        medians = np.median(frames, axis=(1, 2))
        frames = frames - medians[:, None, None]
        report["background_medians"] = medians.tolist()
        report["steps"].append("subtract_background")
    if config.mask_otsu_fraction is not None:
        thresholds = np.array([_otsu(f) * config.mask_otsu_fraction for f in frames])
        frames = np.where(frames < thresholds[:, None, None], 0.0, frames)
        report["mask_thresholds"] = thresholds.tolist()
        report["steps"].append("mask")
    if config.normalise and not config.geometry:
        frames = _normalise(frames, report)
    if config.align:
        frames = _align(frames, angles, config, recorded_shifts, report)
    if config.centre:
        shift = centre_of_mass_shift(frames)
        frames = _shift_all(frames, np.broadcast_to(shift, (len(frames), 2)))
        report["centre_shift_px"] = shift.tolist()
        report["steps"].append("centre")
    if config.crop_shape is not None:
        frames = crop_centre(frames, config.crop_shape)
        report["steps"].append("crop")
    if config.rescale_shape is not None:
        frames = rescale(frames, config.rescale_shape)
        report["steps"].append("rescale")
    elif config.fit_size is not None and fitted_shape(frames.shape[1:], config.fit_size) != frames.shape[1:]:
        frames = rescale(frames, fitted_shape(frames.shape[1:], config.fit_size))
        report["steps"].append("rescale")
    if config.geometry:
        frames = _geometry(frames, angles, dict(session_extra or {}), report, log)
        if config.normalise:
            frames = _normalise(frames, report)
    report["output_shape"] = list(frames.shape)
    return frames.astype(np.float32), report


def _normalise(frames: np.ndarray, report: dict[str, Any]) -> np.ndarray:
    means, stds = frames.mean(axis=(1, 2)), frames.std(axis=(1, 2))
    if np.any(stds == 0):
        raise UserError(f"frames {np.flatnonzero(stds == 0)[:10].tolist()} are constant; cannot normalise")
    common = float(np.mean(means / stds))
    report["normalise"] = {"common_mean": common, "stds": stds.tolist()}
    report["steps"].append("normalise")
    return (frames - means[:, None, None]) / stds[:, None, None] + common


def _geometry(frames: np.ndarray, angles: np.ndarray, session_extra: dict[str, Any], report: dict[str, Any],
              log: Callable[[str], None]) -> np.ndarray:
    from tiltstream.recon.series_alignment import AlignSettings, align_frames, is_aligned

    if is_aligned(session_extra):
        report["geometry"] = "skipped: the session's frames were aligned already (session.json 'aligned')"
        return frames
    if len(frames) < 3:
        raise UserError(f"the tilt axis needs at least 3 frames; the session holds {len(frames)}")
    frames, report["geometry"] = align_frames(frames, angles, AlignSettings(), session_extra, log=log)
    report["steps"].append("geometry")
    return frames
