"""Reconstruction quality and physical measurements of the paper (Methods), inside Otsu masks.

RMSE (Eq. 8) and SSIM (Eq. 9) in two readings each (:func:`rmse_percent` / :func:`ssim` inside the
mask; :func:`rmse_paper` / :func:`ssim_paper`, the measurement behind the paper's headline figures),
surface/volume, volume redistribution and the alloying degree (Eq. 10), per volume and per series
against a reference (:func:`metrics_table`), and the one reprojection error of held-out frames, live
reprojections and reports (:func:`reprojection_error_percent`). How each is computed, and the choices
made where the paper is loose: docs/method.md 5.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from scipy import ndimage

from tiltstream.errors import UserError


def _check_pair(rec: np.ndarray, ref: np.ndarray) -> None:
    if rec.shape != ref.shape:
        raise UserError(f"reconstruction shape {rec.shape} differs from reference shape {ref.shape}")
    for name, arr in (("reconstruction", rec), ("reference", ref)):
        if not np.all(np.isfinite(arr)):
            raise UserError(f"the {name} holds NaN or infinite values")


def otsu_mask(volume: np.ndarray) -> np.ndarray:
    """Voxels above Otsu's threshold (bool, same shape); all False for a constant volume."""
    from skimage.filters import threshold_otsu

    volume = np.asarray(volume, dtype=np.float32)
    if volume.size == 0 or float(volume.max()) == float(volume.min()):
        return np.zeros(volume.shape, dtype=bool)
    return volume > threshold_otsu(volume)


def particle_mask(volume: np.ndarray) -> np.ndarray:
    """Otsu mask dilated once (6-connected): the region where the paper measures intensity spread."""
    return ndimage.binary_dilation(otsu_mask(volume))


