"""DIP-STER model, sampler and trainer: batch independence, live output, determinism, checkpoints, warm start."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tiltstream.errors import UserError
from tiltstream.recon.checkpoint import CHECKPOINT_FILE
from tiltstream.recon.model import DipsterNet, stage_sizes
from tiltstream.recon.presets import DipsterConfig, preset
from tiltstream.recon.projector import project, project_volume
from tiltstream.recon.row_filter import MIN_FRAMES_FOR_NOISE, data_window, hann_window
from tiltstream.recon.sampler import FrameSampler
from tiltstream.recon.trainer import Trainer

SMALL = DipsterConfig(mapnet_widths=(32, 32), cnn_channels=16, channel_halving=True, cnn_min_channels=8,
                      lr=1e-3, lr_step_steps=50, batch_frames=4, rows_per_frame=2)


def _frames(count: int, n: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames of a small moving cube projected at GRS-like angles: (frames, angles_deg, times_s)."""
    rng = np.random.default_rng(seed)
    frames, angles = [], []
    for i in range(count):
        vol = np.zeros((n, n, n), dtype=np.float32)
        c = 4 + i % 4
        vol[c:c + 6, 3:12, c:c + 5] = 1.0
        angle = float(rng.uniform(-70, 70))
        frames.append(project_volume(vol, angle))
        angles.append(angle)
    return np.stack(frames), np.array(angles), np.arange(count) * 10.0


def _trainer(count: int = 6, seed: int = 0, config: DipsterConfig = SMALL, scale: float = 1.0) -> Trainer:
    frames, angles, times = _frames(count)
    trainer = Trainer(config, frames.shape[1:], time_scale_s=100.0, seed=seed)
    for i in range(count):
        trainer.add_frame(i, frames[i] * scale, angles[i], times[i])
    return trainer


def _same_weights(a: Trainer, b: Trainer) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))


@pytest.mark.parametrize("name", ["paper", "fast"])
def test_slice_is_independent_of_its_batch(name: str) -> None:
    """GroupNorm statistics are per sample: a slice alone equals the same slice in a batch of 8."""
    torch.manual_seed(0)
    net = DipsterNet(preset(name), (16, 16))
    coords = torch.rand(8, 3)
    net.train()
    together = net(coords)
    alone = net(coords[3:4])
    np.testing.assert_allclose(alone[0].detach().numpy(), together[3].detach().numpy(), atol=1e-6, rtol=0)
    net.eval()
    np.testing.assert_allclose(net(coords[3:4])[0].detach().numpy(), together[3].detach().numpy(),
                               atol=1e-6, rtol=0)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())


def test_output_is_positive_and_not_constant_after_training() -> None:
    """The softplus output stays > 0 and varies over the slice (no dead ReLU giving all zeros)."""
    trainer = _trainer()
    trainer.train_steps(30)
    volume = trainer.volume(25.0)
    assert volume.shape == (16, 16, 16)
    assert volume.min() > 0
    assert volume.std() > 1e-3 * volume.mean()


def test_stage_sizes_reach_any_slice_shape() -> None:
    """Upsampling stages end exactly at the slice shape, also for sizes that are not powers of two."""
    assert stage_sizes((32, 32), 4) == [(4, 4), (8, 8), (16, 16), (32, 32)]
    assert stage_sizes((24, 40), 4)[-1] == (24, 40)
    net = DipsterNet(SMALL, (20, 20))
    assert net(torch.rand(2, 3)).shape == (2, 20, 20)


def test_same_seed_same_sequence_gives_identical_weights() -> None:
    """Determinism on CPU: same seed and add_frame/train_steps sequence -> identical weights."""
    a, b = _trainer(seed=5), _trainer(seed=5)
    for t in (a, b):
        t.train_steps(7)
    assert _same_weights(a, b)
    assert a.loss_history == b.loss_history
    c = _trainer(seed=6)
    c.train_steps(7)
    assert not _same_weights(a, c)


