"""Meta-learners (MAML-GAN through learn2learn, Reptile): the outer step really moves the meta-parameters,
frozen parameters are tolerated, and inner loops leave the meta-model's buffers alone."""

from __future__ import annotations

import contextlib
import copy
import json
import sys
from pathlib import Path

import learn2learn
import pytest
import torch
import yaml

from benchmark.checkpoint import save_checkpoint
from benchmark.config import validate_config
from benchmark.errors import BenchmarkError
from benchmark.meta_learning import inner_loop
from benchmark.methods import get_method
from benchmark.models import Architecture, GANModels, preserved_batchnorm_statistics
from benchmark.plan import Plan
from benchmark.settings import MetaTrainSettings
from benchmark.splits import build_meta_manifest, build_source_manifest
from benchmark.stages import meta_train as stage
from benchmark.training import TrainingHooks, TrainSettings, as_training_tensor, train_gan
from conftest import run_cli, save_prepared

ARCH = Architecture.from_config({"width": 8}, image_size=28, channels=1)
CPU = torch.device("cpu")
HPARAMS = {"inner_steps": 2, "inner_batch_size": 8, "meta_batch_size": 2, "outer_lr": 1e-3}


@pytest.fixture
def tasks(digits):
    images = as_training_tensor(digits.images, CPU)
    return [(images[digits.labels == label][:10], images[digits.labels == label][10:20]) for label in (0, 1)]


def _state(module):
    return {key: value.clone() for key, value in module.state_dict().items()}


@pytest.mark.parametrize(("name", "extra"), [("maml_gan", {}), ("maml_gan", {"first_order": False}), ("reptile", {})])
def test_outer_step_changes_the_meta_parameters(name, extra, tasks):
    method = get_method(name)(**HPARAMS, **extra)
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


def _spectral_vectors(module) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in module.state_dict().items() if key.endswith("_u") or key.endswith("_v")}


@contextlib.contextmanager
def every_buffer_restored(*modules):
    """The old protection: every buffer (BatchNorm statistics and spectral-norm vectors) restored on exit."""
    saved = [copy.deepcopy(list(module.buffers())) for module in modules]
    yield
    with torch.no_grad():
        for module, values in zip(modules, saved):
            for buffer, value in zip(module.buffers(), values):
                buffer.copy_(value)


@pytest.mark.parametrize("name", ["maml_gan", "reptile"])
def test_meta_step_keeps_batchnorm_statistics_and_carries_spectral_norm_vectors(name, tasks, monkeypatch):
    """After an outer step G's BatchNorm statistics are the meta-model's own (inner loops ran on task weights),
    while D's power-iteration vectors have moved on with the inner steps instead of being reset to the values they
    had before the task. A variant that resets the vectors for every task (the old behaviour) fails the second
    check, as shown at the end."""
    method_module = sys.modules[get_method(name).__module__]

    def step(broken: bool) -> tuple[bool, bool]:
        method = get_method(name)(**HPARAMS)
        models = GANModels.fresh(ARCH, 0)
        if broken and name == "maml_gan":
            monkeypatch.setattr(
                method_module, "preserved_batchnorm_statistics", lambda *_: every_buffer_restored(models.generator, models.discriminator)
            )
        if broken and name == "reptile":
            monkeypatch.setattr(method_module, "carry_power_iteration_vectors", lambda meta, adapted: None)
        before_g, before_d = _state(models.generator), _spectral_vectors(models.discriminator)
        method.meta_step(models, tasks, torch.Generator().manual_seed(0))
        statistics_kept = all(
            torch.equal(value, before_g[key]) for key, value in models.generator.state_dict().items() if "running" in key or "num_batches" in key
        )
        vectors_moved = all(not torch.equal(value, before_d[key]) for key, value in _spectral_vectors(models.discriminator).items())
        return statistics_kept, vectors_moved

    assert step(broken=False) == (True, True)
    assert step(broken=True) == (True, False)


def test_without_protection_a_learn2learn_inner_loop_would_corrupt_batchnorm(tasks):
    """Shows the hazard the protection guards against: clones share buffers with the meta-model."""
    models = GANModels.fresh(ARCH, 0)
    maml_g = learn2learn.algorithms.MAML(models.generator, lr=0.01, first_order=True)
    maml_d = learn2learn.algorithms.MAML(models.discriminator, lr=0.01, first_order=True)
    running_mean = models.generator.blocks[0][2].running_mean.clone()
    generator, discriminator = maml_g.clone(), maml_d.clone()
    inner_loop(generator, discriminator, tasks[0][0], 1, 8, "nonsaturating", torch.Generator().manual_seed(0), discriminator.adapt, generator.adapt)
    assert not torch.equal(models.generator.blocks[0][2].running_mean, running_mean)
    with preserved_batchnorm_statistics(models.generator):
        generator = maml_g.clone()
        generator(torch.randn(8, ARCH.z_dim))
        changed = models.generator.blocks[0][2].running_mean.clone()
    assert not torch.equal(changed, models.generator.blocks[0][2].running_mean)


