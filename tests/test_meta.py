"""Meta-learners (MAML-GAN through learn2learn, Reptile): the outer step really moves the meta-parameters,
frozen parameters are tolerated, and inner loops leave the meta-model's buffers alone."""

from __future__ import annotations

import copy
import json

import learn2learn
import pytest
import torch

from benchmark.errors import BenchmarkError
from benchmark.meta import inner_loop
from benchmark.models import preserved_buffers
from benchmark.methods import get_method
from benchmark.models import Architecture, GANModels
from benchmark.splits import build_meta_manifest, build_source_manifest
from benchmark.training import as_training_tensor
from conftest import run_cli, save_prepared

ARCH = Architecture(width=8)
CPU = torch.device("cpu")
HPARAMS = {"inner_steps": 2, "inner_batch_size": 8, "meta_batch_size": 2, "outer_lr": 1e-3}


@pytest.fixture
def tasks(digits):
    images = as_training_tensor(digits.images, CPU)
    return [(images[digits.labels == label][:10], images[digits.labels == label][10:20]) for label in (0, 1)]


def _state(module):
    return {key: value.clone() for key, value in module.state_dict().items()}


@pytest.mark.parametrize("name", ["maml_gan", "reptile"])
def test_outer_step_changes_the_meta_parameters(name, tasks):
    method = get_method(name)(**HPARAMS)
    models = GANModels.fresh(ARCH, 0)
    before_g, before_d = copy.deepcopy(list(models.generator.parameters())), copy.deepcopy(list(models.discriminator.parameters()))
    method.meta_step(models, tasks, torch.Generator().manual_seed(0))
    assert all(not torch.equal(a, b) for a, b in zip(before_g, models.generator.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(before_d, models.discriminator.parameters()))


@pytest.mark.parametrize("name", ["maml_gan", "reptile"])
def test_frozen_parameters_do_not_crash_and_stay_put(name, tasks):
    method = get_method(name)(**HPARAMS)
    models = GANModels.fresh(ARCH, 0)
    models.discriminator.blocks[0].requires_grad_(False)
    frozen = copy.deepcopy(list(models.discriminator.blocks[0].parameters()))
    method.meta_step(models, tasks, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(frozen, models.discriminator.blocks[0].parameters()))


def test_maml_meta_step_leaves_meta_buffers_untouched(tasks):
    method = get_method("maml_gan")(**HPARAMS)
    models = GANModels.fresh(ARCH, 0)
    buffers_g, buffers_d = _state(models.generator), _state(models.discriminator)
    method.meta_step(models, tasks, torch.Generator().manual_seed(0))
    for key, value in models.generator.state_dict().items():
        if "running" in key or "num_batches" in key:
            assert torch.equal(value, buffers_g[key]), key
    for key, value in models.discriminator.state_dict().items():
        if key.endswith("_u") or key.endswith("_v"):
            assert torch.equal(value, buffers_d[key]), key


def test_without_protection_a_learn2learn_inner_loop_would_corrupt_batchnorm(tasks):
    """Shows the hazard the protection guards against: clones share buffers with the meta-model."""
    models = GANModels.fresh(ARCH, 0)
    maml_g = learn2learn.algorithms.MAML(models.generator, lr=0.01, first_order=True)
    maml_d = learn2learn.algorithms.MAML(models.discriminator, lr=0.01, first_order=True)
    running_mean = models.generator.blocks[0][2].running_mean.clone()
    generator, discriminator = maml_g.clone(), maml_d.clone()
    inner_loop(generator, discriminator, tasks[0][0], 1, 8, "nonsaturating", torch.Generator().manual_seed(0), discriminator.adapt, generator.adapt)
    assert not torch.equal(models.generator.blocks[0][2].running_mean, running_mean)
    with preserved_buffers(models.generator):
        generator = maml_g.clone()
        generator(torch.randn(8, ARCH.z_dim))
        changed = models.generator.blocks[0][2].running_mean.clone()
    assert not torch.equal(changed, models.generator.blocks[0][2].running_mean)


def test_meta_training_stage_writes_a_loadable_checkpoint(tmp_path, digits):
    data = save_prepared(digits, tmp_path, "digits")
    source = build_source_manifest("low", {"dataset": "digits", "classes": [0, 1, 2, 3, 4]}, digits, 0)
    (tmp_path / "source.json").write_text(json.dumps(source))
    settings = json.dumps({"unit": "class", "count": 6, "support_size": 5, "query_size": 5, "split_seed": 0})
    result = run_cli("split-meta", "--settings", settings, "--source-manifest", str(tmp_path / "source.json"), "--dataset", str(data), "--output", str(tmp_path / "meta.json"))
    assert result.returncode == 0, result.stderr
    train = json.dumps({"method": "maml_gan", "method_hparams": {**HPARAMS, "meta_iterations": 2}, "architecture": {"width": 8}, "seed": 0, "device": "cpu"})
    result = run_cli("meta-train", "--settings", train, "--manifest", str(tmp_path / "meta.json"), "--dataset", str(data), "--output-dir", str(tmp_path / "maml"))
    assert result.returncode == 0, result.stderr
    payload = torch.load(tmp_path / "maml" / "checkpoint.pt", weights_only=True)
    assert payload["step"] == 2 and payload["architecture"]["width"] == 8
    not_meta = run_cli("meta-train", "--settings", train.replace("maml_gan", "finetune"), "--manifest", str(tmp_path / "meta.json"), "--dataset", str(data), "--output-dir", str(tmp_path / "x"))
    assert not_meta.returncode == 2 and "not a meta-learner" in not_meta.stderr


def test_meta_manifest_is_seeded_disjoint_and_within_the_source(digits):
    source = build_source_manifest("low", {"dataset": "digits", "classes": [0, 1, 2, 3, 4]}, digits, 0)
    first = build_meta_manifest(source, digits, "class", 50, 5, 5, 0)
    assert first == build_meta_manifest(source, digits, "class", 50, 5, 5, 0)
    assert first["tasks"] != build_meta_manifest(source, digits, "class", 50, 5, 5, 1)["tasks"]
    allowed = set(source["train"]["indices"])
    for task in first["tasks"]:
        assert not set(task["support"]) & set(task["query"])
        assert set(task["support"]) | set(task["query"]) <= allowed
        assert {int(digits.labels[i]) for i in task["support"] + task["query"]} == {int(task["unit"])}
    with pytest.raises(BenchmarkError, match="neither 'class' nor a class attribute"):
        build_meta_manifest(source, digits, "alphabet", 5, 5, 5, 0)


def test_meta_methods_adapt_with_the_inner_procedure():
    method = get_method("maml_gan")(inner_lr=0.05)
    models = GANModels.fresh(ARCH, 0)
    optimiser = method.make_optimiser(list(models.generator.parameters()), lr=123.0, settings=None)
    assert isinstance(optimiser, torch.optim.SGD) and optimiser.param_groups[0]["lr"] == 0.05