def test_save_load_then_continue_equals_uninterrupted(tmp_path) -> None:
    """A checkpoint restores model, optimiser, scheduler, sampler and frames: bit-for-bit continuation."""
    frames, angles, times = _frames(8)
    a = _trainer(count=6)
    a.train_steps(60)  # crosses a StepLR period (50 steps)
    a.save(tmp_path / "ck.pt")
    b = Trainer.load(tmp_path / "ck.pt", device="cpu")
    assert b.steps_done == 60 and b.learning_rate == a.learning_rate
    for t in (a, b):
        t.add_frame(6, frames[6], angles[6], times[6])
        t.train_steps(9)
        t.add_frame(7, frames[7], angles[7], times[7], held_out=True)
        t.train_steps(4)
    assert _same_weights(a, b)
    assert a.loss_history == b.loss_history
    np.testing.assert_array_equal(a.volume(33.0), b.volume(33.0))


def test_adding_frames_never_changes_earlier_time_coordinates() -> None:
    """Warm start: time coordinate = time_s / time_scale_s, fixed at creation, whatever comes later."""
    frames, angles, _ = _frames(5)
    trainer = Trainer(SMALL, (16, 16), time_scale_s=50.0)
    seen = []
    for i, time_s in enumerate([0.0, 20.0, 45.0, 300.0, 1000.0]):  # later times beyond the scale
        trainer.add_frame(i, frames[i], angles[i], time_s)
        seen.append(trainer.store.times.tolist())
        trainer.train_steps(1)
    for k, coords in enumerate(seen):
        assert coords == pytest.approx([0.0, 0.4, 0.9, 6.0, 20.0][:k + 1], abs=1e-7)
    assert trainer.data_scale == pytest.approx(float(np.percentile(np.abs(frames[0]), 99.9)))


def test_new_frame_is_drawn_within_the_bound_while_old_ones_keep_coming() -> None:
    """Sampler: pending frames are drawn within ceil(pending / fresh_per_step) steps; old ones stay in."""
    sampler = FrameSampler(seed=0, fresh_per_step=1)
    for slot in range(10):
        sampler.add(slot)
    drawn_by_step: list[set[int]] = []
    for _ in range(200):
        if len(drawn_by_step) == 20:
            for slot in (10, 11, 12):
                sampler.add(slot)
            bound = sampler.wait_bound_steps()
            assert bound == 3
            start = len(drawn_by_step)
        slots, rows = sampler.draw(4, 2, 16)
        assert rows.shape == (4, 2) and int(rows.max()) < 16
        drawn_by_step.append(set(slots.tolist()))
    first_ten = set().union(*drawn_by_step[:10])
    assert first_ten == set(range(10))  # each initial frame within 10 steps
    for slot in (10, 11, 12):
        assert slot in set().union(*drawn_by_step[start:start + bound])
    later = set().union(*drawn_by_step[100:])
    assert set(range(10)) <= later  # earlier frames keep being sampled


def test_trainer_trains_on_a_new_frame_within_the_bound() -> None:
    trainer = _trainer(count=4)
    trainer.train_steps(4)  # the four initial frames are drawn in the first four steps
    assert not trainer.sampler.pending
    frames, angles, times = _frames(6)
    trainer.add_frame(4, frames[4], angles[4], times[4])
    trainer.add_frame(5, frames[5], angles[5], times[5])
    bound = trainer.sampler.wait_bound_steps()
    assert bound == 2
    trainer.train_steps(bound)
    assert not trainer.sampler.pending


def test_volumes_are_in_data_units() -> None:
    """Normalisation is exact: frames scaled by 1000 give volumes scaled by 1000 (same seed, steps)."""
    a, b = _trainer(), _trainer(scale=1000.0)
    for t in (a, b):
        t.train_steps(10)
    np.testing.assert_allclose(b.volume(12.0), 1000.0 * a.volume(12.0), rtol=1e-4, atol=0)
    np.testing.assert_allclose(b.reproject(12.0, 30.0), 1000.0 * a.reproject(12.0, 30.0), rtol=1e-4)