@pytest.mark.slow
def test_meta_training_stage_writes_a_loadable_checkpoint(tmp_path, digits):
    data = save_prepared(digits, tmp_path, "digits")
    source = build_source_manifest("low", {"dataset": "digits", "classes": [0, 1, 2, 3, 4]}, digits, 0)
    (tmp_path / "source.json").write_text(json.dumps(source))
    settings = json.dumps({"meta": {"unit": "class", "count": 6, "support_size": 5, "query_size": 5}, "split_seed": 0})
    source_manifest, meta_manifest = str(tmp_path / "source.json"), str(tmp_path / "meta.json")
    result = run_cli("split-meta", "--settings", settings, "--source-manifest", source_manifest, "--dataset", str(data), "--output", meta_manifest)
    assert result.returncode == 0, result.stderr
    hparams = {**HPARAMS, "meta_iterations": 2}
    train = json.dumps({"method": "maml_gan", "method_hparams": hparams, "architecture": {"width": 8}, "seed": 0, "device": "cpu"})
    inputs = ["--manifest", meta_manifest, "--dataset", str(data)]
    result = run_cli("meta-train", "--settings", train, *inputs, "--output-dir", str(tmp_path / "maml"))
    assert result.returncode == 0, result.stderr
    payload = torch.load(tmp_path / "maml" / "checkpoint.pt", weights_only=True)
    assert payload["step"] == 2 and payload["architecture"]["width"] == 8
    not_meta = run_cli("meta-train", "--settings", train.replace("maml_gan", "finetune"), *inputs, "--output-dir", str(tmp_path / "x"))
    assert not_meta.returncode == 2 and "not a meta-learner" in not_meta.stderr


def test_meta_training_starts_from_the_source_pretraining_when_asked(tmp_path, digits, monkeypatch):
    """init: source starts meta-training at the source checkpoint's G and D (and records the file's hash); init:
    random at the seeded fresh weights; init: source without the checkpoint is one clear error naming the option."""

    data = save_prepared(digits, tmp_path, "digits")
    source = build_source_manifest("low", {"dataset": "digits", "classes": [0, 1, 2, 3, 4]}, digits, 0)
    (tmp_path / "meta.json").write_text(json.dumps(build_meta_manifest(source, digits, "class", 4, 5, 5, 0)))
    arch = Architecture.from_config({"width": 8}, image_size=28, channels=1)
    pretrained = GANModels.fresh(arch, 5)  # unlike the fresh weights of seed 0
    checkpoint = tmp_path / "source.pt"
    save_checkpoint(
        checkpoint,
        {
            "step": 1,
            "architecture": arch.to_dict(),
            "identity_json": "{}",
            "generator": pretrained.generator.state_dict(),
            "discriminator": pretrained.discriminator.state_dict(),
            "generator_ema": None,
        },
    )
    started = []
    monkeypatch.setattr(
        stage, "meta_train_gan", lambda models, method, images, tasks, seed, run_dir, identity: started.append((models, identity)) or models
    )

    def start(init: str, artefacts: dict) -> tuple[GANModels, dict]:
        settings = MetaTrainSettings("maml_gan", {**HPARAMS, "init": init}, {"width": 8}, 0, "cpu")
        stage.meta_train(settings, tmp_path / "meta.json", data, tmp_path / init, artefacts)
        return started[-1]

    models, identity = start("source", {"source_checkpoint": checkpoint})
    for got, want in ((models.generator, pretrained.generator), (models.discriminator, pretrained.discriminator)):
        assert all(torch.equal(a, b) for a, b in zip(got.state_dict().values(), want.state_dict().values()))
    assert list(identity["artefacts_sha256"]) == ["source_checkpoint"]
    models, identity = start("random", {})
    fresh = GANModels.fresh(arch, 0)
    assert all(torch.equal(a, b) for a, b in zip(models.generator.state_dict().values(), fresh.generator.state_dict().values()))
    assert identity["artefacts_sha256"] == {}
    with pytest.raises(BenchmarkError, match="with init 'source' needs the source_checkpoint: pass --artefact source_checkpoint=PATH"):
        start("source", {})


