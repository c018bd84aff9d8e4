"""Trainer precision (fp32 / tf32 / bf16), torch.compile and CUDA: same losses as the fp32 CPU reference.

The CUDA tests run where torch sees a GPU (skipped elsewhere, with the reason); the refusals and the
bf16 path run everywhere.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tiltstream.errors import UserError
from tiltstream.recon.row_filter import MIN_FRAMES_FOR_NOISE, hann_window
from tiltstream.recon.trainer import Trainer
from tests.recon.test_trainer import SMALL, _frames

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def _trainer(device: str = "cpu", precision: str = "fp32", compile_model: bool = False) -> Trainer:
    frames, angles, times = _frames(6)
    trainer = Trainer(SMALL, frames.shape[1:], time_scale_s=100.0, seed=0, device=device, precision=precision,
                      compile_model=compile_model)
    for i in range(6):
        trainer.add_frame(i, frames[i], angles[i], times[i])
    return trainer


def _first_losses(trainer: Trainer, steps: int = 5) -> np.ndarray:
    trainer.train_steps(steps)
    return np.array(trainer.loss_history[:steps])


@pytest.mark.parametrize("precision, message", [("fp16", "allowed: fp32, tf32, bf16"),
                                                ("tf32", "needs a CUDA device")])
def test_unknown_or_unusable_precision_is_refused(precision: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        _trainer("cpu", precision)


def test_bf16_trains_like_fp32_on_the_cpu() -> None:
    """bf16 autocast: first losses within 2 % of fp32's, and it learns (loss down by half in 200 steps)."""
    reference = _first_losses(_trainer("cpu", "fp32"))
    trainer = _trainer("cpu", "bf16")
    losses = _first_losses(trainer)
    np.testing.assert_allclose(losses, reference, rtol=2e-2)
    trainer.train_steps(200)
    assert np.mean(trainer.loss_history[-20:]) < 0.5 * np.mean(trainer.loss_history[:5])
    assert trainer.volume(10.0).dtype == np.float32


@CUDA
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_cuda_training_matches_the_cpu_reference(precision: str) -> None:
    """Same seed, same samples: the CUDA losses follow the CPU fp32 ones (1e-4 fp32, 2 % tf32/bf16)."""
    reference = _first_losses(_trainer("cpu", "fp32"))
    trainer = _trainer("cuda", precision)
    losses = _first_losses(trainer)
    np.testing.assert_allclose(losses, reference, rtol=1e-4 if precision == "fp32" else 2e-2)
    volume = trainer.volume(10.0)
    assert isinstance(volume, np.ndarray) and volume.shape == (16, 16, 16)


@CUDA
def test_compiled_training_matches_eager_on_cuda() -> None:
    """torch.compile (CUDA graphs) changes the speed, not the result: the first loss (same weights,
    same samples) equals eager's to 1e-4, the next 19 follow it to 2 % (fused kernels round differently,
    and training amplifies that)."""
    eager = _first_losses(_trainer("cuda"), 20)
    compiled = _first_losses(_trainer("cuda", compile_model=True), 20)
    np.testing.assert_allclose(compiled[0], eager[0], rtol=1e-4)
    np.testing.assert_allclose(compiled, eager, rtol=2e-2)


def test_live_queries_compute_in_bf16_only_on_a_cpu_that_has_it_and_stay_close_to_fp32() -> None:
    """``query_precision``: bf16 for an fp32 run on a CPU with native bfloat16, the run's own precision
    otherwise (and on CUDA). The live process's query replica answers reprojections and volumes in it:
    within 1 % of the trainer's fp32 answers, not bit-equal where bf16 is used."""
    from tiltstream.live.query_replica import QueryReplica
    from tiltstream.recon.precision import native_bf16_cpu, query_precision

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    native = native_bf16_cpu()
    assert query_precision("fp32", cpu) == ("bf16" if native else "fp32")
    assert query_precision("bf16", cpu) == "bf16" and query_precision("fp32", cuda) == "fp32"
    trainer = _trainer()
    trainer.train_steps(20)
    replica = QueryReplica()
    replica.refresh(trainer)
    image, _, step = replica.reproject(trainer.times_s[2], 17.0)
    volume, _ = replica.volume(trainer.times_s[2])
    for ours, reference in ((image, trainer.reproject(trainer.times_s[2], 17.0)), (volume, trainer.volume(trainer.times_s[2]))):
        difference = np.linalg.norm(ours - reference) / np.linalg.norm(reference)
        assert difference < 1e-2
        assert (difference > 0) == native
    assert step == 20


@CUDA
def test_tf32_is_switched_on_only_inside_a_tf32_trainer() -> None:
    """The TF32 switches are per step: a tf32 trainer leaves them as they were, and fp32 after it is
    still the CPU's fp32 to 1e-4."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    _first_losses(_trainer("cuda", "tf32"))
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    np.testing.assert_allclose(_first_losses(_trainer("cuda")), _first_losses(_trainer("cpu")), rtol=1e-4)


@CUDA
def test_a_cuda_checkpoint_continues_on_the_cpu(tmp_path) -> None:
    """Saved on CUDA, loaded on the CPU: the same volume (1e-4 of its maximum) and training goes on."""
    trainer = _trainer("cuda")
    trainer.train_steps(30)
    trainer.save(tmp_path / "run")
    restored = Trainer.load(tmp_path / "run", device="cpu")
    on_cuda, on_cpu = trainer.volume(10.0), restored.volume(10.0)
    assert np.abs(on_cpu - on_cuda).max() < 1e-4 * np.abs(on_cuda).max()
    restored.train_steps(5)
    assert restored.steps_done == 35


@CUDA
def test_the_data_window_on_cuda_is_the_cpus() -> None:
    """``ramp_window="data"`` (the fast preset's): the window the trainer derives from its frames on CUDA
    is the CPU's to 1e-6, and the losses that follow are the CPU's to 1e-4 (fp32)."""
    config = SMALL.model_copy(update={"residual_filter": "ramp", "ramp_window": "data"})
    count = MIN_FRAMES_FOR_NOISE + 4
    frames, angles, times = _frames(count)
    trainers = {}
    for device in ("cpu", "cuda"):
        trainer = Trainer(config, frames.shape[1:], time_scale_s=1000.0, seed=0, device=device)
        for i in range(count):
            trainer.add_frame(i, frames[i], angles[i], times[i])
        trainer.train_steps(10)
        trainers[device] = trainer
    np.testing.assert_allclose(trainers["cuda"].row_window, trainers["cpu"].row_window, atol=1e-6)
    assert np.abs(trainers["cpu"].row_window - hann_window(16).numpy()).max() > 0.05  # it opened
    np.testing.assert_allclose(trainers["cuda"].loss_history, trainers["cpu"].loss_history, rtol=1e-4)