def test_reprojection_fits_training_frames() -> None:
    """After a few hundred steps the reprojections approach the frames (data units, same angle, time)."""
    trainer = _trainer(count=4)
    frames, angles, times = _frames(4)
    before = np.linalg.norm(trainer.reproject(times[1], angles[1]) - frames[1])
    trainer.train_steps(300)
    after = np.linalg.norm(trainer.reproject(times[1], angles[1]) - frames[1])
    assert after < 0.5 * before
    assert after < 0.7 * np.linalg.norm(frames[1])


def test_reproject_is_the_projection_of_the_slices_at_that_angle() -> None:
    trainer = _trainer()
    trainer.train_steps(5)
    angle_deg = 25.0
    slices = trainer._slices(30.0, np.deg2rad(angle_deg))
    expected = project(slices[None], torch.tensor([np.deg2rad(angle_deg)], dtype=torch.float32), 16)[0]
    np.testing.assert_allclose(trainer.reproject(30.0, angle_deg), expected.numpy() * trainer.data_scale,
                               rtol=1e-6)


def test_heldout_frames_are_not_trained_on_and_are_measured() -> None:
    frames, angles, times = _frames(6)
    trainer = Trainer(SMALL, (16, 16), time_scale_s=100.0)
    for i in range(6):
        trainer.add_frame(i, frames[i], angles[i], times[i], held_out=i in (2, 4))
    assert trainer.n_train_frames == 4 and trainer.n_frames == 6
    assert 2 not in trainer.sampler.train_slots and 4 not in trainer.sampler.train_slots
    trainer.train_steps(5)
    metrics = trainer.heldout_metrics()
    assert set(metrics) == {"heldout_rmse_percent", "heldout_ssim"}
    assert metrics["heldout_rmse_percent"] > 0 and -1 <= metrics["heldout_ssim"] <= 1


@pytest.mark.parametrize("bad, message", [
    (np.zeros((16, 15), np.float32), "shape"),
    (np.full((16, 16), np.nan, np.float32), "NaN"),
])
def test_bad_frames_are_refused_with_a_clear_message(bad: np.ndarray, message: str) -> None:
    trainer = _trainer(count=2)
    with pytest.raises(UserError, match=message):
        trainer.add_frame(9, bad, 0.0, 1.0)
    with pytest.raises(UserError, match="already added"):
        trainer.add_frame(1, np.ones((16, 16), np.float32), 0.0, 1.0)
    empty = Trainer(SMALL, (16, 16), time_scale_s=1.0)
    with pytest.raises(UserError, match="all zero"):
        empty.add_frame(0, np.zeros((16, 16), np.float32), 0.0, 0.0)
    with pytest.raises(UserError, match="no training frames"):
        empty.train_steps(1)


def test_presets_are_the_documented_configurations() -> None:
    paper = preset("paper")
    assert paper.mapnet_widths == (512, 512) and paper.cnn_channels == 128 and not paper.channel_halving
    assert paper.batch_frames == 4 and paper.lr == 1e-4 and paper.lr_gamma == 0.985
    fast = preset("fast")
    assert fast.mapnet_widths == (256, 256) and fast.channel_halving and fast.ema_decay == 0.99
    assert fast.loss == "geman_mcclure" and paper.loss == "geman_mcclure"
    assert fast.adam_beta2 == 0.99 and paper.adam_beta2 == 0.999
    assert fast.residual_filter == "ramp" and paper.residual_filter == "none"  # the paper's plain rows
    assert fast.ramp_window == "data"
    assert fast.latent_cell_voxels == 4 and fast.cnn_channels == 32  # a 16x16 map at 64^3
    assert fast.t_gain == 1.0 and paper.t_gain == 1.0  # the paper's raw time coordinate (4 tried)
    assert paper.latent_cell_voxels == 0 and paper.base_size == 4  # the paper's 4x4 map
    assert paper.ema_decay == 0.0  # the paper's queries use the trained weights
    with pytest.raises(ValueError, match="allowed: paper, fast"):
        preset("slow")


