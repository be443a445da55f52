"""Transfer methods against their papers' definitions: freeze-D, L2-SP, EWC and the DiffAugment switch."""

from __future__ import annotations

import pytest
import torch

from benchmark.augment import diff_augment
from benchmark.errors import BenchmarkError
from benchmark.methods import AdaptationContext, get_method
from benchmark.models import Architecture, GANModels
from benchmark.training import TrainingHooks, TrainSettings, as_training_tensor, train_gan

ARCH = Architecture.from_config({"width": 8}, image_size=28, channels=1)
CPU = torch.device("cpu")
SETTINGS = TrainSettings.from_config({"steps": 6, "batch_size": 8, "log_every": 3})


@pytest.fixture(scope="module")
def source_checkpoint(tmp_path_factory, digits):
    """A briefly pretrained source G and D on digits 0-4 (the transfer methods' starting point)."""
    folder = tmp_path_factory.mktemp("source")
    images = as_training_tensor(digits.images[digits.labels < 5][:300], CPU)
    train_gan(
        GANModels.fresh(ARCH, 0),
        images,
        TrainSettings.from_config({"steps": 10, "batch_size": 16, "log_every": 5}),
        0,
        folder,
        TrainingHooks(),
        {"source": 1},
    )
    return folder / "checkpoint.pt"


@pytest.fixture
def target(digits):
    return as_training_tensor(digits.images[digits.labels >= 5][:10], CPU)


def adapt(method_name, hparams, source_checkpoint, target, folder, seed=3):
    method = get_method(method_name)(**hparams)
    context = AdaptationContext(ARCH, seed, CPU, {"source_checkpoint": source_checkpoint})
    models = method.initialise(context)
    return method, train_gan(models, target, SETTINGS, seed, folder, method, {"method": method_name})


def source_models(source_checkpoint):
    return AdaptationContext(ARCH, 0, CPU, {"source_checkpoint": source_checkpoint}).source_models()


def test_freeze_d_keeps_the_lowest_blocks_bit_identical(tmp_path, source_checkpoint, target):
    source = source_models(source_checkpoint)
    _, adapted = adapt("freeze_d", {"frozen_blocks": 2}, source_checkpoint, target, tmp_path)
    for index, (before, after) in enumerate(zip(source.discriminator.blocks, adapted.discriminator.blocks)):
        same = all(torch.equal(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values()))
        assert same == (index < 2), f"D block {index}: frozen blocks must be identical, trainable ones must change"
    assert not all(torch.equal(a, b) for a, b in zip(source.generator.parameters(), adapted.generator.parameters()))


def test_freeze_d_refuses_to_freeze_every_block():
    method = get_method("freeze_d")(frozen_blocks=3)
    models = GANModels.fresh(ARCH, 0)
    with pytest.raises(BenchmarkError, match="at least the last must train"):
        method.trainable_parameters(models.generator, models.discriminator)