def test_the_plan_wires_the_source_checkpoint_into_meta_training_only_from_the_source():

    config = validate_config(yaml.safe_load((Path(__file__).parents[1] / "config" / "config.yaml").read_text()))
    plan = Plan(config)
    assert plan.meta_artefacts("fashion_mnist", "maml_gan", 0, 0) == {"source_checkpoint": "results/pretrain/fashion_mnist/seed0/checkpoint.pt"}
    config["adapt"]["method_hparams"]["reptile"]["init"] = "random"
    assert Plan(config).meta_artefacts("fashion_mnist", "reptile", 0, 0) == {}


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


def _level_images(level: float, count: int, rng: torch.Generator) -> torch.Tensor:
    return (torch.full((count, 1, 8, 8), level) + 0.02 * torch.randn(count, 1, 8, 8, generator=rng)).clamp(-1, 1)


def _error_after_inner_steps(models: GANModels, levels: list[float], hp: dict) -> float:
    """The toy's loss: mean squared distance of generated images to the task's level, after the inner procedure."""
    errors = []
    method = get_method("maml_gan")(inner_lr=hp["inner_lr"])
    for level in levels:
        generator, discriminator = copy.deepcopy(models.generator), copy.deepcopy(models.discriminator)

        def sgd(module):
            optimiser = method.make_optimiser(list(module.parameters()), lr=0.0, settings=None)

            def step(loss):
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()

            return step

        support = _level_images(level, 10, torch.Generator().manual_seed(7))
        inner_loop(
            generator,
            discriminator,
            support,
            hp["inner_steps"],
            16,
            "nonsaturating",
            torch.Generator().manual_seed(1),
            sgd(discriminator),
            sgd(generator),
        )
        with torch.no_grad():
            samples = generator(torch.randn(256, generator.z_dim, generator=torch.Generator().manual_seed(3)))
        errors.append(float((samples - level).pow(2).mean()))
    return sum(errors) / len(errors)


def _meta_train_toy(arch: Architecture, hp: dict, levels: list[float], iterations: int) -> GANModels:
    meta_learner, models, rng, data = (
        get_method("maml_gan")(**hp),
        GANModels.fresh(arch, 0),
        torch.Generator().manual_seed(0),
        torch.Generator().manual_seed(0),
    )
    for iteration in range(iterations):
        batch = [levels[(iteration * 4 + b) % len(levels)] for b in range(4)]
        meta_learner.meta_step(models, [(_level_images(c, 10, data), _level_images(c, 10, data)) for c in batch], rng)
    return models


@pytest.mark.slow
def test_meta_learned_initialisation_adapts_faster_than_a_pretrained_one(tmp_path, monkeypatch, one_thread):
    """Toy family: each task is 8x8 images of one brightness level. MAML-GAN meta-trains on 9 levels (300 outer
    Adam steps at 3e-3); a plain GAN is pretrained on the union of the same images for twice as many steps of Adam
    at the same rate and betas. After the same 5 inner steps on an unseen level, the meta-learned G must be closer
    to it than the pretrained one (by 20%), and than a control meta-trained alike with its inner loops (support
    and judge) doing nothing, which is plain training on the query images: if the control won, the inner loop
    would not be what helps."""

    arch = Architecture.from_config({"width": 8, "z_dim": 4, "generator_norm": "none"}, image_size=8, channels=1)
    hp = {"inner_steps": 5, "inner_lr": 0.1, "inner_batch_size": 16, "meta_batch_size": 4, "outer_lr": 3e-3}
    train_levels = torch.linspace(-0.8, 0.8, 9).tolist()
    test_levels = [-0.7, -0.3, 0.1, 0.5, 0.7]
    iterations = 300

    meta_models = _meta_train_toy(arch, hp, train_levels, iterations)
    data = torch.Generator().manual_seed(0)
    union = torch.cat([_level_images(c, 200, data) for c in train_levels])
    settings = TrainSettings.from_config(
        {"steps": 2 * iterations, "batch_size": 32, "lr_g": 3e-3, "lr_d": 3e-3, "beta1": 0.5, "beta2": 0.999, "log_every": 100}
    )
    pretrained = train_gan(GANModels.fresh(arch, 0), union, settings, 0, tmp_path, TrainingHooks(), {"toy": "pretrained"})
    method_module = sys.modules[get_method("maml_gan").__module__]
    with monkeypatch.context() as patch:
        patch.setattr(method_module, "inner_loop", lambda *args: None)
        patch.setattr(method_module, "discriminator_steps", lambda *args: None)
        control = _meta_train_toy(arch, hp, train_levels, iterations)
    meta_error, pretrained_error, control_error = (_error_after_inner_steps(m, test_levels, hp) for m in (meta_models, pretrained, control))
    assert meta_error < 0.8 * pretrained_error, (meta_error, pretrained_error)
    assert meta_error < control_error, (meta_error, control_error)
