"""The K-planes field (``network="kplanes"``): row and time mapping, its prior, and the trainer around it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tiltstream.recon.kplanes import KPlanesField
from tiltstream.recon.presets import DipsterConfig, preset
from tiltstream.recon.projector import project_volume
from tiltstream.recon.trainer import Trainer

ONE_SCALE = DipsterConfig(network="kplanes", plane_features=4, plane_scales=(1,), plane_time_cells=5)


def _coords(rows: list[int], n_rows: int, t: float) -> torch.Tensor:
    """Trainer coordinates (y / N_y, t, theta) of whole rows at one time."""
    return torch.tensor([[r / n_rows, t, 0.0] for r in rows], dtype=torch.float32)


def test_field_is_non_negative_static_at_start_and_of_the_slice_shape() -> None:
    """Time planes start at 1: every time gives the same slices; output (N, nz, nx), > 0."""
    torch.manual_seed(0)
    field = KPlanesField(preset("kplanes"), (12, 10), n_rows=7)
    early, late = field(_coords(list(range(7)), 7, 0.0)), field(_coords(list(range(7)), 7, 1.0))
    assert early.shape == (7, 12, 10)
    assert early.min().item() > 0
    torch.testing.assert_close(early, late, rtol=0, atol=0)


def test_a_rows_cells_change_that_row_alone_and_a_times_cell_that_time_alone() -> None:
    """At scale 1, cell k of the zy plane is row k's: changing it changes slice k and no other; time
    cell j (of 5 over [0, 1]) is t = j / 4, and times two cells away do not see it."""
    torch.manual_seed(0)
    field = KPlanesField(ONE_SCALE, (8, 8), n_rows=6)
    with torch.no_grad():
        field.readout.weight.fill_(1.0)
    coords = _coords(list(range(6)), 6, 0.5)
    before = field(coords).detach()
    with torch.no_grad():
        field.space[1][:, :, 3] *= 2.0  # zy plane, row 3
    changed = (field(coords).detach() - before).abs().amax(dim=(1, 2))
    assert changed[3] > 1e-3 and torch.all(changed[[0, 1, 2, 4, 5]] == 0)
    times = (0.0, 0.25, 0.375, 0.5)
    before_t = {t: field(_coords([0], 6, t)).detach() for t in times}
    with torch.no_grad():
        field.time[2][:, :, 2] = 3.0  # yt plane, time cell 2 = t 0.5
    moved = {t: (field(_coords([0], 6, t)).detach() - before_t[t]).abs().max().item() for t in times}
    assert moved[0.0] == 0 and moved[0.25] == 0  # cells 0 and 1 exactly
    assert moved[0.5] > 1e-3 and 0 < moved[0.375] < moved[0.5]  # linear between cells 1 and 2


def test_prior_is_zero_for_smooth_planes_and_grows_with_roughness() -> None:
    """Constant space planes and time planes linear in t have no penalty; noise on a plane costs."""
    field = KPlanesField(ONE_SCALE, (8, 8), n_rows=6)
    with torch.no_grad():
        for plane in field.space:
            plane.fill_(0.3)
        for plane in field.time:
            plane.copy_(torch.linspace(0.5, 1.5, plane.shape[-1]).expand_as(plane))
    assert field.prior_loss().item() == pytest.approx(0.0, abs=1e-12)
    with torch.no_grad():
        field.time[0][:, :, 2] += 0.1
    rough_time = field.prior_loss().item()
    assert rough_time > 0
    with torch.no_grad():
        field.space[0][:, 4, 4] += 0.1
    assert field.prior_loss().item() > rough_time


def test_planes_of_a_coarse_scale_cover_sizes_that_do_not_divide() -> None:
    """Scale 2 over 9 voxels has 5 cells; the upsampled product is the slice shape."""
    config = DipsterConfig(network="kplanes", plane_features=2, plane_scales=(1, 2, 4), plane_time_cells=3)
    field = KPlanesField(config, (9, 11), n_rows=5)
    assert [tuple(p.shape) for p in field.space[3:6]] == [(2, 5, 6), (2, 5, 3), (2, 6, 3)]
    assert field(_coords([0, 4], 5, 0.3)).shape == (2, 9, 11)


def test_bad_plane_scales_are_refused() -> None:
    with pytest.raises(ValueError, match="plane_scales must be >= 1"):
        DipsterConfig(network="kplanes", plane_scales=(1, 0))


def test_trainer_with_the_kplanes_preset_fits_frames_and_continues_from_a_checkpoint(tmp_path) -> None:
    """The trainer's interface is unchanged: training lowers the loss and fits a moving cube's
    frames; save/load then continuing equals uninterrupted training, weight by weight."""
    n, count = 16, 8
    rng = np.random.default_rng(0)
    frames, angles = [], rng.uniform(-70, 70, count)
    for i in range(count):
        vol = np.zeros((n, n, n), dtype=np.float32)
        vol[4 + i % 3:10 + i % 3, 3:12, 5:10] = 1.0
        frames.append(project_volume(vol, float(angles[i])))
    config = preset("kplanes").model_copy(update={"lr_step_steps": 40})

    def fresh() -> Trainer:
        trainer = Trainer(config, (n, n), time_scale_s=float(count - 1), seed=3)
        for i in range(count - 1):
            trainer.add_frame(i, frames[i], float(angles[i]), float(i))
        return trainer

    a = fresh()
    a.train_steps(300)
    assert np.mean(a.loss_history[-20:]) < 0.2 * np.mean(a.loss_history[:5])
    fit = a.reproject(2.0, float(angles[2]))
    assert np.sqrt(np.mean((fit - frames[2]) ** 2)) < 0.1 * np.sqrt(np.mean(frames[2] ** 2))
    a.save(tmp_path / "run")
    b = Trainer.load(tmp_path / "run")
    assert b.config.network == "kplanes"
    for t in (a, b):
        t.add_frame(count - 1, frames[-1], float(angles[-1]), float(count - 1))
        t.train_steps(50)
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    np.testing.assert_array_equal(a.volume(3.5), b.volume(3.5))
