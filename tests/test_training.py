"""The shared training loop: D learns on a toy, checkpoints resume at the right step and bit-identically."""

from __future__ import annotations

import json

import pytest
import torch

from benchmark.errors import BenchmarkError
from benchmark.models import Architecture, GANModels
from benchmark.training import TrainingHooks, TrainSettings, as_training_tensor, train_gan

ARCH = Architecture.from_config({"width": 8}, image_size=28, channels=1)


def _real(digits):
    return as_training_tensor(digits.images[:256], torch.device("cpu"))


def test_discriminator_loss_falls_on_a_toy(tmp_path, digits):
    # G barely moves (tiny lr), so D faces a fixed fake distribution and must learn to separate it from digits.
    settings = TrainSettings.from_config({"steps": 80, "batch_size": 32, "lr_g": 1e-7, "lr_d": 1e-3, "log_every": 5})
    train_gan(GANModels.fresh(ARCH, 0), _real(digits), settings, 0, tmp_path, TrainingHooks(), {"toy": True})
    losses = [json.loads(line)["loss_d"] for line in (tmp_path / "train_log.jsonl").read_text().splitlines() if "loss_d" in line]
    assert losses[0] > 1.2  # about 2 log 2 at the start
    assert losses[-1] < 0.5 * losses[0]


class _Interrupt(Exception):
    pass


def _interrupt_at(step_to_fail: int):
    def evaluate(generator, step):
        if step == step_to_fail:
            raise _Interrupt
        return {"mean_pixel": float(generator(torch.zeros(1, generator.z_dim)).mean())}

    return evaluate


def test_resume_continues_at_the_checkpoint_and_matches_an_uninterrupted_run(tmp_path, digits):
    settings = TrainSettings.from_config({"steps": 30, "batch_size": 16, "ema_decay": 0.9, "eval_every": 5, "checkpoint_every": 10, "log_every": 5})
    identity = {"toy": "resume"}
    straight = train_gan(GANModels.fresh(ARCH, 1), _real(digits), settings, 1, tmp_path / "a", TrainingHooks(), identity, _interrupt_at(-1))

    with pytest.raises(_Interrupt):  # dies after the step-20 checkpoint, before step 30
        train_gan(GANModels.fresh(ARCH, 1), _real(digits), settings, 1, tmp_path / "b", TrainingHooks(), identity, _interrupt_at(25))
    assert torch.load(tmp_path / "b" / "resume.pt", weights_only=True)["step"] == 20
    assert not (tmp_path / "b" / "checkpoint.pt").exists(), "checkpoint.pt marks a finished run only"
    resumed = train_gan(GANModels.fresh(ARCH, 1), _real(digits), settings, 1, tmp_path / "b", TrainingHooks(), identity, _interrupt_at(-1))
    assert not (tmp_path / "b" / "resume.pt").exists()

    for a, b in zip(straight.generator.state_dict().values(), resumed.generator.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(straight.discriminator.state_dict().values(), resumed.discriminator.state_dict().values()):
        assert torch.equal(a, b)
    log_a = (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()
    log_b = (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()
    strip = lambda lines: [{k: v for k, v in json.loads(line).items() if k != "steps_per_s"} for line in lines]  # noqa: E731
    assert strip(log_a) == strip(log_b), "the resumed log holds each step once, with the same values"


def test_resume_refuses_changed_settings_and_names_them(tmp_path, digits):
    settings = TrainSettings.from_config({"steps": 4, "batch_size": 8, "log_every": 2})
    train_gan(GANModels.fresh(ARCH, 0), _real(digits), settings, 0, tmp_path, TrainingHooks(), {"lr_note": 1})
    changed = TrainSettings.from_config({"steps": 8, "batch_size": 8, "log_every": 2, "lr_d": 1e-3})
    with pytest.raises(BenchmarkError, match=r"lr_d|train_settings") as info:
        train_gan(GANModels.fresh(ARCH, 0), _real(digits), changed, 0, tmp_path, TrainingHooks(), {"lr_note": 1})
    assert "Delete the run folder" in str(info.value)


def test_same_seed_same_weights_on_cpu(tmp_path, digits):
    settings = TrainSettings.from_config({"steps": 6, "batch_size": 8, "log_every": 3})
    runs = [train_gan(GANModels.fresh(ARCH, 5), _real(digits), settings, 5, tmp_path / run, TrainingHooks(), {}) for run in "ab"]
    for a, b in zip(runs[0].generator.parameters(), runs[1].generator.parameters()):
        assert torch.equal(a, b)


def test_blocks_are_indexed_for_methods():
    models = GANModels.fresh(ARCH, 0)
    assert len(models.discriminator.blocks) == 3 and len(models.generator.blocks) == 3
    assert models.generator(torch.zeros(2, ARCH.z_dim)).shape == (2, 1, 28, 28)
    assert models.discriminator(torch.zeros(2, 1, 28, 28)).shape == (2,)
