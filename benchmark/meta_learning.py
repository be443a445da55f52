"""Meta-learning of GAN initialisations: the machinery meta-learner plugins import.

A meta-learner (e.g. `methods/maml_gan.py`, `methods/reptile.py`) subclasses `MetaMethod` and says only how one
outer update is computed from a batch of tasks (`meta_step`). What they share lives here: the inner loop
(alternating D and G steps on a task's support images), the outer optimisers, the starting point (a seeded random
initialisation, or the source pretraining with `init: source`), the final refresh of the meta-model's buffers
(inner loops leave G's BatchNorm statistics alone: `benchmark.models.preserved_batchnorm_statistics`), and the
meta-training loop (`meta_train_gan`) that walks through the tasks, logs the meta-loss curve and writes a
checkpoint every adaptation method can start from. The `meta_train` stage (`benchmark/stages/meta_train.py`)
feeds it the source's task manifest.

Adaptation of a meta-learned initialisation runs the inner procedure it was meta-trained for: plain SGD at the
inner learning rate, the inner batch size, no EMA (`MetaMethod.training_settings`), for the adaptation budget;
the adaptation curve always includes the step count of one inner loop, the regime meta-training optimised.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import statistics
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
    for _ in range(steps):
        discriminator_steps(discriminator, generator, support, 1, batch_size, loss, rng, step_d)
        z = torch.randn(batch_size, generator.z_dim, generator=rng).to(support.device)
        step_g(generator_loss(loss, discriminator(generator(z))))


def discriminator_steps(
    discriminator: nn.Module,
    generator: nn.Module,
    images: torch.Tensor,
    steps: int,
    batch_size: int,
    loss: str,
    rng: torch.Generator,
    step_d: Callable[[torch.Tensor], None],
) -> None:
    """D steps only, on `images` against the (fixed) generator's samples: the D half of the inner loop, e.g. to
    adapt a judge on a task's query images."""
    device = images.device
    for _ in range(steps):
        real = images[torch.randint(len(images), (batch_size,), generator=rng).to(device)]
        z = torch.randn(batch_size, generator.z_dim, generator=rng).to(device)
        step_d(discriminator_loss(loss, discriminator(real), discriminator(generator(z).detach())))


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
        "loss": Hyperparameter(default="nonsaturating", search=LOSSES, swept=False, help="must be the adaptation loss"),
        "init": Hyperparameter(
            default="random", search=("random", "source"), help="meta-train from a seeded random initialisation or from the source pretraining"
        ),
    }

    @property
    def meta_requires(self) -> tuple[str, ...]:
        """The artefacts meta-training reads (names of `benchmark.layout.ARTEFACTS`)."""
        return ("source_checkpoint",) if self.hparams["init"] == "source" else ()

    def meta_initialise(self, context: AdaptationContext) -> GANModels:
        """Where meta-training starts: the source's pretrained G (its EMA copy) and D, or fresh weights."""
        return context.source_models() if self.hparams["init"] == "source" else context.fresh_models()

    def initialise(self, context: AdaptationContext) -> GANModels:
        return context.models_from("meta_checkpoint")

    def training_settings(self, settings: TrainSettings) -> TrainSettings:
        """Adaptation runs the inner procedure: SGD at inner_lr (both nets), the inner batch size, no EMA (the
        inner loop has none), with the inner loop's step count among the curve's evaluation steps."""
        if settings.loss != self.hparams["loss"]:
            raise BenchmarkError(
                f"{self.name} meta-trained with the {self.hparams['loss']} loss but would adapt with {settings.loss}: "
                f"set adapt.method_hparams.{self.name}.loss to '{settings.loss}' (or the adapt loss to match)."
            )
        hp = self.hparams
        curve = set(settings.eval_steps) | ({hp["inner_steps"]} if hp["inner_steps"] < settings.steps else set())
        return dataclasses.replace(
            settings, lr_g=hp["inner_lr"], lr_d=hp["inner_lr"], batch_size=hp["inner_batch_size"], ema_decay=0.0, eval_steps=tuple(curve)
        )

    def make_optimiser(self, parameters: list[nn.Parameter], lr: float, settings: TrainSettings | None) -> torch.optim.Optimizer:
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


