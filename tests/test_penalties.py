"""The anchoring penalties of L2-SP and EWC, and freeze-D's default, against values worked out by hand.

The importance (EWC's Fisher) is deliberately non-uniform: with all ones, EWC and L2-SP coincide and a penalty that
ignores the Fisher, or takes its square root, would pass.
"""

from __future__ import annotations

import pytest
import torch

from benchmark import regularisers
from benchmark.errors import BenchmarkError
from benchmark.methods import get_method
from benchmark.models import GANModels
from benchmark.regularisers import anchored_penalty, snapshot
from conftest import TINY_DIGIT_ARCH

PARAMETERS = [torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([0.5, -1.0, 2.0])]
ANCHORS = [torch.tensor([[0.0, 2.0], [1.0, 1.0]]), torch.tensor([0.0, 0.0, 0.0])]
# Squared differences: [[1, 0], [4, 9]] and [0.25, 1, 4].
IMPORTANCE = [torch.tensor([[2.0, 5.0], [0.25, 1.0]]), torch.tensor([4.0, 9.0, 0.0])]
# Weighted: [[2, 0], [1, 9]] (sum 12) and [1, 9, 0] (sum 10).


@pytest.mark.parametrize(
    ("form", "importance", "expected"),
    [
        ("sum", None, 3 * (14 + 5.25)),  # L2-SP, textbook: every squared difference
        ("mean_per_tensor", None, 3 * (14 / 4 + 5.25 / 3)),  # FreezeD's code: per-tensor means, summed
        ("sum", IMPORTANCE, 3 * (12 + 10)),  # EWC: each squared difference times its Fisher entry
        ("mean_per_tensor", IMPORTANCE, 3 * (12 / 4 + 10 / 3)),
    ],
)
def test_penalty_is_the_weighted_sum_of_squared_differences(form, importance, expected):
    penalty = regularisers.anchored_penalty(PARAMETERS, ANCHORS, 3.0, form, importance)
    assert float(penalty) == pytest.approx(expected, rel=1e-6)


def test_penalty_gradient_is_twice_the_weight_times_importance_times_the_difference():
    parameters = [p.clone().requires_grad_() for p in PARAMETERS]
    anchored_penalty(parameters, ANCHORS, 0.5, "sum", IMPORTANCE).backward()
    for parameter, anchor, fisher in zip(parameters, ANCHORS, IMPORTANCE):
        torch.testing.assert_close(parameter.grad, 2 * 0.5 * fisher * (parameter.detach() - anchor))


def test_a_single_tensor_penalty():
    assert float(anchored_penalty(PARAMETERS[:1], ANCHORS[:1], 2.0, "sum", IMPORTANCE[:1])) == pytest.approx(2 * 12)


def test_zero_weight_builds_no_penalty_and_unknown_forms_are_refused():
    assert anchored_penalty(PARAMETERS, ANCHORS, 0.0, "sum", IMPORTANCE) is None
    with pytest.raises(BenchmarkError, match="Penalty form 'l1' is unknown"):
        anchored_penalty(PARAMETERS, ANCHORS, 1.0, "l1")


def test_snapshot_is_a_detached_copy():
    parameter = torch.nn.Parameter(torch.ones(3))
    (copy,) = snapshot([parameter])
    with torch.no_grad():
        parameter.add_(1.0)
    assert torch.equal(copy, torch.ones(3)) and not copy.requires_grad


ARCH = TINY_DIGIT_ARCH


def shifted(models: GANModels, amount: float) -> list[torch.Tensor]:
    return [p.detach() + amount for p in models.generator.parameters()]


