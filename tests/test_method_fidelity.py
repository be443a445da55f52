"""Methods do, inside the real training loop, what their papers say they do.

Every run goes through `benchmark.training.train_gan` on the tiny digits backbone, starting from one source
checkpoint through the method's own `initialise` (the `AdaptationContext` path the adapt stage takes):

- L2-SP pulls G and D back towards the source weights, so both end nearer the source than `finetune` does;
- EWC pulls G back towards the source, weighted by its Fisher, so G ends nearer the source than `finetune`;
- `finetune+diffaug` augments the real batch and both fake batches at every step, and so trains differently
  from `finetune`.

Each test also runs its check against a deliberately broken variant (made with monkeypatch) and asserts that
the check fails for it, so none of these tests can pass vacuously.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from benchmark import methods as method_registry
from benchmark.methods import AdaptationContext, get_method
from benchmark.models import GANModels
from benchmark.training import TrainSettings, train_gan
from conftest import TINY_DIGIT_ARCH

ARCH = TINY_DIGIT_ARCH
CPU = torch.device("cpu")
SEED = 0
STEPS = 20
BATCH = 8
# No EMA: the returned G is the trained G itself, whose distance to the source the penalties act on.
SETTINGS = TrainSettings.from_config({"steps": STEPS, "batch_size": BATCH, "log_every": STEPS, "ema_decay": 0.0})
# "Clearly nearer": a penalised run must end at most this share of finetune's squared distance from the source.
NEARER = 0.5


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every run here on one thread (conftest's `one_thread`); comparisons are between runs made alike."""


def context(source_checkpoint: Path) -> AdaptationContext:
    return AdaptationContext(ARCH, SEED, CPU, {"source_checkpoint": source_checkpoint})


def adapt(name: str, hparams: dict[str, Any], source_checkpoint: Path, target: torch.Tensor, run_dir: Path) -> GANModels:
    """`name` initialised from the source and trained by the real loop. Every run needs its own `run_dir`: a
    finished checkpoint with an equal identity there would be resumed instead of trained."""
    method = get_method(name)(**hparams)
    models = method.initialise(context(source_checkpoint))
    return train_gan(models, target, SETTINGS, SEED, run_dir, method, {"method": name, "hparams": hparams})


def squared_distance(model: nn.Module, anchor: nn.Module) -> float:
    """Sum over every parameter of (theta - theta_source)^2."""
    return sum(float((p.detach() - a.detach()).pow(2).sum()) for p, a in zip(model.parameters(), anchor.parameters(), strict=True))


def distance_ratios(name: str, hparams: dict[str, Any], source_checkpoint: Path, target: torch.Tensor, folder: Path) -> tuple[float, float]:
    """(G, D): the squared distance to the source after `name`, over the same after `finetune` (same start and seed)."""
    source = context(source_checkpoint).source_models()
    finetuned = adapt("finetune", {}, source_checkpoint, target, folder / "finetune")
    adapted = adapt(name, hparams, source_checkpoint, target, folder / name)

    def ratio(adapted_part: nn.Module, finetuned_part: nn.Module, source_part: nn.Module) -> float:
        return squared_distance(adapted_part, source_part) / squared_distance(finetuned_part, source_part)

    return (
        ratio(adapted.generator, finetuned.generator, source.generator),
        ratio(adapted.discriminator, finetuned.discriminator, source.discriminator),
    )


def without_penalty(monkeypatch: pytest.MonkeyPatch, method_name: str) -> None:
    """Break a method: its penalty builder returns None, as a zero weight would. Method files are imported under
    a private module name (benchmark.plugins), so the module is found through the class."""
    module = sys.modules[get_method(method_name).__module__]
    monkeypatch.setattr(module, "anchored_penalty", lambda *args, **kwargs: None)


L2SP_HPARAMS = {"lambda_g": 10.0, "mu_d": 10.0, "form": "sum"}


def test_l2sp_ends_nearer_the_source_than_finetune_in_g_and_d(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source_checkpoint: Path, target: torch.Tensor
) -> None:
    """After 20 steps with lambda_g = mu_d = 10 ("sum" form), G's squared distance to the source is about 0.06 of
    finetune's and D's about 0.38 (measured on CPU). Both must be below 0.5. With the penalty removed the run
    is finetune itself: both ratios are exactly 1, and the check fails."""
    ratio_g, ratio_d = distance_ratios("l2sp", L2SP_HPARAMS, source_checkpoint, target, tmp_path / "real")
    assert ratio_g < NEARER and ratio_d < NEARER, (ratio_g, ratio_d)

    with monkeypatch.context() as patch:
        without_penalty(patch, "l2sp")
        broken_g, broken_d = distance_ratios("l2sp", L2SP_HPARAMS, source_checkpoint, target, tmp_path / "broken")
    assert (broken_g, broken_d) == (1.0, 1.0)  # bit-identical to finetune
    assert not (broken_g < NEARER and broken_d < NEARER)


