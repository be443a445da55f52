"""The one GAN training loop every stage and method shares.

Methods change it only through `TrainingHooks`: the training settings they adapt with, which parameters train,
penalty terms for G and D, per-step loss terms that see the step's real batch, noise and fakes, the noise each
update draws, a call at the start of every step (a schedule by step), and state of their own that a resumed run
restores. The models may be of a method's own structure (`benchmark.methods.Method.build_models`): checkpoints
and snapshots record it. The loop owns the rest: losses, Adam, optional EMA of G, the step budget,
the evaluation schedule (every `eval_every` steps, the adaptation-curve steps `eval_steps`, and the last step),
JSON-lines logs, and checkpoints that a later call resumes from (bit-identical on CPU: model, optimiser and RNG
states). At every evaluation step before the last, the evaluated generator is also kept as a snapshot, so that
the evaluation stage can score the checkpoint that the validation split selects.

The EMA generator's weights are an average, not the weights whose activations the training batches measured, so
its BatchNorm statistics are re-estimated from its own samples (`benchmark.models.recalibrate_batchnorm`,
`bn_recalibration_batches` batches) each time it is evaluated, snapshotted or saved.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchmark.checkpoint import model_structure, save_snapshot
from benchmark.config import NUMERICS_SWITCHES, complete
from benchmark.errors import BenchmarkError
from benchmark.layout import StageFolder
from benchmark.models import Discriminator, GANModels, Generator, recalibrate_batchnorm
from benchmark.resume import JsonLog, TrainingState

log = logging.getLogger(__name__)

LOSSES = ("nonsaturating", "hinge")


@dataclass(frozen=True)
class TrainSettings:
    """A training stage's `train` section. Defaults live in the config schema: build it with `from_config`."""

    config_section: ClassVar[str] = "train"

    steps: int
    batch_size: int
    lr_g: float
    lr_d: float
    beta1: float
    beta2: float
    loss: str  # one of LOSSES
    ema_decay: float  # 0 disables the EMA generator
    eval_every: int  # 0: evaluate once, at the end
    eval_steps: tuple[int, ...]  # further evaluation steps (the adaptation curve); 0 is the starting point
    bn_recalibration_batches: int  # batches of its own samples that set the EMA generator's BatchNorm statistics
    checkpoint_every: int  # 0: checkpoint only at the end
    log_every: int
    # Numerics switches for accelerators (`autocast`, `compiled`): recorded only when on, so that a run without them
    # keeps the identity it had before they existed.
    autocast_bf16: bool
    compile: bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "eval_steps", tuple(sorted(self.eval_steps)))
        complete("train", self.as_record())  # the schema's constraints also hold when built by hand
        late = [step for step in self.eval_steps if step >= self.steps]
        if late:
            raise BenchmarkError(
                f"Training setting eval_steps {late} lie at or beyond the last step ({self.steps}), which is always "
                f"evaluated: list only steps below {self.steps}."
            )

    @classmethod
    def from_config(cls, train: dict[str, Any]) -> TrainSettings:
        return cls(**complete("train", train))

    def evaluates_at(self, step: int) -> bool:
        """Whether the schedule scores the generator after `step` (0: before the first step)."""
        return step == self.steps or step in self.eval_steps or bool(self.eval_every and step and step % self.eval_every == 0)

    def as_record(self) -> dict[str, Any]:
        record = asdict(self) | {"eval_steps": list(self.eval_steps)}
        return {key: value for key, value in record.items() if key not in NUMERICS_SWITCHES or value}


@dataclass(frozen=True)
class StepBatch:
    """What one update of a training step works with, for `TrainingHooks.step_losses`."""

    step: int  # 1 for the first step
    real: torch.Tensor  # the step's real batch, before any augmentation
    z: torch.Tensor  # the noise of this update (the D and the G update draw their own)
    fake: torch.Tensor  # G(z): detached in the D update, carrying G's graph in the G update
    rng: torch.Generator  # the run's sampler: draw any further randomness from it, so that a resumed run draws alike