def test_adam_beta2_reaches_the_optimiser_and_checkpoints_of_before_it_keep_0999(tmp_path) -> None:
    """``adam_beta2`` is Adam's second beta; it survives save/load, and a checkpoint written before the
    field existed (no ``adam_beta2`` in its config) continues with PyTorch's 0.999, as it was trained."""
    trainer = _trainer(config=SMALL.model_copy(update={"adam_beta2": 0.95}))
    trainer.train_steps(3)
    assert trainer.optimizer.param_groups[0]["betas"] == (0.9, 0.95)
    trainer.save(tmp_path / "new.pt")
    assert Trainer.load(tmp_path / "new.pt").optimizer.param_groups[0]["betas"] == (0.9, 0.95)
    old = _trainer()
    state = old.state_dict()
    del state["config"]["adam_beta2"]
    torch.save(state, tmp_path / "old.pt")
    loaded = Trainer.load(tmp_path / "old.pt")
    assert loaded.config.adam_beta2 == 0.999
    assert loaded.optimizer.param_groups[0]["betas"] == (0.9, 0.999)


def test_a_checkpoint_from_before_t_gain_keeps_its_time_coordinate(tmp_path) -> None:
    """A checkpoint whose config has no ``t_gain`` (written before the field existed) was trained with the
    raw time coordinate: it loads with ``t_gain = 1`` and gives the volumes it gave before."""
    trainer = _trainer()
    trainer.train_steps(3)
    state = trainer.state_dict()
    del state["config"]["t_gain"]
    torch.save(state, tmp_path / "old.pt")
    loaded = Trainer.load(tmp_path / "old.pt")
    assert loaded.config.t_gain == 1.0
    np.testing.assert_array_equal(loaded.volume(20.0), trainer.volume(20.0))
    gained = _trainer(config=SMALL.model_copy(update={"t_gain": 4.0}))
    gained.train_steps(3)
    gained.save(tmp_path / "new.pt")
    assert Trainer.load(tmp_path / "new.pt").config.t_gain == 4.0


def test_trainer_is_a_reconstructor_whose_run_directory_keeps_frame_metadata(tmp_path) -> None:
    """Protocol: method "dipster", train(steps | seconds), frame_records with metadata, save/load of a
    run directory (checkpoint.pt inside) that continues bit-for-bit."""
    from tiltstream.recon.reconstructor import Reconstructor, reconstructor_class

    frames, angles, times = _frames(4)
    a = Trainer(SMALL, (16, 16), time_scale_s=100.0, seed=3)
    for i in range(4):
        a.add_frame(i, frames[i], angles[i], times[i], held_out=i == 2,
                    metadata={"dose_e_per_A2": np.float64(40.0 + i), "temperature_C": None})
    assert isinstance(a, Reconstructor) and reconstructor_class("dipster") is Trainer
    assert a.frame_records[2] == {"index": 2, "angle_deg": angles[2], "time_s": 20.0, "held_out": True,
                                  "dose_e_per_A2": 42.0, "temperature_C": None}
    assert np.isfinite(a.train(steps=3)) and a.steps_done == 3
    loss = a.train(seconds=0.05)
    assert np.isfinite(loss) and a.steps_done >= 4
    assert np.isnan(a.train(steps=0))
    with pytest.raises(UserError, match="exactly one"):
        a.train(steps=1, seconds=1.0)
    a.save(tmp_path / "run")
    assert (tmp_path / "run" / CHECKPOINT_FILE).is_file()
    b = Trainer.load(tmp_path / "run")
    assert b.frame_records == a.frame_records and b.steps_done == a.steps_done
    for t in (a, b):
        t.train(steps=3)
    assert _same_weights(a, b)
    with pytest.raises(UserError, match="does not exist"):
        Trainer.load(tmp_path / "nothing")


