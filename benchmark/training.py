"""The one GAN training loop every stage and method shares.

Methods change it only through `TrainingHooks`: which parameters train, and extra penalty terms for G and D.
The loop owns the rest: losses, Adam, optional EMA of G, the step budget, the evaluation schedule, JSON-lines
logs, and checkpoints that a later call resumes from (bit-identical on CPU: model, optimiser and RNG states).
At every evaluation step before the last, the evaluated generator is also kept as a snapshot, so that the
evaluation stage can score the checkpoint that the validation split selects.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchmark.checkpoint import SNAPSHOT_DIR, load_checkpoint, save_checkpoint, save_snapshot, snapshot_path
from benchmark.errors import BenchmarkError
from benchmark.io import atomic_write_text
from benchmark.models import Discriminator, GANModels, Generator

log = logging.getLogger(__name__)

LOSSES = ("nonsaturating", "hinge")


@dataclass(frozen=True)
class TrainSettings:
    steps: int
    batch_size: int = 64
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    loss: str = "nonsaturating"
    ema_decay: float = 0.0  # 0 disables the EMA generator
    eval_every: int = 0  # 0: evaluate once, at the end
    checkpoint_every: int = 0  # 0: checkpoint only at the end
    log_every: int = 50

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise BenchmarkError(f"loss '{self.loss}' is unknown; use one of {LOSSES}.")
        if not 0.0 <= self.ema_decay < 1.0:
            raise BenchmarkError(f"ema_decay {self.ema_decay} must be in [0, 1).")


class TrainingHooks:
    """What a method may change in plain GAN training. The defaults are plain training."""

    def trainable_parameters(self, generator: Generator, discriminator: Discriminator) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """Called once per training run, after both models were put in train mode."""
        return list(generator.parameters()), list(discriminator.parameters())

    def make_optimiser(self, parameters: list[nn.Parameter], lr: float, settings: "TrainSettings") -> torch.optim.Optimizer:
        return torch.optim.Adam(parameters, lr=lr, betas=(settings.beta1, settings.beta2))

    def augment(self, images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """Applied to every batch D sees, real and fake, in both the D and the G step."""
        return images

    def generator_penalty(self, generator: Generator) -> torch.Tensor | None:
        return None

    def discriminator_penalty(self, discriminator: Discriminator) -> torch.Tensor | None:
        return None


class TrainingDiverged(BenchmarkError):
    def __init__(self, step: int, reason: str) -> None:
        super().__init__(f"training diverged at step {step}: {reason}")
        self.step = step
        self.reason = reason


def discriminator_loss(kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    if kind == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    if kind == "hinge":
        return -fake_logits.mean()
    return F.softplus(-fake_logits).mean()  # non-saturating: -log sigmoid(D(G(z)))


@torch.no_grad()
def update_ema(ema: Generator, generator: Generator, decay: float) -> None:
    for ema_param, param in zip(ema.parameters(), generator.parameters()):
        ema_param.lerp_(param, 1.0 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), generator.buffers()):
        ema_buffer.copy_(buffer)


@torch.no_grad()
def generate(generator: Generator, count: int, seed: int, device: torch.device, batch_size: int = 500) -> np.ndarray:
    """`count` images as uint8 N x C x H x W, from noise seeded independently of training."""
    was_training = generator.training
    generator.eval()
    noise_rng = torch.Generator().manual_seed(seed)
    batches = []
    for start in range(0, count, batch_size):
        z = torch.randn(min(batch_size, count - start), generator.z_dim, generator=noise_rng).to(device)
        batches.append(generator(z).clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).cpu())
    generator.train(was_training)
    return torch.cat(batches).numpy()


def _step(optimiser: torch.optim.Optimizer, loss: torch.Tensor, penalty: torch.Tensor | None) -> torch.Tensor:
    """One optimiser step on the adversarial loss plus the method's penalty (None: no penalty term at all)."""
    if penalty is not None:
        loss = loss + penalty
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return loss