def test_l2sp_with_zero_weights_is_bit_identical_to_finetune(tmp_path, source_checkpoint, target):
    _, finetuned = adapt("finetune", {}, source_checkpoint, target, tmp_path / "finetune")
    _, l2sp = adapt("l2sp", {"lambda_g": 0.0, "mu_d": 0.0}, source_checkpoint, target, tmp_path / "l2sp")
    for a, b in zip(finetuned.generator.state_dict().values(), l2sp.generator.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(finetuned.discriminator.state_dict().values(), l2sp.discriminator.state_dict().values()):
        assert torch.equal(a, b)


def test_l2sp_penalty_gradient_is_two_lambda_times_the_distance(source_checkpoint):
    method = get_method("l2sp")(lambda_g=0.3, mu_d=0.0, form="sum")
    models = method.initialise(AdaptationContext(ARCH, 0, CPU, {"source_checkpoint": source_checkpoint}))
    with torch.no_grad():
        for parameter in models.generator.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
    method.generator_penalty(models.generator).backward()
    for parameter, anchor in zip(models.generator.parameters(), method.anchor_g):
        torch.testing.assert_close(parameter.grad, 2 * 0.3 * (parameter.detach() - anchor))
    assert method.discriminator_penalty(models.discriminator) is None


def test_l2sp_forms_reduce_differently(source_checkpoint):
    penalties = {}
    for form in ("sum", "mean_per_tensor"):
        method = get_method("l2sp")(lambda_g=1.0, form=form)
        models = method.initialise(AdaptationContext(ARCH, 0, CPU, {"source_checkpoint": source_checkpoint}))
        with torch.no_grad():
            for parameter in models.generator.parameters():
                parameter.add_(0.01)
        penalties[form] = method.generator_penalty(models.generator).item()
    count = sum(p.numel() for p in models.generator.parameters())
    tensors = len(list(models.generator.parameters()))
    assert penalties["sum"] == pytest.approx(count * 1e-4, rel=1e-3)
    assert penalties["mean_per_tensor"] == pytest.approx(tensors * 1e-4, rel=1e-3)


def test_ewc_with_unit_fisher_equals_l2sp_sum_form(source_checkpoint):
    context = AdaptationContext(ARCH, 0, CPU, {"source_checkpoint": source_checkpoint})
    ewc = get_method("ewc")(lambda_g=0.7, fisher_batches=2, fisher_batch_size=8)
    l2sp = get_method("l2sp")(lambda_g=0.7, form="sum")
    models = ewc.initialise(context)
    l2sp.initialise(context)
    ewc.fisher_g = [torch.ones_like(f) for f in ewc.fisher_g]
    with torch.no_grad():
        for parameter in models.generator.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
    assert torch.equal(ewc.generator_penalty(models.generator), l2sp.generator_penalty(models.generator))


def test_ewc_fisher_is_seeded_nonnegative_and_informative(source_checkpoint):
    context = AdaptationContext(ARCH, 5, CPU, {"source_checkpoint": source_checkpoint})
    first, second = get_method("ewc")(fisher_batches=3), get_method("ewc")(fisher_batches=3)
    first.initialise(context)
    second.initialise(context)
    for a, b in zip(first.fisher_g, second.fisher_g):
        assert torch.equal(a, b) and (a >= 0).all()
    flat = torch.cat([f.flatten() for f in first.fisher_g])
    assert flat.max() > 10 * flat.median(), "a diagonal Fisher that weighs every parameter alike would be L2-SP"


def test_diffaug_variant_of_any_method():
    variant = get_method("freeze_d+diffaug")
    assert variant.name == "freeze_d+diffaug" and issubclass(variant, get_method("freeze_d"))
    assert variant.augmentation == ("color", "translation", "cutout") and get_method("freeze_d").augmentation == ()
    assert get_method("freeze_d+diffaug") is variant
    with pytest.raises(BenchmarkError, match=r"Unknown method modifier '\+mixup'"):
        get_method("finetune+mixup")


def test_diffaugment_is_differentiable_seeded_and_changes_images(digits):
    images = as_training_tensor(digits.images[:16], CPU).requires_grad_(True)
    out = diff_augment(images, ("color", "translation", "cutout"), torch.Generator().manual_seed(0))
    again = diff_augment(images, ("color", "translation", "cutout"), torch.Generator().manual_seed(0))
    assert torch.equal(out, again) and not torch.equal(out, images)
    out.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    # cutout blanks a square of half the image side, centred inside the image (so clipped to >= 7 x 7 at borders)
    cut = diff_augment(torch.ones(64, 1, 28, 28), ("cutout",), torch.Generator().manual_seed(1))
    for mask in cut[:, 0] == 0:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert 7 <= len(rows) <= 14 and 7 <= len(cols) <= 14
        assert mask.sum() == len(rows) * len(cols), "the blanked region is one rectangle"
    shifted = diff_augment(torch.ones(64, 1, 28, 28), ("translation",), torch.Generator().manual_seed(2))
    assert ((shifted == 0).flatten(1).sum(1) <= 28 * 28 - 24 * 24).all()  # shifts of at most 1/8 of the side


def test_training_loop_augments_real_and_fake_in_both_steps(tmp_path, digits):
    calls = []

    class Spy(TrainingHooks):
        def augment(self, images, rng):
            calls.append(images.requires_grad)
            return images

    train_gan(
        GANModels.fresh(ARCH, 0),
        as_training_tensor(digits.images[:32], CPU),
        TrainSettings.from_config({"steps": 2, "batch_size": 4}),
        0,
        tmp_path,
        Spy(),
        {},
    )
    # per step: real and detached fake in the D step, then the fake that carries G's gradient in the G step
    assert calls == [False, False, True] * 2


def test_ewc_fisher_is_the_mean_of_per_sample_squared_gradients(source_checkpoint):
    from benchmark.training import generator_loss

    models = source_models(source_checkpoint)
    method = get_method("ewc")(fisher_batches=2, fisher_batch_size=3)
    method.initialise(AdaptationContext(ARCH, 4, CPU, {"source_checkpoint": source_checkpoint}))
    generator, discriminator = models.generator.eval(), models.discriminator.eval()
    rng = torch.Generator().manual_seed(4)
    expected = [torch.zeros_like(p) for p in generator.parameters()]
    for _ in range(2):
        for z in torch.randn(3, ARCH.z_dim, generator=rng):
            loss = generator_loss("nonsaturating", discriminator(generator(z[None])))
            for total, gradient in zip(expected, torch.autograd.grad(loss, list(generator.parameters()))):
                total += gradient.pow(2) / 6
    for got, want in zip(method.fisher_g, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-10)


def test_ewc_trains_and_its_fisher_carries_no_graph(tmp_path, source_checkpoint, target):
    method, adapted = adapt("ewc", {"fisher_batches": 2, "fisher_batch_size": 4}, source_checkpoint, target, tmp_path)
    assert all(f.grad_fn is None and not f.requires_grad for f in method.fisher_g)
    source = source_models(source_checkpoint)
    assert not all(torch.equal(a, b) for a, b in zip(source.generator.parameters(), adapted.generator.parameters()))
