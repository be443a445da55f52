"""Meta-learning of GAN initialisations: the machinery meta-learner plugins import.

A meta-learner (e.g. `methods/maml_gan.py`, `methods/reptile.py`) subclasses `MetaMethod` and says only how one
outer update is computed from a batch of tasks (`meta_step`). What they share lives here: the inner loop
(alternating D and G steps on a task's support images), the outer optimisers, the final refresh of the
meta-model's buffers (inner loops must leave them alone: `benchmark.models.preserved_buffers`), and the
meta-training loop (`meta_train_gan`) that walks through the tasks and writes a checkpoint every adaptation method
can start from. The `meta_train` stage (`benchmark/stages/meta_train.py`) feeds it the source's task manifest.

Adaptation of a meta-learned initialisation runs the same inner procedure (plain SGD at the inner learning
rate) on the K shots for the adaptation budget.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmark.checkpoint import save_checkpoint
from benchmark.errors import BenchmarkError
from benchmark.layout import StageFolder
from benchmark.methods import AdaptationContext, Hyperparameter, Method
from benchmark.models import Discriminator, GANModels, Generator, non_finite_tensors
from benchmark.resume import JsonLog, TrainingState
from benchmark.training import LOSSES, TrainingDiverged, TrainSettings, discriminator_loss, generator_loss

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
        "loss": Hyperparameter(default="nonsaturating", search=LOSSES),
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


def meta_train_gan(
    models: GANModels,
    method: MetaMethod,
    images: torch.Tensor,
    tasks: list[tuple[list[int], list[int]]],
    seed: int,
    run_dir: Path,
    identity: dict[str, Any],
    log_every: int = 25,
    checkpoint_every: int = 25,
) -> GANModels:
    """Meta-train `models` for the method's `meta_iterations`, walking through `tasks` in order.

    `images` holds every image the tasks use (float in [-1, 1], on the training device); a task is the rows of
    its support and its query images. Writes `checkpoint.pt` (the meta-parameters, loadable by every adaptation
    method) and the meta log to `run_dir`; a killed job resumes from its last `resume.pt`.
    """
    folder = StageFolder(run_dir)
    hp = method.hparams
    rng = torch.Generator().manual_seed(seed)
    outer_g, outer_d = method.outer_optimisers(models)
    log_file = JsonLog(folder.meta_log, step_key="iteration")
    state = TrainingState(
        identity,
        models.arch.to_dict(),
        {"generator": models.generator, "discriminator": models.discriminator, "outer_g": outer_g, "outer_d": outer_d},
        {"rng_state": rng},
        log_file,
    )
    start = state.resume((folder.resume,), images.device, "meta-training")
    if start:
        log.info("resuming meta-training in %s at iteration %d of %d", run_dir, start, hp["meta_iterations"])

    def task_images(index: int) -> Task:
        support, query = tasks[index % len(tasks)]
        return images[support], images[query]

    started = time.perf_counter()
    for iteration in range(start + 1, hp["meta_iterations"] + 1):
        first = (iteration - 1) * hp["meta_batch_size"]
        losses = method.meta_step(models, [task_images(first + b) for b in range(hp["meta_batch_size"])], rng)
        bad = sorted(name for name, value in losses.items() if not math.isfinite(value))
        if bad or not all(torch.isfinite(p).all() for p in [*models.generator.parameters(), *models.discriminator.parameters()]):
            folder.resume.unlink(missing_ok=True)  # resuming would only diverge again
            raise TrainingDiverged(iteration, f"non-finite {', '.join(bad) or 'meta-parameters'}")
        if iteration % log_every == 0 or iteration in (1, hp["meta_iterations"]):
            rate = (iteration - start) / (time.perf_counter() - started)
            log_file.append({"iteration": iteration, **losses})
            log.info("meta-iteration %d/%d  %s  (%.2f it/s)", iteration, hp["meta_iterations"], losses, rate)
        if iteration % checkpoint_every == 0 and iteration != hp["meta_iterations"]:
            state.save(folder.resume, iteration, mid_run=True)
    refresh_buffers(models.generator, models.discriminator, images, rng)
    non_finite = non_finite_tensors(models.generator) + non_finite_tensors(models.discriminator)
    if non_finite:  # e.g. BatchNorm statistics of meta-parameters that produce NaN activations
        raise TrainingDiverged(hp["meta_iterations"], f"non-finite {', '.join(non_finite)} after the final buffer refresh")
    log_file.write()
    # What adaptation reads: the meta-parameters only (no optimiser or random state: it is never resumed).
    save_checkpoint(
        folder.checkpoint,
        {
            "step": hp["meta_iterations"],
            "architecture": models.arch.to_dict(),
            "identity_json": state.identity_json,
            "generator": models.generator.state_dict(),
            "discriminator": models.discriminator.state_dict(),
            "generator_ema": None,
        },
    )
    folder.resume.unlink(missing_ok=True)
    log.info("meta-trained %d iterations in %.1f s", hp["meta_iterations"] - start, time.perf_counter() - started)
    return models