class TrainingHooks:
    """What a method may change in plain GAN training. The defaults are plain training."""

    def training_settings(self, settings: TrainSettings) -> TrainSettings:
        """The settings this method trains with, given the configured ones (e.g. a meta-learner adapts with its
        inner procedure). Runs record what this returns, so a run's identity names the rates it really used."""
        return settings

    def trainable_parameters(self, generator: Generator, discriminator: Discriminator) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """Called once per training run, after both models were put in train mode."""
        return list(generator.parameters()), list(discriminator.parameters())

    def make_optimiser(self, parameters: list[nn.Parameter], lr: float, settings: TrainSettings) -> torch.optim.Optimizer:
        return torch.optim.Adam(parameters, lr=lr, betas=(settings.beta1, settings.beta2))

    def augment(self, images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """Applied to every batch D sees, real and fake, in both the D and the G step."""
        return images

    def generator_penalty(self, generator: Generator) -> torch.Tensor | None:
        return None

    def begin_step(self, step: int, generator: Generator, discriminator: Discriminator) -> None:
        """Called at the start of every step (1 for the first), before its D update, also on the first step after a
        resume: a method switches what trains or how D scores here, by step (state must follow from `step` and
        `state_dict`, never from earlier calls)."""

    def sample_noise(self, update: str, step: int, count: int, z_dim: int, rng: torch.Generator) -> torch.Tensor:
        """The noise G maps in this step's D update (`update` "d") or G update ("g"), drawn from the run's sampler
        `rng`. Default: standard normal."""
        return torch.randn(count, z_dim, generator=rng)

    def state_dict(self) -> dict[str, Any]:
        """State of the method that changes during training and is not a trained parameter (a running estimate,
        an adaptive weight), saved in every checkpoint and given back to `load_state_dict` when a run resumes.
        State that `initialise` rebuilds the same way every time (a frozen source copy, a Fisher computed once)
        needs none. Empty: nothing is stored."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    def step_losses(self, update: str, batch: StepBatch, generator: Generator, discriminator: Discriminator) -> dict[str, torch.Tensor]:
        """Extra loss terms for this step's D update (`update` "d") or G update ("g"), by name; each is added to
        that update's loss after the penalty and logged as `<update>_<name>`. Called every step, so a term can
        follow its own schedule by `batch.step`. None of them: plain training, bit for bit."""
        return {}

    def discriminator_penalty(self, discriminator: Discriminator) -> torch.Tensor | None:
        return None


class TrainingDiverged(BenchmarkError):
    def __init__(self, step: int, reason: str) -> None:
        super().__init__(f"training diverged at step {step}: {reason}")
        self.step = step
        self.reason = reason


class NonFiniteSamples(BenchmarkError):
    """A generator produced NaN or infinite pixels (non-finite weights or BatchNorm statistics). Cast to uint8
    they would become plain black images that score as if real."""


def _check_loss(kind: str) -> None:
    if kind not in LOSSES:
        raise BenchmarkError(f"Loss '{kind}' is unknown; use one of {', '.join(LOSSES)}.")


def discriminator_loss(kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    _check_loss(kind)
    if kind == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    _check_loss(kind)
    if kind == "hinge":
        return -fake_logits.mean()
    return F.softplus(-fake_logits).mean()  # non-saturating: -log sigmoid(D(G(z)))


@torch.no_grad()
def update_ema(ema: Generator, generator: Generator, decay: float) -> None:
    """Weights only: G's running BatchNorm statistics belong to G's weights, not to the average
    (`recalibrate_batchnorm` gives the EMA generator its own before it is used)."""
    for ema_param, param in zip(ema.parameters(), generator.parameters()):
        ema_param.lerp_(param, 1.0 - decay)


@torch.no_grad()
def generate(generator: Generator, count: int, seed: int, device: torch.device, batch_size: int = 500) -> np.ndarray:
    """`count` images as uint8 N x C x H x W, from noise seeded independently of training."""
    was_training = generator.training
    generator.eval()
    noise_rng = torch.Generator().manual_seed(seed)
    batches = []
    for start in range(0, count, batch_size):
        z = torch.randn(min(batch_size, count - start), generator.z_dim, generator=noise_rng).to(device)
        images = generator(z)
        if not torch.isfinite(images).all():
            generator.train(was_training)
            raise NonFiniteSamples("the generator produces non-finite pixels (NaN or infinite weights or BatchNorm statistics)")
        batches.append(images.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).cpu())
    generator.train(was_training)
    return torch.cat(batches).numpy()


def _step(optimiser: torch.optim.Optimizer, loss: torch.Tensor, penalty: torch.Tensor | None, extra: dict[str, torch.Tensor]) -> torch.Tensor:
    """One optimiser step on the adversarial loss plus the method's penalty (None: no penalty term at all) and its
    per-step terms, added in that order."""
    if penalty is not None:
        loss = loss + penalty
    for term in extra.values():
        loss = loss + term
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return loss


class RunRecorder:
    """One run's bookkeeping, shared by the per-run loop (`train_gan`) and the seed-batched one
    (`benchmark.batched.train_gan_batched`): its optimisers, EMA generator and sampler, resuming from its checkpoint,
    its log, evaluations, snapshots, checkpoints and divergence. The batched loop trains stacked copies of the
    weights and writes them back into this run's models before it evaluates or checkpoints, so both loops leave
    files of one format."""

    def __init__(
        self,
        models: GANModels,
        settings: TrainSettings,
        seed: int,
        run_dir: Path,
        hooks: TrainingHooks,
        run_identity: dict[str, Any],
        evaluate: Callable[[Generator, int], dict[str, Any]] | None,
        device: torch.device,
    ) -> None:
        """`settings` as the hooks adapted them (`TrainingHooks.training_settings`)."""
        self.models, self.settings, self.seed, self.hooks, self.evaluate = models, settings, seed, hooks, evaluate
        self.folder = StageFolder(run_dir)
        self.folder.path.mkdir(parents=True, exist_ok=True)
        self.generator, self.discriminator = generator, discriminator = models.generator, models.discriminator
        generator.train()
        discriminator.train()
        self.params_g, self.params_d = hooks.trainable_parameters(generator, discriminator)
        self.optimiser_g = hooks.make_optimiser(self.params_g, settings.lr_g, settings)
        self.optimiser_d = hooks.make_optimiser(self.params_d, settings.lr_d, settings)
        self.ema = copy.deepcopy(generator).requires_grad_(False) if settings.ema_decay > 0 else None
        # Batches and noise come from one generator whose state is checkpointed: a resumed run draws what an
        # uninterrupted one would have drawn.
        self.sampler = torch.Generator().manual_seed(seed)
        self.identity = {**run_identity, "train_settings": settings.as_record(), "seed": seed}
        self.log_file = JsonLog(self.folder.train_log)
        self.structure = model_structure(generator, discriminator)
        parts: dict[str, Any] = {
            "generator": generator,
            "discriminator": discriminator,
            "generator_ema": self.ema,
            "optimiser_g": self.optimiser_g,
            "optimiser_d": self.optimiser_d,
        }
        if hooks.state_dict():  # only then: checkpoints of methods without state keep their layout
            parts["method_state"] = hooks
        self.state = TrainingState(self.identity, models.arch.to_dict(), parts, {"sampler_state": self.sampler}, self.log_file, self.structure)
        # Mid-run state goes to resume.pt, the finished run to checkpoint.pt: a workflow manager may delete a job's
        # declared outputs (checkpoint.pt) before rerunning it, but keeps resume.pt, so a killed job resumes.
        self.start_step = self.state.resume((self.folder.checkpoint, self.folder.resume), device, "run")
        if self.start_step:
            log.info("resuming %s at step %d of %d", run_dir, self.start_step, settings.steps)
        elif self.folder.snapshots.exists():  # left by an earlier run with other settings: never mix its generators in
            shutil.rmtree(self.folder.snapshots)
        self._recalibrated_at: list[int] = []
        self._last_time, self._last_step = 0.0, self.start_step

    def start_clock(self) -> float:
        """Called as the training steps begin (after the starting point's evaluation): the start of the first logged
        rate's interval. Returns the start time."""
        started, self._last_time = time.perf_counter(), time.perf_counter()
        return started

    def checkpoint(self, step: int) -> None:
        finished = step == self.settings.steps
        self.state.save(self.folder.checkpoint if finished else self.folder.resume, step, mid_run=not finished)

    def diverge(self, step: int, reason: str) -> None:
        self.log_file.append({"step": step, "diverged": reason})
        self.log_file.write()
        self.folder.resume.unlink(missing_ok=True)  # resuming would only diverge again at the same step
        raise TrainingDiverged(step, reason)

    def evaluated_generator(self, step: int) -> Generator:
        """G, or the EMA generator with BatchNorm statistics re-estimated for its weights of this step."""
        if self.ema is None:
            return self.generator
        if self._recalibrated_at != [step]:
            # Seeded by the run's seed only: the statistics depend on the weights alone, so a resumed run's
            # checkpoints equal an uninterrupted run's whatever the EMA's buffers held when it was saved.
            recalibrate_batchnorm(self.ema, self.settings.bn_recalibration_batches, self.settings.batch_size, self.seed)
            self._recalibrated_at[:] = [step]
        return self.ema

    def run_evaluation(self, step: int) -> None:
        if self.evaluate is not None:
            evaluated = self.evaluated_generator(step)
            try:
                result = self.evaluate(evaluated, step)
            except NonFiniteSamples:
                self.diverge(step, "non-finite generated images")
            self.log_file.append({"step": step, "eval": result})
            log.info("step %d: evaluation %s", step, result)
            if step != self.settings.steps:  # the last step's generator is in checkpoint.pt
                save_snapshot(self.folder.snapshot(step), step, self.models.arch, self.identity, evaluated, self.structure)

    def record_step(self, step: int, values: dict[str, float], real_logits: torch.Tensor, fake_logits: torch.Tensor) -> None:
        """Check a step's logged losses (non-finite: the run diverged) and write a log line on the log schedule,
        with D's mean logits of the step's D update (read only on a logged step: each read waits for the device)."""
        bad = [name for name, value in values.items() if not math.isfinite(value)]
        if bad:
            self.diverge(step, f"non-finite {', '.join(bad)}")
        if step % self.settings.log_every == 0 or step in (1, self.settings.steps):
            now = time.perf_counter()
            rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
            self._last_time, self._last_step = now, step
            line = {**values, "step": step, "d_real": real_logits.mean().item(), "d_fake": fake_logits.mean().item(), "steps_per_s": round(rate, 2)}
            self.log_file.append(line)
            log.info("step %d/%d  loss_d %.3f  loss_g %.3f  (%.1f steps/s)", step, self.settings.steps, values["loss_d"], values["loss_g"], rate)

    def after_step(self, step: int) -> None:
        """The evaluation and checkpoint schedule within the run (the last step is `finish`'s)."""
        if self.settings.evaluates_at(step) and step != self.settings.steps:
            self.run_evaluation(step)
        if self.settings.checkpoint_every and step % self.settings.checkpoint_every == 0 and step != self.settings.steps:
            self.checkpoint(step)

    def finish(self, started: float) -> GANModels:
        """Evaluate and save the last step (unless the run was finished already); the models to evaluate."""
        steps = self.settings.steps
        if self.start_step < steps:
            self.evaluated_generator(steps)  # the saved EMA generator carries its own statistics
            self.run_evaluation(steps)
            self.checkpoint(steps)
            self.folder.resume.unlink(missing_ok=True)
            log.info("trained %d steps in %.1f s", steps - self.start_step, time.perf_counter() - started)
        return GANModels(self.models.arch, self.ema if self.ema is not None else self.generator, self.discriminator)


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
    `run_dir` is resumed only when its identity is equal, otherwise the differing keys are named. The hooks may
    replace `settings` (`TrainingHooks.training_settings`); the identity records the settings actually used.
    Returns the models to evaluate: G (the EMA copy when enabled, its BatchNorm statistics its own) and D.
    """
    settings = hooks.training_settings(settings)
    device = real_images.device
    run = RunRecorder(models, settings, seed, run_dir, hooks, run_identity, evaluate, device)
    generator, discriminator, sampler, ema = run.generator, run.discriminator, run.sampler, run.ema
    forward_g, forward_d = compiled(generator, settings), compiled(discriminator, settings)
    num_real = real_images.shape[0]
    if run.start_step == 0 and settings.evaluates_at(0):
        run.run_evaluation(0)  # the starting point of the adaptation curve
    started = run.start_clock()
    for step in range(run.start_step + 1, settings.steps + 1):
        hooks.begin_step(step, generator, discriminator)
        real = real_images[torch.randint(num_real, (settings.batch_size,), generator=sampler).to(device)]
        z = hooks.sample_noise("d", step, settings.batch_size, generator.z_dim, sampler).to(device)
        with autocast(device, settings):
            fake = forward_g(z)
            real_logits = forward_d(hooks.augment(real, sampler))
            fake_logits = forward_d(hooks.augment(fake.detach(), sampler))
            extra_d = hooks.step_losses("d", StepBatch(step, real, z, fake.detach(), sampler), generator, discriminator)
            loss_d = discriminator_loss(settings.loss, real_logits, fake_logits)
        loss_d = _step(run.optimiser_d, loss_d, hooks.discriminator_penalty(discriminator), extra_d)

        z = hooks.sample_noise("g", step, settings.batch_size, generator.z_dim, sampler).to(device)
        with autocast(device, settings):
            fake = forward_g(z)
            fake_logits_g = forward_d(hooks.augment(fake, sampler))
            extra_g = hooks.step_losses("g", StepBatch(step, real, z, fake, sampler), generator, discriminator)
            loss_g = generator_loss(settings.loss, fake_logits_g)
        loss_g = _step(run.optimiser_g, loss_g, hooks.generator_penalty(generator), extra_g)
        if ema is not None:
            update_ema(ema, generator, ema_decay_at(step, settings.ema_decay))

        values = {"loss_d": loss_d.item(), "loss_g": loss_g.item()}
        values |= {f"{update}_{name}": term.item() for update, terms in (("d", extra_d), ("g", extra_g)) for name, term in terms.items()}
        run.record_step(step, values, real_logits, fake_logits)
        run.after_step(step)
    return run.finish(started)


def ema_decay_at(step: int, decay: float) -> float:
    """Warm-up (as in TensorFlow's ExponentialMovingAverage): early on the average must not be dominated by the
    random initial weights."""
    return min(decay, (1.0 + step) / (10.0 + step))


def autocast(device: torch.device, settings: TrainSettings) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast of the forward passes and losses when `autocast_bf16` is on (weights, optimiser states and the
    EMA stay float32); otherwise nothing changes, bit for bit."""
    if not settings.autocast_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def compiled(module: nn.Module, settings: TrainSettings) -> Callable[..., torch.Tensor]:
    """The module's forward as training calls it: `torch.compile`d when `compile` is on (the module itself, with
    its parameters, is unchanged: hooks, checkpoints and evaluation see the plain module)."""
    return torch.compile(module) if settings.compile else module


def as_training_tensor(images_uint8: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images_uint8)).to(device).float().div(127.5).sub(1.0)
