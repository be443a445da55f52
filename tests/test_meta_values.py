"""The outer updates of Reptile and MAML-GAN, checked gradient by gradient.

The outer optimisers are replaced by spies that record each meta-parameter's gradient when `step()` is called, so
the tests see the meta-gradient itself, not just that the weights moved:
- Reptile: the mean over tasks of (meta-weights - task weights), for G and D, and the mean squared distance;
- MAML-GAN with the inner loop held still: the mean over tasks of the query losses' gradients at the meta-weights.
"""

from __future__ import annotations

import copy
import sys

import pytest
import torch

from benchmark.methods import get_method
from benchmark.models import GANModels
from benchmark.training import discriminator_loss, generator_loss
from conftest import TINY_DIGIT_ARCH

ARCH = TINY_DIGIT_ARCH
HPARAMS = {"inner_steps": 1, "inner_batch_size": 4, "meta_batch_size": 2, "outer_lr": 1e-3}


class Spy:
    """An outer optimiser that records the gradients it would apply, and applies nothing."""

    def __init__(self, parameters: list[torch.nn.Parameter]) -> None:
        self.parameters, self.gradients = parameters, None

    def zero_grad(self, set_to_none: bool = True) -> None:
        for parameter in self.parameters:
            parameter.grad = None

    def step(self) -> None:
        self.gradients = [None if p.grad is None else p.grad.clone() for p in self.parameters]


def spied(method, models: GANModels) -> tuple[Spy, Spy]:
    spies = tuple(Spy([p for p in model.parameters() if p.requires_grad]) for model in (models.generator, models.discriminator))
    method._outer = spies
    return spies


def tasks() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(5)
    return [(torch.rand(6, 1, 28, 28, generator=generator) * 2 - 1, torch.rand(5, 1, 28, 28, generator=generator) * 2 - 1) for _ in range(2)]


def test_reptile_meta_gradient_is_the_mean_of_meta_minus_task_weights(monkeypatch):
    """Task i's inner loop moves every trainable weight by +1 (task 0) or +3 (task 1): the meta-gradient is
    -(1 + 3) / 2 = -2 everywhere, and the mean squared distance is (1 + 9) / 2 per weight."""
    method = get_method("reptile")(**HPARAMS)
    shifts = iter([1.0, 3.0])

    def shifting_inner_loop(generator, discriminator, *args) -> None:
        shift = next(shifts)
        with torch.no_grad():
            for parameter in [*generator.parameters(), *discriminator.parameters()]:
                parameter.add_(shift)

    monkeypatch.setattr(sys.modules[type(method).__module__], "inner_loop", shifting_inner_loop)
    models = GANModels.fresh(ARCH, 0)
    models.discriminator.blocks[0].requires_grad_(False)  # frozen weights are not meta-parameters
    spy_g, spy_d = spied(method, models)
    before = copy.deepcopy(models)
    logged = method.meta_step(models, tasks(), torch.Generator().manual_seed(0))
    for gradient in [*spy_g.gradients, *spy_d.gradients]:
        torch.testing.assert_close(gradient, torch.full_like(gradient, -2.0))
    trainable = sum(p.numel() for p in [*spy_g.parameters, *spy_d.parameters])
    assert logged["squared_distance_to_task_weights"] == pytest.approx(5.0 * trainable, rel=1e-6)
    for meta, original in zip(models.generator.parameters(), before.generator.parameters()):
        assert torch.equal(meta, original)  # the task copies moved; the meta-weights wait for the outer step


def expected_maml_gradients(models: GANModels, batch: list, seed: int, loss: str) -> tuple[list, list, float, float]:
    """The query losses' gradients at the meta-weights, averaged over the tasks: each task on a fresh copy of the
    models (the meta-step restores buffers between tasks), with the query noise drawn as the meta-step draws it."""
    rng = torch.Generator().manual_seed(seed)
    total_g = total_d = None
    losses_d, losses_g = [], []
    for _, query in batch:
        generator, discriminator = copy.deepcopy(models.generator), copy.deepcopy(models.discriminator)
        fake = generator(torch.randn(len(query), ARCH.z_dim, generator=rng))
        loss_d = discriminator_loss(loss, discriminator(query), discriminator(fake.detach()))
        loss_g = generator_loss(loss, discriminator(fake))
        grads_d = torch.autograd.grad(loss_d, list(discriminator.parameters()), retain_graph=True)
        grads_g = torch.autograd.grad(loss_g, list(generator.parameters()))
        total_d = [g / len(batch) for g in grads_d] if total_d is None else [t + g / len(batch) for t, g in zip(total_d, grads_d)]
        total_g = [g / len(batch) for g in grads_g] if total_g is None else [t + g / len(batch) for t, g in zip(total_g, grads_g)]
        losses_d.append(loss_d.item())
        losses_g.append(loss_g.item())
    return total_g, total_d, sum(losses_d) / len(batch), sum(losses_g) / len(batch)


