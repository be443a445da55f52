"""The outer updates of Reptile and MAML-GAN, checked gradient by gradient.

The outer optimisers are replaced by spies that record each meta-parameter's gradient when `step()` is called, so
the tests see the meta-gradient itself, not just that the weights moved:
- Reptile: the mean over tasks of (meta-weights - task weights), for G and D, and the mean squared distance;
- MAML-GAN with the inner loop held still: the mean over tasks of the query losses' gradients at the meta-weights.
"""

from __future__ import annotations

import copy
import sys

import learn2learn
import pytest
import torch

from benchmark.methods import get_method
from benchmark.models import Architecture, GANModels
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


def test_reptile_moves_the_meta_weights_towards_the_task_weights(monkeypatch):
    """After one outer step on one task, every trainable meta-weight has moved towards the weights the task's inner
    loop reached (Adam's first step moves each weight by -lr * sign(gradient), and the gradient is theta - phi).
    A Reptile with the meta-gradient's sign flipped moves every weight away instead, and the check fails, as
    shown."""
    reptile_module = sys.modules[get_method("reptile").__module__]
    support, query = tasks()[0]

    def share_moved_towards() -> float:
        method = get_method("reptile")(**{**HPARAMS, "meta_batch_size": 1, "inner_lr": 0.05})
        models = GANModels.fresh(ARCH, 0)
        before = copy.deepcopy(models)
        adapted = copy.deepcopy(models)  # the inner loop again, on copies, with the same random draws
        inner_g = torch.optim.SGD(adapted.generator.parameters(), lr=0.05)
        inner_d = torch.optim.SGD(adapted.discriminator.parameters(), lr=0.05)
        reptile_module.inner_loop(
            adapted.generator, adapted.discriminator, support, 1, 4, "nonsaturating", torch.Generator().manual_seed(0),
            reptile_module._sgd_step(inner_d), reptile_module._sgd_step(inner_g),
        )  # fmt: skip
        method.meta_step(models, [(support, query)], torch.Generator().manual_seed(0))
        towards = total = 0
        for meta, start, task in [*zip(models.generator.parameters(), before.generator.parameters(), adapted.generator.parameters()),
                                  *zip(models.discriminator.parameters(), before.discriminator.parameters(), adapted.discriminator.parameters())]:  # fmt: skip
            moved, wanted = (meta - start).detach(), (task - start).detach()
            where = wanted != 0
            towards += int(((moved * wanted)[where] > 0).sum())
            total += int(where.sum())
        return towards / total

    assert share_moved_towards() > 0.99
    original = reptile_module.accumulate_gradients
    monkeypatch.setattr(reptile_module, "accumulate_gradients", lambda params, grads, scale: original(params, tuple(-g for g in grads), scale))
    assert share_moved_towards() < 0.01


# Without spectral norm: its power-iteration vectors carry over from task to task (as they should), which would
# couple a hand-made reference's tasks to the order of every forward pass.
PLAIN_ARCH = Architecture.from_dict({**ARCH.to_dict(), "discriminator_spectral_norm": False})


def expected_maml_gradients(models: GANModels, batch: list, seed: int, loss: str, judge_steps: int = 0, inner_lr: float = 0.0) -> tuple:
    """The outer gradients with the support inner loop held still, worked out by hand, averaged over the tasks.
    D: the query loss of D at the meta-weights. G: the G loss of the meta-G's samples judged by a copy of D that
    took `judge_steps` SGD steps at `inner_lr` on the query images against G's samples. Each task starts from a
    fresh copy of the models (the meta-step restores G's BatchNorm statistics between tasks); noise and batches
    are drawn in the meta-step's order."""
    rng = torch.Generator().manual_seed(seed)
    total_g = total_d = None
    losses_d, losses_g = [], []
    for _, query in batch:
        generator, discriminator = copy.deepcopy(models.generator), copy.deepcopy(models.discriminator)
        judge = copy.deepcopy(models.discriminator)
        sgd = torch.optim.SGD(judge.parameters(), lr=inner_lr)
        for _ in range(judge_steps):
            real = query[torch.randint(len(query), (HPARAMS["inner_batch_size"],), generator=rng)]
            z = torch.randn(HPARAMS["inner_batch_size"], ARCH.z_dim, generator=rng)
            sgd.zero_grad()
            discriminator_loss(loss, judge(real), judge(generator(z).detach())).backward()
            sgd.step()
        fake = generator(torch.randn(len(query), ARCH.z_dim, generator=rng))
        loss_d = discriminator_loss(loss, discriminator(query), discriminator(fake.detach()))
        loss_g = generator_loss(loss, judge(fake))
        grads_d = torch.autograd.grad(loss_d, list(discriminator.parameters()))
        grads_g = torch.autograd.grad(loss_g, list(generator.parameters()))
        total_d = [g / len(batch) for g in grads_d] if total_d is None else [t + g / len(batch) for t, g in zip(total_d, grads_d)]
        total_g = [g / len(batch) for g in grads_g] if total_g is None else [t + g / len(batch) for t, g in zip(total_g, grads_g)]
        losses_d.append(loss_d.item())
        losses_g.append(loss_g.item())
    return total_g, total_d, sum(losses_d) / len(batch), sum(losses_g) / len(batch)


