"""Meta-learning of GAN initialisations: the shared machinery and the meta-training stage.

A meta-learner (e.g. `methods/maml_gan.py`, `methods/reptile.py`) subclasses `MetaMethod` and says only how one
outer update is computed from a batch of tasks (`meta_step`). What they share lives here: the inner loop
(alternating D and G steps on a task's support images), the outer optimisers, the final refresh of the
meta-model's buffers (inner loops must leave them alone: `benchmark.models.preserved_buffers`), and the stage
that walks through the task manifest and writes a checkpoint every adaptation method can start from.

Adaptation of a meta-learned initialisation runs the same inner procedure (plain SGD at the inner learning
rate) on the K shots for the adaptation budget.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from benchmark.checkpoint import load_checkpoint, save_checkpoint
from benchmark.data import PreparedDataset
from benchmark.errors import BenchmarkError
from benchmark.hashing import sha256_json
from benchmark.io import atomic_write_json, atomic_write_text
from benchmark.methods import AdaptationContext, Hyperparameter, Method, get_method
from benchmark.models import Discriminator, GANModels, Generator
from benchmark.provenance import environment
from benchmark.runs import architecture_for
from benchmark.splits import check_dataset_matches, read_manifest
from benchmark.training import TrainSettings, as_training_tensor, discriminator_loss, generator_loss, settings_differences

log = logging.getLogger(__name__)

Task = tuple[torch.Tensor, torch.Tensor]  # (support images, query images), float in [-1, 1]


def inner_loop(
    generator: nn.Module,
    discriminator: nn.Module,
    support: torch.Tensor,
    steps: int,
    batch_size: int,
    loss: str,
    rng: torch.Generator,
    step_d: Callable[[torch.Tensor], None],
    step_g: Callable[[torch.Tensor], None],
) -> None:
    """Alternating D and G steps on one task's support images, as the adaptation loop takes them."""
    device = support.device
    for _ in range(steps):
        real = support[torch.randint(len(support), (batch_size,), generator=rng).to(device)]
        z = torch.randn(batch_size, generator.z_dim, generator=rng).to(device)
        step_d(discriminator_loss(loss, discriminator(real), discriminator(generator(z).detach())))
        z = torch.randn(batch_size, generator.z_dim, generator=rng).to(device)
        step_g(generator_loss(loss, discriminator(generator(z))))


def accumulate_gradients(parameters: list[nn.Parameter], gradients: tuple[torch.Tensor | None, ...], scale: float) -> None:
    for parameter, gradient in zip(parameters, gradients):
        if gradient is None:
            continue
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        parameter.grad += gradient.detach() * scale


class MetaMethod(Method):
    """Base class of meta-learners. Subclasses implement `meta_step`."""

    requires = ("meta_checkpoint",)
    hyperparameters = {
        "inner_lr": Hyperparameter(default=1e-2, search=(1e-4, 1e-1), log_scale=True, help="SGD lr of the inner loop and of adaptation"),
        "inner_steps": Hyperparameter(default=5, minimum=1, search=(1, 20), help="alternating D/G steps per task"),
        "inner_batch_size": Hyperparameter(default=32, minimum=1),
        "meta_iterations": Hyperparameter(default=300, minimum=1, search=(100, 20000), log_scale=True),
        "meta_batch_size": Hyperparameter(default=4, minimum=1, search=(1, 16), help="tasks per outer update"),
        "outer_lr": Hyperparameter(default=1e-4, search=(1e-5, 1e-3), log_scale=True),
        "loss": Hyperparameter(default="nonsaturating", search=("nonsaturating", "hinge")),
    }

    def initialise(self, context: AdaptationContext) -> GANModels:
        return context.models_from("meta_checkpoint")

    def make_optimiser(self, parameters: list[nn.Parameter], lr: float, settings: TrainSettings | None) -> torch.optim.Optimizer:
        if settings is not None and settings.loss != self.hparams["loss"]:
            raise BenchmarkError(
                f"{self.name} meta-trained with the {self.hparams['loss']} loss but would adapt with {settings.loss}: "
                f"set adapt.method_hparams.{self.name}.loss to '{settings.loss}' (or the adapt loss to match)."
            )
        return torch.optim.SGD(parameters, lr=self.hparams["inner_lr"])  # the inner procedure, on the K shots

    def outer_optimisers(self, models: GANModels) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        if not hasattr(self, "_outer"):
            lr = self.hparams["outer_lr"]
            self._outer = (
                torch.optim.Adam([p for p in models.generator.parameters() if p.requires_grad], lr=lr, betas=(0.5, 0.999)),
                torch.optim.Adam([p for p in models.discriminator.parameters() if p.requires_grad], lr=lr, betas=(0.5, 0.999)),
            )
        return self._outer

    def meta_step(self, models: GANModels, tasks: list[Task], rng: torch.Generator) -> dict[str, float]:
        """One outer update of the meta-parameters from a batch of tasks; returns losses to log."""
        raise NotImplementedError