@pytest.mark.parametrize("loss", ["nonsaturating", "hinge"])
def test_maml_meta_gradient_is_the_mean_query_loss_gradient(monkeypatch, loss):
    method = get_method("maml_gan")(**HPARAMS, loss=loss)
    monkeypatch.setattr(sys.modules[type(method).__module__], "inner_loop", lambda *args: None)
    models = GANModels.fresh(ARCH, 0)
    spy_g, spy_d = spied(method, models)
    batch = tasks()
    want_g, want_d, loss_d, loss_g = expected_maml_gradients(models, batch, seed=3, loss=loss)
    logged = method.meta_step(models, batch, torch.Generator().manual_seed(3))
    for got, want in zip([*spy_g.gradients, *spy_d.gradients], [*want_g, *want_d]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    assert logged == pytest.approx({"query_loss_d": loss_d, "query_loss_g": loss_g}, rel=1e-5)


def test_maml_inner_loop_adapts_the_clones_at_the_inner_rate(monkeypatch):
    """The inner steps go through learn2learn's `adapt` at `inner_lr`: one inner step of a task changes the query
    loss the outer gradient is taken from, so the meta-gradient differs from the one with the inner loop held still."""
    batch = tasks()
    method = get_method("maml_gan")(**HPARAMS, inner_lr=0.5)
    models = GANModels.fresh(ARCH, 0)
    spy_g, _ = spied(method, models)
    method.meta_step(models, batch, torch.Generator().manual_seed(3))
    held = get_method("maml_gan")(**HPARAMS, inner_lr=0.0)
    held_g, _ = spied(held, models)
    held.meta_step(models, batch, torch.Generator().manual_seed(3))
    assert held._maml[0].lr == 0.0 and method._maml[0].lr == 0.5
    assert not all(torch.allclose(a, b) for a, b in zip(spy_g.gradients, held_g.gradients))


def test_reptile_inner_steps_are_plain_sgd_at_the_inner_rate(monkeypatch):
    """An inner loop of two steps on the loss sum(weights) (gradient 1 everywhere): SGD at inner_lr 0.25 moves each
    task weight by -0.5 in all, so the meta-gradient (meta - task weights) is +0.5. Gradients left over from the first
    step would make it 0.75."""
    method = get_method("reptile")(**{**HPARAMS, "inner_lr": 0.25})

    def two_sum_steps(generator, discriminator, support, steps, batch_size, loss, rng, step_d, step_g) -> None:
        for _ in range(2):
            step_d(sum(p.sum() for p in discriminator.parameters()))
            step_g(sum(p.sum() for p in generator.parameters()))

    monkeypatch.setattr(sys.modules[type(method).__module__], "inner_loop", two_sum_steps)
    models = GANModels.fresh(ARCH, 0)
    spy_g, spy_d = spied(method, models)
    method.meta_step(models, tasks(), torch.Generator().manual_seed(0))
    for gradient in [*spy_g.gradients, *spy_d.gradients]:
        torch.testing.assert_close(gradient, torch.full_like(gradient, 0.5))


@pytest.mark.parametrize("name", ["reptile", "maml_gan"])
def test_each_outer_step_starts_from_fresh_gradients(monkeypatch, name):
    """Two meta-steps on the same tasks from the same weights record the same meta-gradient: nothing is carried over."""
    method = get_method(name)(**HPARAMS)
    models = GANModels.fresh(ARCH, 0)
    spy_g, spy_d = spied(method, models)
    method.meta_step(models, tasks(), torch.Generator().manual_seed(3))
    first = [g.clone() for g in [*spy_g.gradients, *spy_d.gradients]]
    method.meta_step(models, tasks(), torch.Generator().manual_seed(3))  # the spies apply nothing: same weights
    for got, want in zip([*spy_g.gradients, *spy_d.gradients], first):
        torch.testing.assert_close(got, want)