def meta_curve_summary(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Has the meta-loss curve flattened? For each logged loss, from the logged window means: the mean of the first,
    middle and last fifth of them, and the change from the second-to-last fifth to the last, relative to the last.
    The curve counts as flat when that change lies within two standard errors of the difference (the window
    means' spread: the meta-losses of a GAN keep fluctuating however long it trains) or under 5%."""
    points = [entry for entry in entries if "window" in entry]
    names = [key for key in (points[0] if points else {}) if key not in ("iteration", "window")]
    summary: dict[str, Any] = {"losses": {}}
    texts = []
    for name in names:
        values = [float(entry[name]) for entry in points]
        fifth = max(1, len(values) // 5)
        first, middle, last = (statistics.fmean(part) for part in (values[:fifth], values[2 * fifth : 3 * fifth] or values[:fifth], values[-fifth:]))
        before = values[-2 * fifth : -fifth] or values[:fifth]
        difference = last - statistics.fmean(before)
        # `before` holds `fifth` values too; one value per fifth has no spread to estimate.
        noise = math.sqrt((statistics.variance(values[-fifth:]) + statistics.variance(before)) / fifth) if fifth >= 2 else 0.0
        change = difference / max(abs(last), 1e-12)
        flat = abs(change) < 0.05 or abs(difference) <= 2 * noise
        summary["losses"][name] = {
            "first_fifth": first,
            "middle_fifth": middle,
            "last_fifth": last,
            "last_change": change,
            "noise": noise,
            "flat": flat,
        }
        verdict = "flat" if flat else "still moving"
        texts.append(f"{name} {first:.4g} -> {middle:.4g} -> {last:.4g} ({change:+.1%} over the last fifth, 2 SE {2 * noise:.2g}: {verdict})")
    summary["text"] = "; ".join(texts) or "no logged iterations"
    return summary


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
    method) and the meta log to `run_dir`; a killed job resumes from its last `resume.pt`. Each log line holds the
    mean of every meta-loss over the iterations since the previous line (single outer steps are noisy), and the
    final line of the run's log summarises that curve (`meta_curve_summary`).
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
    window: list[dict[str, float]] = []  # the outer steps since the last log line (a resumed run starts a new one)
    for iteration in range(start + 1, hp["meta_iterations"] + 1):
        first = (iteration - 1) * hp["meta_batch_size"]
        losses = method.meta_step(models, [task_images(first + b) for b in range(hp["meta_batch_size"])], rng)
        bad = sorted(name for name, value in losses.items() if not math.isfinite(value))
        if bad or not all(torch.isfinite(p).all() for p in [*models.generator.parameters(), *models.discriminator.parameters()]):
            folder.resume.unlink(missing_ok=True)  # resuming would only diverge again
            raise TrainingDiverged(iteration, f"non-finite {', '.join(bad) or 'meta-parameters'}")
        window.append(losses)
        if iteration % log_every == 0 or iteration in (1, hp["meta_iterations"]):
            rate = (iteration - start) / (time.perf_counter() - started)
            means = {name: sum(entry[name] for entry in window) / len(window) for name in losses}
            log_file.append({"iteration": iteration, "window": len(window), **means})
            log.info("meta-iteration %d/%d  mean of the last %d: %s  (%.2f it/s)", iteration, hp["meta_iterations"], len(window), means, rate)
            window = []
        if iteration % checkpoint_every == 0 and iteration != hp["meta_iterations"]:
            state.save(folder.resume, iteration, mid_run=True)
    refresh_buffers(models.generator, models.discriminator, images, rng)
    non_finite = non_finite_tensors(models.generator) + non_finite_tensors(models.discriminator)
    if non_finite:  # e.g. BatchNorm statistics of meta-parameters that produce NaN activations
        raise TrainingDiverged(hp["meta_iterations"], f"non-finite {', '.join(non_finite)} after the final buffer refresh")
    summary = meta_curve_summary([json.loads(line) for line in log_file.lines])
    log.info("meta-loss curve: %s", summary["text"])
    log_file.append({"iteration": hp["meta_iterations"], "curve_summary": summary})
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