def settings_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between a checkpoint's run identity and the current one, key by key."""
    current = json.loads(json.dumps(current))  # tuples -> lists, as the stored identity went through JSON
    keys = sorted(set(stored) | set(current))
    return [f"{key}: checkpoint {stored.get(key)!r} vs now {current.get(key)!r}" for key in keys if stored.get(key) != current.get(key)]


def train_gan(
    models: GANModels,
    real_images: torch.Tensor,
    settings: TrainSettings,
    seed: int,
    run_dir: Path,
    hooks: TrainingHooks,
    run_identity: dict[str, Any],
    evaluate: Callable[[Generator, int], dict[str, Any]] | None = None,
) -> GANModels:
    """Train `models` on `real_images` (float in [-1, 1], N x C x H x W, on the training device).

    `run_identity` holds everything that defines the run (hyperparameters, data hashes, seed); a checkpoint in
    `run_dir` is resumed only when its identity is equal, otherwise the differing keys are named.
    Returns the models to evaluate: G (the EMA copy when enabled) and D.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    # Mid-run state goes to resume.pt, the finished run to checkpoint.pt: a workflow manager may delete a job's
    # declared outputs (checkpoint.pt) before rerunning it, but keeps resume.pt, so a killed job resumes.
    checkpoint_path, resume_path = run_dir / "checkpoint.pt", run_dir / "resume.pt"
    snapshot_dir = run_dir / SNAPSHOT_DIR
    log_path = run_dir / "train_log.jsonl"
    device = real_images.device
    generator, discriminator = models.generator, models.discriminator
    generator.train()
    discriminator.train()
    params_g, params_d = hooks.trainable_parameters(generator, discriminator)
    optimiser_g = hooks.make_optimiser(params_g, settings.lr_g, settings)
    optimiser_d = hooks.make_optimiser(params_d, settings.lr_d, settings)
    ema = copy.deepcopy(generator).requires_grad_(False) if settings.ema_decay > 0 else None
    # Batches and noise come from one generator whose state is checkpointed: a resumed run draws what an
    # uninterrupted one would have drawn.
    sampler = torch.Generator().manual_seed(seed)
    identity = {**run_identity, "train_settings": asdict(settings), "seed": seed}
    start_step = 0
    records: list[str] = []

    existing = next((path for path in (checkpoint_path, resume_path) if path.exists()), None)
    if existing is not None:
        state = load_checkpoint(existing, map_location=device)
        changed = settings_differences(json.loads(state["identity_json"]), identity)
        if changed:
            raise BenchmarkError(
                f"{existing} belongs to a run with other settings ({'; '.join(changed)}). Delete the run "
                "folder to start over, or restore the settings to resume."
            )
        generator.load_state_dict(state["generator"])
        discriminator.load_state_dict(state["discriminator"])
        optimiser_g.load_state_dict(state["optimiser_g"])
        optimiser_d.load_state_dict(state["optimiser_d"])
        if ema is not None:
            ema.load_state_dict(state["generator_ema"])
        sampler.set_state(state["sampler_state"])
        torch.set_rng_state(state["torch_rng_state"])
        start_step = int(state["step"])
        if log_path.exists():  # drop lines written after the checkpoint, which the resumed run writes again
            records = [line for line in log_path.read_text().splitlines() if json.loads(line)["step"] <= start_step]
        log.info("resuming %s at step %d of %d", run_dir, start_step, settings.steps)
    elif snapshot_dir.exists():  # left by an earlier run with other settings: never mix its generators in
        shutil.rmtree(snapshot_dir)

    def write_log() -> None:
        atomic_write_text(log_path, "".join(line + "\n" for line in records))

    def checkpoint(step: int) -> None:
        write_log()
        save_checkpoint(
            checkpoint_path if step == settings.steps else resume_path,
            {
                "step": step,
                "architecture": models.arch.to_dict(),
                "identity_json": json.dumps(identity, sort_keys=True),
                "generator": generator.state_dict(),
                "discriminator": discriminator.state_dict(),
                "generator_ema": ema.state_dict() if ema is not None else None,
                "optimiser_g": optimiser_g.state_dict(),
                "optimiser_d": optimiser_d.state_dict(),
                "sampler_state": sampler.get_state(),
                "torch_rng_state": torch.get_rng_state(),
            },
        )

    def run_evaluation(step: int) -> None:
        if evaluate is not None:
            evaluated = ema if ema is not None else generator
            result = evaluate(evaluated, step)
            records.append(json.dumps({"step": step, "eval": result}, sort_keys=True))
            log.info("step %d: evaluation %s", step, result)
            if step != settings.steps:  # the last step's generator is in checkpoint.pt
                save_snapshot(snapshot_path(run_dir, step), step, models.arch, identity, evaluated)

    num_real = real_images.shape[0]
    started, last_time, last_step = time.perf_counter(), time.perf_counter(), start_step
    for step in range(start_step + 1, settings.steps + 1):
        real = real_images[torch.randint(num_real, (settings.batch_size,), generator=sampler).to(device)]
        z = torch.randn(settings.batch_size, generator.z_dim, generator=sampler).to(device)
        fake = generator(z)
        real_logits = discriminator(hooks.augment(real, sampler))
        fake_logits = discriminator(hooks.augment(fake.detach(), sampler))
        loss_d = _step(optimiser_d, discriminator_loss(settings.loss, real_logits, fake_logits), hooks.discriminator_penalty(discriminator))

        z = torch.randn(settings.batch_size, generator.z_dim, generator=sampler).to(device)
        fake_logits_g = discriminator(hooks.augment(generator(z), sampler))
        loss_g = _step(optimiser_g, generator_loss(settings.loss, fake_logits_g), hooks.generator_penalty(generator))
        if ema is not None:
            # Warm-up (as in TensorFlow's ExponentialMovingAverage): early on the average must not be
            # dominated by the random initial weights.
            update_ema(ema, generator, min(settings.ema_decay, (1.0 + step) / (10.0 + step)))

        values = {"loss_d": loss_d.item(), "loss_g": loss_g.item()}
        bad = [name for name, value in values.items() if not math.isfinite(value)]
        if bad:
            diverged = TrainingDiverged(step, f"non-finite {', '.join(bad)}")
            records.append(json.dumps({"step": step, "diverged": diverged.reason}, sort_keys=True))
            write_log()
            resume_path.unlink(missing_ok=True)  # resuming would only diverge again at the same step
            raise diverged
        if step % settings.log_every == 0 or step in (1, settings.steps):
            now = time.perf_counter()
            rate = (step - last_step) / max(now - last_time, 1e-9)
            last_time, last_step = now, step
            values.update(step=step, d_real=real_logits.mean().item(), d_fake=fake_logits.mean().item(), steps_per_s=round(rate, 2))
            records.append(json.dumps(values, sort_keys=True))
            log.info("step %d/%d  loss_d %.3f  loss_g %.3f  (%.1f steps/s)", step, settings.steps, values["loss_d"], values["loss_g"], rate)
        if settings.eval_every and step % settings.eval_every == 0 and step != settings.steps:
            run_evaluation(step)
        if settings.checkpoint_every and step % settings.checkpoint_every == 0 and step != settings.steps:
            checkpoint(step)
    if start_step < settings.steps:
        run_evaluation(settings.steps)
        checkpoint(settings.steps)
        resume_path.unlink(missing_ok=True)
        log.info("trained %d steps in %.1f s", settings.steps - start_step, time.perf_counter() - started)
    return GANModels(models.arch, ema if ema is not None else generator, discriminator)


def as_training_tensor(images_uint8: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images_uint8)).to(device).float().div(127.5).sub(1.0)