EWC_HPARAMS = {"lambda_g": 1e3, "fisher_batches": 2, "fisher_batch_size": 16}


def test_ewc_ends_with_g_nearer_the_source_than_finetune(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source_checkpoint: Path, target: torch.Tensor
) -> None:
    """After 20 steps with lambda_g = 1e3 (Fisher from 2 x 16 samples of the source G and D), G's squared distance
    to the source is about 0.01 of finetune's (measured on CPU); it must be below 0.5. EWC leaves D free, so D's
    ratio is not checked (about 0.95: D meets a different G). With the penalty removed the run is finetune itself:
    G's ratio is exactly 1, and the check fails."""
    ratio_g, _ = distance_ratios("ewc", EWC_HPARAMS, source_checkpoint, target, tmp_path / "real")
    assert ratio_g < NEARER, ratio_g

    with monkeypatch.context() as patch:
        without_penalty(patch, "ewc")
        broken_g, broken_d = distance_ratios("ewc", EWC_HPARAMS, source_checkpoint, target, tmp_path / "broken")
    assert (broken_g, broken_d) == (1.0, 1.0)  # the Fisher draws from its own RNG, not the loop's: finetune bit for bit
    assert not broken_g < NEARER


@dataclass(frozen=True)
class AugmentCall:
    """What one call of `diff_augment` received and whether it changed it."""

    images: torch.Tensor  # a detached copy of the input
    requires_grad: bool
    changed: bool

    def role(self, real_images: torch.Tensor) -> str:
        """The batch's origin: "real" when every image is one of the target images; otherwise a fake, with or without G's graph."""
        if self.requires_grad:
            return "fake with grad"
        matches = (self.images[:, None] == real_images[None]).flatten(2).all(2)  # (batch, targets)
        return "real" if bool(matches.any(1).all()) else "fake detached"


def spy_on_diff_augment(monkeypatch: pytest.MonkeyPatch, calls: list[AugmentCall], transform: bool) -> None:
    """Replace `diff_augment` where `Method.augment` looks it up with a spy that records every call. With
    `transform` the spy returns the real function's output; without, it returns its input (the broken variant)."""
    original: Callable[..., torch.Tensor] = method_registry.diff_augment

    def spy(images: torch.Tensor, policy: tuple[str, ...], rng: torch.Generator) -> torch.Tensor:
        output = original(images, policy, rng) if transform else images
        calls.append(AugmentCall(images.detach().clone(), images.requires_grad, not torch.equal(output, images)))
        return output

    monkeypatch.setattr(method_registry, "diff_augment", spy)


def same_weights(a: GANModels, b: GANModels) -> bool:
    """G and D state (parameters and buffers) equal bit for bit."""
    pairs = [(a.generator, b.generator), (a.discriminator, b.discriminator)]
    return all(torch.equal(x, y) for one, two in pairs for x, y in zip(one.state_dict().values(), two.state_dict().values(), strict=True))


def diffaug_run(
    monkeypatch: pytest.MonkeyPatch, transform: bool, source_checkpoint: Path, target: torch.Tensor, run_dir: Path
) -> tuple[list[AugmentCall], GANModels]:
    calls: list[AugmentCall] = []
    with monkeypatch.context() as patch:
        spy_on_diff_augment(patch, calls, transform)
        adapted = adapt("finetune+diffaug", {}, source_checkpoint, target, run_dir)
    return calls, adapted


def test_finetune_diffaug_augments_real_and_fake_batches_and_trains_differently(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source_checkpoint: Path, target: torch.Tensor
) -> None:
    """Per step, DiffAugment sees the real batch and the detached fake batch (D step), then the fake batch that
    carries G's graph (G step): 3 calls, each of batch x 1 x 28 x 28, each changing its images. The run then ends
    with G and D different from plain finetune's (same start and seed). A spy that returns its input unchanged
    leaves the calls as they were but changes nothing, and the run ends bit for bit as finetune: both checks fail."""
    finetuned = adapt("finetune", {}, source_checkpoint, target, tmp_path / "finetune")
    expected_roles = ["real", "fake detached", "fake with grad"] * STEPS

    calls, augmented = diffaug_run(monkeypatch, True, source_checkpoint, target, tmp_path / "diffaug")
    assert [call.role(target) for call in calls] == expected_roles
    assert all(call.images.shape == (BATCH, 1, 28, 28) for call in calls)
    assert all(call.changed for call in calls)
    assert not same_weights(augmented, finetuned)

    broken_calls, broken = diffaug_run(monkeypatch, False, source_checkpoint, target, tmp_path / "broken")
    assert [call.role(target) for call in broken_calls] == expected_roles  # the loop still calls it where it should
    assert not any(call.changed for call in broken_calls)
    assert same_weights(broken, finetuned)  # so "trains differently" fails for the broken variant