@pytest.mark.parametrize("loss", ["nonsaturating", "hinge"])
def test_maml_meta_gradient_is_the_mean_query_loss_gradient(monkeypatch, loss):
    """With the support inner loop and the judge's steps held still, the outer gradients are the query losses'
    gradients at the meta-weights."""
    method = get_method("maml_gan")(**HPARAMS, loss=loss)
    monkeypatch.setattr(sys.modules[type(method).__module__], "inner_loop", lambda *args: None)
    monkeypatch.setattr(sys.modules[type(method).__module__], "discriminator_steps", lambda *args: None)
    models = GANModels.fresh(PLAIN_ARCH, 0)
    spy_g, spy_d = spied(method, models)
    batch = tasks()
    want_g, want_d, loss_d, loss_g = expected_maml_gradients(models, batch, seed=3, loss=loss)
    logged = method.meta_step(models, batch, torch.Generator().manual_seed(3))
    for got, want in zip([*spy_g.gradients, *spy_d.gradients], [*want_g, *want_d]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    assert logged == pytest.approx({"query_loss_d": loss_d, "query_loss_g": loss_g}, rel=1e-5)


def test_maml_generator_is_judged_by_a_discriminator_adapted_on_the_query_images(monkeypatch):
    """DAWSON's generator meta-objective, value for value: G's outer gradient is that of the G loss under a copy of
    the meta-D that took `inner_steps` SGD steps at `inner_lr` on the query images (support loop held still here).
    Scoring G with the unadapted D instead (the objective before this fix) fails the comparison, as shown."""
    method_module = sys.modules[get_method("maml_gan").__module__]
    monkeypatch.setattr(method_module, "inner_loop", lambda *args: None)
    hparams = {**HPARAMS, "inner_steps": 2, "inner_lr": 0.5}
    models = GANModels.fresh(PLAIN_ARCH, 0)
    batch = tasks()
    want_g, want_d, _, _ = expected_maml_gradients(models, batch, seed=3, loss="nonsaturating", judge_steps=2, inner_lr=0.5)

    def generator_gradients() -> list[torch.Tensor]:
        method = get_method("maml_gan")(**hparams)
        spy_g, spy_d = spied(method, models)
        method.meta_step(models, batch, torch.Generator().manual_seed(3))
        for got, want in zip(spy_d.gradients, want_d):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
        return spy_g.gradients

    def matches(gradients: list[torch.Tensor]) -> bool:
        return all(torch.allclose(got, want, rtol=1e-4, atol=1e-7) for got, want in zip(gradients, want_g))

    assert matches(generator_gradients())
    real_steps = method_module.discriminator_steps
    # Broken: the judge's steps run (same noise drawn) at rate 0, so G is judged by the meta-D itself.
    monkeypatch.setattr(
        method_module,
        "discriminator_steps",
        lambda d, g, images, steps, size, loss, rng, step: real_steps(d, g, images, steps, size, loss, rng, lambda _: None),
    )
    assert not matches(generator_gradients())


def meta_gradients(method_name: str, models: GANModels, batch: list, **hparams) -> list[torch.Tensor]:
    """G's and D's meta-gradients of one outer step (the spies apply nothing, so `models` stays as it was)."""
    start = copy.deepcopy(models.discriminator.state_dict()), copy.deepcopy(models.generator.state_dict())
    method = get_method(method_name)(**{**HPARAMS, **hparams})
    spy_g, spy_d = spied(method, models)
    method.meta_step(models, batch, torch.Generator().manual_seed(3))
    models.discriminator.load_state_dict(start[0])  # spectral-norm vectors moved on: the next call starts alike
    models.generator.load_state_dict(start[1])
    return [*spy_g.gradients, *spy_d.gradients]


def differs(first: list[torch.Tensor], second: list[torch.Tensor], part: slice) -> bool:
    return not all(torch.allclose(a, b, rtol=1e-5, atol=1e-8) for a, b in list(zip(first, second))[part])


def test_changing_only_the_query_images_changes_the_generator_meta_gradient(monkeypatch):
    """The query images reach G's meta-gradient (through the judge adapted on them). Before DAWSON's objective G was
    scored by the support-adapted D on fresh noise, and no query image reached it: a judge that does not adapt (its
    steps replaced by nothing) brings that back, and the check fails, as shown."""
    models = GANModels.fresh(ARCH, 0)
    batch = tasks()
    other_query = [(support, torch.flip(query, dims=[0, 3])) for support, query in batch]
    g_part = slice(0, len(list(models.generator.parameters())))
    assert differs(meta_gradients("maml_gan", models, batch), meta_gradients("maml_gan", models, other_query), g_part)
    monkeypatch.setattr(sys.modules[get_method("maml_gan").__module__], "discriminator_steps", lambda *args: None)
    assert not differs(meta_gradients("maml_gan", models, batch), meta_gradients("maml_gan", models, other_query), g_part)


def test_changing_only_the_support_images_changes_both_meta_gradients(monkeypatch):
    """The support images reach G's and D's meta-gradients through the inner loop; an inner loop that does nothing
    makes both independent of them, and the check fails, as shown."""
    models = GANModels.fresh(ARCH, 0)
    batch = tasks()
    other_support = [(torch.flip(support, dims=[0, 3]), query) for support, query in batch]
    n_g = len(list(models.generator.parameters()))
    for part in (slice(0, n_g), slice(n_g, None)):
        assert differs(meta_gradients("maml_gan", models, batch), meta_gradients("maml_gan", models, other_support), part)
    monkeypatch.setattr(sys.modules[get_method("maml_gan").__module__], "inner_loop", lambda *args: None)
    for part in (slice(0, n_g), slice(n_g, None)):
        assert not differs(meta_gradients("maml_gan", models, batch), meta_gradients("maml_gan", models, other_support), part)


def test_second_order_maml_differentiates_through_the_inner_loop(monkeypatch):
    """`first_order: false` adds the inner loop's second-order terms, so G's and D's meta-gradients differ from the
    first-order ones; a MAML that ignores the flag gives equal gradients, and the check fails, as shown."""
    models = GANModels.fresh(ARCH, 0)
    batch = tasks()
    n_g = len(list(models.generator.parameters()))

    def second_order_differs() -> bool:
        first, second = (meta_gradients("maml_gan", models, batch, inner_lr=0.5, first_order=flag) for flag in (True, False))
        return differs(first, second, slice(0, n_g)) and differs(first, second, slice(n_g, None))

    assert second_order_differs()
    original = learn2learn.algorithms.MAML.__init__
    monkeypatch.setattr(
        learn2learn.algorithms.MAML, "__init__", lambda self, model, lr, first_order=False, **kw: original(self, model, lr, first_order=True, **kw)
    )
    assert not second_order_differs()


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
    start = copy.deepcopy(models.discriminator.state_dict())
    method.meta_step(models, tasks(), torch.Generator().manual_seed(3))
    first = [g.clone() for g in [*spy_g.gradients, *spy_d.gradients]]
    models.discriminator.load_state_dict(start)  # spectral-norm vectors carry over between steps: start from the same
    method.meta_step(models, tasks(), torch.Generator().manual_seed(3))  # the spies apply nothing: same weights
    for got, want in zip([*spy_g.gradients, *spy_d.gradients], first):
        torch.testing.assert_close(got, want)