def test_weight_average_is_the_exponential_moving_average_and_what_queries_use(tmp_path) -> None:
    """With ema_decay d the averaged weights are d * average + (1 - d) * weights after every step
    (checked against a hand-kept average to 1e-6), volumes come from them, and a checkpoint keeps them
    (bit-for-bit continuation)."""
    decay = 0.8
    config = SMALL.model_copy(update={"ema_decay": decay})
    trainer = _trainer(config=config)
    by_hand = [p.detach().clone() for p in trainer.model.parameters()]
    for _ in range(5):
        trainer.train_steps(1)
        by_hand = [decay * a + (1 - decay) * p.detach() for a, p in zip(by_hand, trainer.model.parameters())]
    for a, p in zip(by_hand, trainer.average.parameters()):
        torch.testing.assert_close(p, a, rtol=1e-6, atol=1e-7)
    plain = _trainer()
    plain.model.load_state_dict(trainer.average.state_dict())
    plain.data_scale = trainer.data_scale
    np.testing.assert_array_equal(plain.volume(12.0), trainer.volume(12.0))
    trainer.save(tmp_path / "run")
    restored = Trainer.load(tmp_path / "run")
    for t in (trainer, restored):
        t.train_steps(7)
    np.testing.assert_array_equal(restored.volume(12.0), trainer.volume(12.0))


def test_data_window_follows_the_training_frames_and_survives_a_checkpoint(tmp_path) -> None:
    """``ramp_window="data"``: the ramp filter's window is ``data_window`` of the training frames in time
    order (held-out frames left out), recomputed when frames arrive; a checkpoint continues bit for bit."""
    config = SMALL.model_copy(update={"residual_filter": "ramp", "ramp_window": "data"})
    count = MIN_FRAMES_FOR_NOISE + 4
    frames, angles, times = _frames(count + 2)
    order = np.r_[1, 0, 2:count]  # frame 1 arrives before frame 0

    def trainer_with(slots: np.ndarray) -> Trainer:
        trainer = Trainer(config, frames.shape[1:], time_scale_s=1000.0, seed=0)
        for i in slots:
            trainer.add_frame(int(i), frames[i], angles[i], times[i])
        trainer.add_frame(count, frames[count], angles[count], times[count], held_out=True)
        return trainer

    early = trainer_with(order[:MIN_FRAMES_FOR_NOISE - 1])
    early.train_steps(1)
    np.testing.assert_allclose(early.row_window, hann_window(16).numpy(), atol=1e-5)
    a = trainer_with(order)
    a.train_steps(3)
    in_time_order = torch.from_numpy(frames[:count] / np.float32(a.data_scale))
    np.testing.assert_allclose(a.row_window, data_window(in_time_order).numpy(), atol=1e-5)
    assert np.abs(a.row_window - hann_window(16).numpy()).max() > 0.05  # noise-free frames: it opens
    a.save(tmp_path / "ck.pt")
    b = Trainer.load(tmp_path / "ck.pt", device="cpu")
    for t in (a, b):
        t.add_frame(count + 1, frames[count + 1], angles[count + 1], times[count + 1])
        t.train_steps(5)
    np.testing.assert_array_equal(a.row_window, b.row_window)
    assert _same_weights(a, b)
    assert a.loss_history == b.loss_history


def test_slice_total_variation_prior_flattens_the_volume() -> None:
    """``slice_tv_weight``: the prior is the orthoslices' mean absolute forward difference along z and x,
    and training with it leaves a volume of less total variation than the same run without it."""
    from tiltstream.recon.data_term import slice_total_variation

    step = torch.zeros(3, 8, 8)
    step[:, 4:, :] = 2.0  # one jump of 2 in 7 differences along z, none along x
    assert float(slice_total_variation(step)) == pytest.approx(2.0 / 7.0, abs=1e-7)
    assert float(slice_total_variation(step.transpose(1, 2))) == pytest.approx(2.0 / 7.0, abs=1e-7)

    def volume_tv(weight: float) -> float:
        trainer = _trainer(config=SMALL.model_copy(update={"slice_tv_weight": weight}))
        trainer.train_steps(150)
        volume = torch.from_numpy(trainer.volume(25.0))
        return float(slice_total_variation(volume.permute(1, 0, 2)))

    without, with_prior = volume_tv(0.0), volume_tv(0.05)
    print(f"volume TV without the prior {without:.4f}, with {with_prior:.4f}")
    assert with_prior < 0.8 * without