def test_ewc_penalises_with_its_fisher_and_l2sp_without():
    """EWC's penalty on G is lambda * sum F (theta - theta_s)^2 with its own Fisher; L2-SP's is lambda * sum (...)^2 on G
    and mu * sum (...)^2 on D. Anchors 0.5 away from every weight, Fisher entries 2 (first tensor) and 0 elsewhere."""
    generator = GANModels.fresh(ARCH, 0).generator
    sizes = [p.numel() for p in generator.parameters()]
    ewc = get_method("ewc")(lambda_g=10.0)
    ewc.anchor_g = [p.detach() + 0.5 for p in generator.parameters()]
    ewc.fisher_g = [torch.full_like(p, 2.0 if index == 0 else 0.0) for index, p in enumerate(generator.parameters())]
    assert float(ewc.generator_penalty(generator).detach()) == pytest.approx(10.0 * 2.0 * 0.25 * sizes[0], rel=1e-5)

    l2sp = get_method("l2sp")(lambda_g=10.0, mu_d=0.0)
    l2sp.anchor_g = [p.detach() + 0.5 for p in generator.parameters()]
    assert float(l2sp.generator_penalty(generator).detach()) == pytest.approx(10.0 * 0.25 * sum(sizes), rel=1e-5)
    discriminator = GANModels.fresh(ARCH, 0).discriminator
    l2sp.anchor_d = [p.detach() + 0.5 for p in discriminator.parameters()]
    assert l2sp.discriminator_penalty(discriminator) is None  # mu = 0: no term at all
    mean_form = get_method("l2sp")(lambda_g=10.0, mu_d=4.0, form="mean_per_tensor")
    mean_form.anchor_d = l2sp.anchor_d
    expected = 4.0 * 0.25 * len(list(discriminator.parameters()))
    assert float(mean_form.discriminator_penalty(discriminator).detach()) == pytest.approx(expected, rel=1e-5)


def test_freeze_d_left_at_its_default_freezes_the_lowest_block():
    """A config that leaves `frozen_blocks` out runs freeze-D with one frozen block, not plain fine-tuning."""
    models = GANModels.fresh(ARCH, 0)
    method = get_method("freeze_d")()
    trainable_g, trainable_d = method.trainable_parameters(models.generator, models.discriminator)
    blocks = models.discriminator.blocks
    assert method.hparams["frozen_blocks"] == 1
    assert [id(p) for p in trainable_d] == [id(p) for block in blocks[1:] for p in block.parameters()]
    assert [id(p) for p in trainable_g] == [id(p) for p in models.generator.parameters()]
    assert not any(p.requires_grad for p in blocks[0].parameters()) and not blocks[0].training
    assert all(p.requires_grad for block in blocks[1:] for p in block.parameters()) and blocks[1].training


def test_the_last_block_of_d_always_trains():
    models = GANModels.fresh(ARCH, 0)
    blocks = len(models.discriminator.blocks)
    get_method("freeze_d")(frozen_blocks=blocks - 1).trainable_parameters(models.generator, models.discriminator)
    with pytest.raises(BenchmarkError, match=f"frozen_blocks = {blocks}, but D has {blocks} blocks"):
        get_method("freeze_d")(frozen_blocks=blocks).trainable_parameters(models.generator, models.discriminator)


def test_a_penalty_without_the_fisher_fails_these_tests(monkeypatch):
    """The deliberately broken variant the docstring names: EWC's importance dropped (EWC becomes L2-SP)."""
    original = regularisers.anchored_penalty
    monkeypatch.setattr(regularisers, "anchored_penalty", lambda p, a, w, form="sum", importance=None: original(p, a, w, form))
    with pytest.raises(AssertionError):
        test_penalty_is_the_weighted_sum_of_squared_differences("sum", IMPORTANCE, 3 * (12 + 10))


def test_freezing_no_block_is_plain_fine_tuning_and_negative_counts_are_refused():
    models = GANModels.fresh(ARCH, 0)
    _, trainable_d = get_method("freeze_d")(frozen_blocks=0).trainable_parameters(models.generator, models.discriminator)
    assert [id(p) for p in trainable_d] == [id(p) for p in models.discriminator.parameters()]
    with pytest.raises(BenchmarkError, match="'freeze_d.frozen_blocks' = -1 is below its minimum 0"):
        get_method("freeze_d")(frozen_blocks=-1)


def test_ewc_fisher_leaves_the_source_models_as_it_found_them():
    """The Fisher runs both models in eval mode (samples independent, no buffer moves: spectral norm's vectors and
    BatchNorm statistics stay), then gives each model back its own mode."""
    from methods.ewc import generator_fisher

    models = GANModels.fresh(ARCH, 0)
    models.generator.train()
    models.discriminator.eval()
    buffers = [b.clone() for b in [*models.generator.buffers(), *models.discriminator.buffers()]]
    generator_fisher(models.generator, models.discriminator, batches=2, batch_size=3, seed=0)
    assert models.generator.training and not models.discriminator.training
    assert all(torch.equal(a, b) for a, b in zip(buffers, [*models.generator.buffers(), *models.discriminator.buffers()]))
    models.generator.eval()
    models.discriminator.train()
    generator_fisher(models.generator, models.discriminator, batches=1, batch_size=2, seed=0)
    assert not models.generator.training and models.discriminator.training
    assert all(torch.equal(a, b) for a, b in zip(buffers, [*models.generator.buffers(), *models.discriminator.buffers()]))