def _comparison_mask(rec: np.ndarray, ref: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    if mask is None:
        mask = otsu_mask(ref) | otsu_mask(rec)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != ref.shape:
        raise UserError(f"mask shape {mask.shape} differs from volume shape {ref.shape}")
    return mask


def _data_range(ref: np.ndarray) -> float:
    value = float(ref.max() - ref.min())
    if value <= 0:
        raise UserError("the reference volume is constant; RMSE and SSIM need a reference with contrast")
    return value


def rmse_percent(rec: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    """RMSE of ``rec`` against ``ref`` inside ``mask``, percent of the reference's range (Eq. 8).

    Parameters
    ----------
    rec, ref
        Volumes of one shape (any dimensionality), same units.
    mask
        Bool array of that shape; the union of both Otsu masks by default.
    """
    rec = np.asarray(rec, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    _check_pair(rec, ref)
    mask = _comparison_mask(rec, ref, mask)
    if not mask.any():
        return 0.0
    diff = rec[mask] - ref[mask]
    return float(100.0 * np.sqrt(np.mean(diff * diff)) / _data_range(ref))


def rmse_paper(rec: np.ndarray, ref: np.ndarray, rec_mask: np.ndarray | None = None) -> float:
    """The paper's Eq. 8, percent of the reference's range: ``100 * mean(|rec * otsu(rec) - ref|)`` over
    the whole volume (a mean absolute difference, whatever its name; see the module docstring).
    ``rec_mask``: ``otsu_mask(rec)`` where the caller already has it."""
    rec = np.asarray(rec, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    _check_pair(rec, ref)
    rec_mask = otsu_mask(rec) if rec_mask is None else rec_mask
    return float(100.0 * np.mean(np.abs(rec * rec_mask - ref)) / _data_range(ref))


def ssim(rec: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    """SSIM (scikit-image, data_range of the reference) averaged over ``mask`` (default: Otsu union)."""
    from skimage.metrics import structural_similarity

    rec = np.asarray(rec, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    _check_pair(rec, ref)
    if min(ref.shape) < 7:
        raise UserError(f"SSIM needs at least 7 voxels along every axis; got shape {ref.shape}")
    mask = _comparison_mask(rec, ref, mask)
    _, smap = structural_similarity(ref, rec, data_range=_data_range(ref), full=True)
    return float(smap[mask].mean()) if mask.any() else 1.0


def ssim_paper(rec: np.ndarray, ref: np.ndarray, rec_mask: np.ndarray | None = None) -> float:
    """SSIM as the paper measured it: ``rec`` masked by its own Otsu mask, mean over the whole volume.
    ``rec_mask``: ``otsu_mask(rec)`` where the caller already has it."""
    from skimage.metrics import structural_similarity

    rec = np.asarray(rec, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    _check_pair(rec, ref)
    if min(ref.shape) < 7:
        raise UserError(f"SSIM needs at least 7 voxels along every axis; got shape {ref.shape}")
    rec_mask = otsu_mask(rec) if rec_mask is None else rec_mask
    return float(structural_similarity(ref, rec * rec_mask, data_range=_data_range(ref)))


def surface_to_volume(volume: np.ndarray) -> float:
    """Surface voxels / volume voxels of the Otsu-binarised volume (surface = one dilation minus it)."""
    binary = otsu_mask(volume)
    count = int(binary.sum())
    if count == 0:
        return float("nan")
    surface = ndimage.binary_dilation(binary) & ~binary
    return float(surface.sum()) / count


def volume_redistribution(series: np.ndarray, voxel_size_nm: float = 1.0) -> np.ndarray:
    """Volume that changes between consecutive binarised volumes, nm^3, shape (T - 1,).

    Parameters
    ----------
    series
        Volumes (T, Z, Y, X), each binarised with its own Otsu threshold.
    voxel_size_nm
        Voxel edge length, nanometres (the paper's nanostar: 0.87).
    """
    series = np.asarray(series)
    if series.ndim != 4:
        raise UserError(f"a volume series must have shape (T, Z, Y, X); got {series.shape}")
    if voxel_size_nm <= 0:
        raise UserError(f"voxel_size_nm must be positive; got {voxel_size_nm}")
    binaries = [otsu_mask(v) for v in series]
    changed = [int((a ^ b).sum()) for a, b in zip(binaries[:-1], binaries[1:])]
    return np.asarray(changed, dtype=np.float64) * float(voxel_size_nm) ** 3


def intensity_spread(volume: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Standard deviation of the intensities inside ``mask`` (default: :func:`particle_mask`)."""
    volume = np.asarray(volume, dtype=np.float64)
    mask = particle_mask(volume) if mask is None else np.asarray(mask, dtype=bool)
    return float(volume[mask].std()) if mask.any() else float("nan")


def alloying_degree(series: np.ndarray, sigma_0: float | None = None, sigma_inf: float | None = None,
                    masks: np.ndarray | None = None) -> np.ndarray:
    """Alloying degree of each volume (Eq. 10), shape (T,).

    Parameters
    ----------
    series
        Volumes (T, Z, Y, X).
    sigma_0, sigma_inf
        Intensity spreads of the initial core-shell and the fully alloyed particle; by default those of
        the first and last volume of ``series``. For a reconstruction, pass the reference's.
    masks
        Bool (T, Z, Y, X) or (Z, Y, X) masks; by default each volume's :func:`particle_mask`.

    Returns
    -------
    np.ndarray
        ``(sigma_i - sigma_0) / (sigma_inf - sigma_0)``; 0 at the start, 1 when homogeneous; NaN when
        ``sigma_inf == sigma_0``.
    """
    series = np.asarray(series)
    if series.ndim != 4:
        raise UserError(f"a volume series must have shape (T, Z, Y, X); got {series.shape}")
    if masks is not None:
        masks = np.asarray(masks, dtype=bool)
        masks = np.broadcast_to(masks, series.shape) if masks.ndim == 3 else masks
        if masks.shape != series.shape:
            raise UserError(f"masks shape {masks.shape} differs from the series shape {series.shape}")
    sigmas = np.array([intensity_spread(v, None if masks is None else masks[i])
                       for i, v in enumerate(series)])
    s0 = sigmas[0] if sigma_0 is None else float(sigma_0)
    sinf = sigmas[-1] if sigma_inf is None else float(sigma_inf)
    if sinf == s0:
        return np.full(len(series), np.nan)
    return (sigmas - s0) / (sinf - s0)


def homogenised(volume: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """``volume`` with the voxels of ``mask`` (default: its Otsu mask) set to their mean.

    The "perfectly homogeneous particle" of Eq. 10: same outer shape, same total intensity, no
    internal contrast.
    """
    volume = np.asarray(volume, dtype=np.float64)
    mask = otsu_mask(volume) if mask is None else np.asarray(mask, dtype=bool)
    out = volume.copy()
    if mask.any():
        out[mask] = volume[mask].mean()
    return out


def alloying_against_reference(rec_series: np.ndarray, ref_series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Alloying degree (Eq. 10) of a ground truth and of its reconstruction, as the paper measures them.

    Parameters
    ----------
    rec_series, ref_series
        Volumes (T, Z, Y, X) of one shape; ``ref_series`` is the ground truth.

    Returns
    -------
    (alloy_ref, alloy_rec) : np.ndarray, shape (T,) each
        ``(sigma_i - sigma_0) / (sigma_inf - sigma_0)``. Mask: :func:`particle_mask` of the first
        ground-truth volume, for every time. Denominator: the ground truth's ``sigma_0`` (first volume)
        and ``sigma_inf`` (its :func:`homogenised` version). Numerator: ``sigma_i`` of the ground truth
        or of the reconstruction, minus the ground truth's ``sigma_0``, so a reconstruction's degree at
        each step differs from the truth's by ``(sigma_i(rec) - sigma_i(truth)) / span``: the contrast it
        lost or invented at that step, in units of the full alloying. NaN when the denominator is 0.
    """
    first = np.asarray(ref_series[0], dtype=np.float64)
    mask = particle_mask(first)
    sigma_0 = intensity_spread(first, mask)
    span = intensity_spread(homogenised(first), mask) - sigma_0
    if not span:
        nan = np.full(len(ref_series), np.nan)
        return nan, nan.copy()
    ref = np.array([intensity_spread(v, mask) for v in ref_series])
    rec = np.array([intensity_spread(v, mask) for v in rec_series])
    return (ref - sigma_0) / span, (rec - sigma_0) / span


def reprojection_error_percent(measured: np.ndarray, reprojection: np.ndarray) -> float:
    """RMS of ``reprojection - measured`` over the RMS of ``measured``, percent (both (ny, nx)).

    The one reprojection error: held-out frames (:func:`heldout_metrics`) and the live process's
    ``reprojection`` messages (:func:`tiltstream.live.status.make_reprojection`).
    """
    return 100.0 * float(np.sqrt(np.mean((reprojection - measured) ** 2))
                         / max(np.sqrt(np.mean(measured ** 2)), 1e-12))


def heldout_metrics(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict[str, float] | None:
    """Reprojection error of held-out frames, the one held-out measure of every reconstructor.

    Parameters
    ----------
    pairs
        ``(measured, reprojection)`` per held-out frame, each (ny, nx).

    Returns
    -------
    dict or None
        ``heldout_rmse_percent``: :func:`reprojection_error_percent`, mean over the frames;
        ``heldout_ssim``: scikit-image SSIM of reprojection vs frame (data range of the frame), mean.
        None when there is no pair.
    """
    from skimage.metrics import structural_similarity

    errors, ssims = [], []
    for measured, reprojection in pairs:
        errors.append(reprojection_error_percent(measured, reprojection))
        data_range = float(measured.max() - measured.min()) or 1.0
        ssims.append(float(structural_similarity(reprojection, measured, data_range=data_range)))
    if not errors:
        return None
    return {"heldout_rmse_percent": float(np.mean(errors)), "heldout_ssim": float(np.mean(ssims))}


def _volume_metrics(pair: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    """The metrics of one reconstructed volume against its reference (one time); each Otsu mask is
    computed once and shared by the measurements that use it."""
    rec, ref = pair
    rec_mask = otsu_mask(rec)
    union = rec_mask | otsu_mask(ref)
    return {"rmse_percent": rmse_percent(rec, ref, union), "rmse_paper": rmse_paper(rec, ref, rec_mask),
            "ssim": ssim(rec, ref, union), "ssim_paper": ssim_paper(rec, ref, rec_mask),
            "surface_to_volume": surface_to_volume(rec), "surface_to_volume_ref": surface_to_volume(ref)}


def _ssim_pair(pair: tuple[np.ndarray, np.ndarray]) -> float:
    return ssim(*pair)


def _per_volume(measure: Callable[[tuple[np.ndarray, np.ndarray]], Any], rec_series: np.ndarray,
                ref_series: np.ndarray, workers: int) -> list:
    """``measure((rec, ref))`` of every time, in ``workers`` processes when > 1 (large volumes)."""
    pairs = [(rec_series[i], ref_series[i]) for i in range(len(rec_series))]
    if workers > 1 and len(pairs) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(workers, len(pairs))) as pool:
            return list(pool.map(measure, pairs, chunksize=max(1, len(pairs) // workers)))
    return [measure(pair) for pair in pairs]


def ssim_series(rec_series: np.ndarray, ref_series: np.ndarray, workers: int = 1) -> np.ndarray:
    """:func:`ssim` of each time of two series (T, Z, Y, X), shape (T,), in ``workers`` processes when > 1."""
    if np.shape(rec_series) != np.shape(ref_series):
        raise UserError(f"reconstruction series {np.shape(rec_series)} and reference series "
                        f"{np.shape(ref_series)} differ in shape or time count (T, Z, Y, X)")
    return np.array(_per_volume(_ssim_pair, rec_series, ref_series, workers), dtype=np.float64)


def metrics_table(rec_series: np.ndarray, ref_series: np.ndarray, times_s: np.ndarray | None = None,
                  voxel_size_nm: float = 1.0, workers: int = 1) -> list[dict]:
    """Every metric at every time: one dict per volume, ready for a CSV.

    Parameters
    ----------
    rec_series, ref_series
        Volumes (T, Z, Y, X) of one shape; ``ref_series`` is the ground truth.
    times_s
        Times of the volumes, seconds (index-only rows when None).
    voxel_size_nm
        Voxel edge length, nanometres, for the redistributed volume.
    workers
        Processes computing the per-volume metrics (SSIM of large volumes takes a while); 1 = this one.

    Returns
    -------
    list of dict
        Keys: ``index, time_s, rmse_percent, rmse_paper, ssim, ssim_paper, surface_to_volume, surface_to_volume_ref,
        redistribution_nm3, redistribution_ref_nm3, alloying_degree, alloying_degree_ref``
        (redistribution is None at index 0; alloying per :func:`alloying_against_reference`, NaN when the
        reference has no internal contrast).
    """
    rec_series = np.asarray(rec_series, dtype=np.float32)
    ref_series = np.asarray(ref_series, dtype=np.float32)
    if rec_series.ndim != 4 or ref_series.ndim != 4:
        raise UserError(f"volume series must be (T, Z, Y, X); got {rec_series.shape} and {ref_series.shape}")
    if rec_series.shape != ref_series.shape:
        raise UserError(f"reconstruction series {rec_series.shape} and reference series "
                        f"{ref_series.shape} differ in shape or time count (T, Z, Y, X)")
    count = rec_series.shape[0]
    times = np.full(count, np.nan) if times_s is None else np.asarray(times_s, dtype=np.float64)
    if times.shape != (count,):
        raise UserError(f"times_s must have {count} entries; got {times.shape}")
    alloy_ref, alloy_rec = alloying_against_reference(rec_series, ref_series)
    redis_rec = volume_redistribution(rec_series, voxel_size_nm)
    redis_ref = volume_redistribution(ref_series, voxel_size_nm)
    per_volume = _per_volume(_volume_metrics, rec_series, ref_series, workers)
    rows = []
    for i in range(count):
        rows.append({
            "index": i,
            "time_s": float(times[i]),
            **per_volume[i],
            "redistribution_nm3": None if i == 0 else float(redis_rec[i - 1]),
            "redistribution_ref_nm3": None if i == 0 else float(redis_ref[i - 1]),
            "alloying_degree": float(alloy_rec[i]),
            "alloying_degree_ref": float(alloy_ref[i]),
        })
    return rows