@torch.no_grad()
def refresh_buffers(generator: Generator, discriminator: Discriminator, images: torch.Tensor, rng: torch.Generator, passes: int = 20) -> None:
    """Running statistics for the final meta-parameters (the inner loops left them untouched): BatchNorm
    statistics of G re-estimated from scratch as a cumulative average, and spectral-norm vectors of D brought
    up to date by power iterations, through forward passes in train mode."""
    generator.train()
    discriminator.train()
    norms = [module for module in generator.modules() if isinstance(module, nn.BatchNorm2d)]
    momenta = [module.momentum for module in norms]
    for module in norms:
        module.reset_running_stats()
        module.momentum = None  # cumulative moving average: no trace of the initial mean 0 / variance 1
    for _ in range(passes):
        z = torch.randn(64, generator.z_dim, generator=rng).to(images.device)
        discriminator(generator(z))
        discriminator(images[torch.randint(len(images), (64,), generator=rng).to(images.device)])
    for module, momentum in zip(norms, momenta):
        module.momentum = momentum


def meta_train_source(
    meta_manifest_path: Path,
    dataset_path: Path,
    method_name: str,
    method_hparams: dict[str, Any],
    architecture: dict[str, Any],
    seed: int,
    device: torch.device,
    output_dir: Path,
    log_every: int = 25,
    checkpoint_every: int = 25,
) -> None:
    manifest = read_manifest(meta_manifest_path, "meta")
    dataset = PreparedDataset.load(dataset_path)
    check_dataset_matches(manifest["source"]["dataset"], dataset, meta_manifest_path)
    method_class = get_method(method_name)
    if not issubclass(method_class, MetaMethod):
        raise BenchmarkError(f"Method '{method_name}' is not a meta-learner (it does not subclass MetaMethod): it has no meta-training stage.")
    method = method_class(**method_hparams)
    arch = architecture_for(dataset, architecture)
    models = GANModels.fresh(arch, seed, device)
    used = sorted({i for task in manifest["tasks"] for i in task["support"] + task["query"]})
    position = {index: row for row, index in enumerate(used)}
    images = as_training_tensor(dataset.images[used], device)

    def task_images(task: dict[str, Any]) -> Task:
        return images[[position[i] for i in task["support"]]], images[[position[i] for i in task["query"]]]

    rng = torch.Generator().manual_seed(seed)
    hp = method.hparams
    identity = {
        "stage": "meta_train",
        "method": method_name,
        "method_hparams": method.hparams,
        "meta_manifest_sha256": sha256_json(manifest),
        "dataset_sha256": dataset.content_sha256,
        "architecture": arch.to_dict(),
        "seed": seed,
    }
    identity_json = json.dumps(identity, sort_keys=True)
    outer_g, outer_d = method.outer_optimisers(models)
    resume_path = output_dir / "resume.pt"
    records: list[str] = []
    start = 0
    if resume_path.exists():  # a killed job: continue where its last mid-run checkpoint left off
        state = load_checkpoint(resume_path, device)
        changed = settings_differences(json.loads(state["identity_json"]), identity)
        if changed:
            raise BenchmarkError(
                f"{resume_path} belongs to a meta-training with other settings ({'; '.join(changed)}). Delete it to "
                "start over, or restore the settings to resume."
            )
        models.generator.load_state_dict(state["generator"])
        models.discriminator.load_state_dict(state["discriminator"])
        outer_g.load_state_dict(state["outer_g"])
        outer_d.load_state_dict(state["outer_d"])
        rng.set_state(state["rng_state"])
        torch.set_rng_state(state["torch_rng_state"])
        records, start = list(state["records"]), int(state["step"])
        log.info("resuming meta-training in %s at iteration %d of %d", output_dir, start, hp["meta_iterations"])
    started = time.perf_counter()
    for iteration in range(start + 1, hp["meta_iterations"] + 1):
        first = (iteration - 1) * hp["meta_batch_size"]
        batch = [task_images(manifest["tasks"][(first + b) % len(manifest["tasks"])]) for b in range(hp["meta_batch_size"])]
        losses = method.meta_step(models, batch, rng)
        if iteration % log_every == 0 or iteration in (1, hp["meta_iterations"]):
            rate = (iteration - start) / (time.perf_counter() - started)
            records.append(json.dumps({"iteration": iteration, **losses}, sort_keys=True))
            log.info("meta-iteration %d/%d  %s  (%.2f it/s)", iteration, hp["meta_iterations"], losses, rate)
        if iteration % checkpoint_every == 0 and iteration != hp["meta_iterations"]:
            save_checkpoint(
                resume_path,
                {
                    "step": iteration, "architecture": arch.to_dict(), "identity_json": identity_json, "records": records,
                    "generator": models.generator.state_dict(), "discriminator": models.discriminator.state_dict(),
                    "outer_g": outer_g.state_dict(), "outer_d": outer_d.state_dict(),
                    "rng_state": rng.get_state(), "torch_rng_state": torch.get_rng_state(),
                },
            )  # fmt: skip
    refresh_buffers(models.generator, models.discriminator, images, rng)
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_dir / "meta_log.jsonl", "".join(line + "\n" for line in records))
    save_checkpoint(
        output_dir / "checkpoint.pt",
        {
            "step": hp["meta_iterations"],
            "architecture": arch.to_dict(),
            "identity_json": identity_json,
            "generator": models.generator.state_dict(),
            "discriminator": models.discriminator.state_dict(),
            "generator_ema": None,
        },
    )
    resume_path.unlink(missing_ok=True)
    atomic_write_json(output_dir / "config.json", {**identity, "environment": environment(), "seconds": time.perf_counter() - started})
