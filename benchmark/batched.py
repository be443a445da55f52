"""Seed-batched training: the runs of one method that differ only in seed (and so in shots, starting weights and
noise) trained together as one vectorised model on one device.

Each run keeps its own `RunRecorder` (optimiser states for its checkpoints, EMA generator, sampler, log,
evaluations, snapshots, divergence): the loop below trains stacked copies of the runs' weights, `torch.func.vmap`
over `functional_call`, and writes them back into each run's models before it evaluates or checkpoints. Each run
draws its batches, noise and augmentations from its own sampler in the order the per-run loop (`train_gan`) draws
them, and the batch's loss is the sum of the runs' losses, so each run's gradients are its own: a batched run
equals its separate run up to floating-point rounding (a batched convolution sums in another order; GAN training
amplifies such differences over many steps, so the equivalence is stated for short runs: `tests/test_batched.py`).

Two things vmap cannot do in place are done outside it, exactly as the modules do them: spectral norm's power
iteration (one per forward pass in train mode; `out=` kernels have no batching rule), on the stacked `_u`/`_v`
buffers before each D call, with the parametrisations in eval mode inside vmap; and the EMA update, on the stacked
weights. BatchNorm's running statistics update inside vmap, per run, on stacked buffers.

The optimiser is the method's own (`TrainingHooks.make_optimiser`) over the stacked weights: elementwise optimisers
(Adam, SGD) then update each run exactly as its own would. A run that diverges is recorded as diverged and drops
out of the batch's loss; its batch-mates train on. Runs resuming from different steps are trained as separate
batches, one per resume step.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn.utils.parametrizations import _SpectralNorm

from benchmark.errors import BenchmarkError
from benchmark.models import GANModels, Generator
from benchmark.training import (
    RunRecorder,
    TrainingDiverged,
    TrainingHooks,
    TrainSettings,
    autocast,
    discriminator_loss,
    ema_decay_at,
    generator_loss,
)

log = logging.getLogger(__name__)

# Hooks whose per-run effects the batched loop cannot reproduce: each would act on one run's modules while the
# batch trains stacked copies (a schedule that toggles what trains, noise of another shape, losses that call the
# models, state of the method's own that changes while it trains).
UNBATCHABLE_HOOKS = ("begin_step", "sample_noise", "step_losses", "state_dict", "load_state_dict")


class NotBatchable(BenchmarkError):
    """The runs' models have a structure the batched loop does not handle (found when it stacks them, before any
    step): their seeds train one after another instead."""


def batching_problem(hooks_class: type[TrainingHooks]) -> str | None:
    """Why runs of this method cannot train as one batch, or None. A method may also opt out by setting a class
    attribute `batchable = False` (e.g. modules with in-place state other than BatchNorm and spectral norm)."""
    if not getattr(hooks_class, "batchable", True):
        return "the method declares batchable = False"
    overridden = [name for name in UNBATCHABLE_HOOKS if getattr(hooks_class, name) is not getattr(TrainingHooks, name)]
    if overridden:
        return f"it overrides {', '.join(overridden)}, which act on one run's modules"
    return None


@dataclass
class BatchMember:
    """One run of a batch: what `train_gan` takes for it."""

    models: GANModels
    real_images: torch.Tensor
    seed: int
    run_dir: Path
    hooks: TrainingHooks
    run_identity: dict[str, Any]
    evaluate: Callable[[Generator, int], dict[str, Any]] | None = None


class StackedModule:
    """The weights and buffers of several runs' copies of one module, stacked along a new first dimension, and
    the module's forward vmapped over them (`functional_call` on a weightless copy of the first run's module)."""

    def __init__(self, modules: list[nn.Module], trainable: list[list[nn.Parameter]], compile: bool = False) -> None:
        try:
            self._stack_modules(modules, trainable, compile)
        except (KeyError, RuntimeError) as error:  # weights of other names or shapes, a trainable weight of another module
            raise NotBatchable(f"the runs' models cannot be stacked ({type(error).__name__}: {error})") from error

    def _stack_modules(self, modules: list[nn.Module], trainable: list[list[nn.Parameter]], compile: bool) -> None:
        self.modules = modules
        names = {id(parameter): name for name, parameter in modules[0].named_parameters()}
        self.trainable_names = [names[id(parameter)] for parameter in trainable[0]]
        for module, params in zip(modules[1:], trainable[1:]):
            other = {id(parameter): name for name, parameter in module.named_parameters()}
            if [other[id(parameter)] for parameter in params] != self.trainable_names:
                raise NotBatchable("the runs of a batch train different parameters")
        self.params = {name: self._stack(name, is_buffer=False) for name, _ in modules[0].named_parameters()}
        self.buffers = {name: self._stack(name, is_buffer=True) for name, _ in modules[0].named_buffers()}
        for name in self.trainable_names:
            self.params[name].requires_grad_(True)
        self.template = copy.deepcopy(modules[0]).to("meta")  # its train/eval flags are the runs' (frozen blocks)
        self.power_iterations: list[tuple[_SpectralNorm, str, str, str]] = []
        for name, layer in self.template.named_modules():
            if isinstance(layer, _SpectralNorm):
                owner = name.rsplit(".", 1)[0]  # "...parametrizations.weight"
                if layer.dim != 0 or f"{name}._u" not in self.buffers:
                    raise NotBatchable(f"spectral norm of {owner} (dimension {layer.dim}) is not batched")
                if layer.training:  # a layer in eval mode (a frozen block) does not iterate
                    self.power_iterations.append((layer, f"{owner}.original", f"{name}._u", f"{name}._v"))
                layer.eval()  # inside vmap: sigma from the stored vectors, which `iterate_power` updates
        self.forward = torch.compile(vmap(self._functional)) if compile else vmap(self._functional)  # `compile`: see TrainSettings

    def _stack(self, name: str, is_buffer: bool) -> torch.Tensor:
        tensors = [dict(module.named_buffers() if is_buffer else module.named_parameters())[name] for module in self.modules]
        return torch.stack([tensor.detach() for tensor in tensors]).clone()

    def _functional(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        return functional_call(self.template, (params, buffers), (inputs,))

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        self.iterate_power()
        # The forward reads the spectral-norm vectors as they are now; the next call's power iteration updates them in
        # place while this call's graph may still need them (a compiled graph saves its inputs, not its clones).
        vectors = {name: self.buffers[name].clone() for _, _, u, v in self.power_iterations for name in (u, v)}
        return self.forward(self.params, {**self.buffers, **vectors}, inputs)

    @torch.no_grad()
    def iterate_power(self) -> None:
        """One step of spectral norm's power iteration per run (as `_SpectralNorm._power_method` does in train mode)."""
        for layer, weight, u_name, v_name in self.power_iterations:
            matrix = self.params[weight].flatten(2)  # runs x out x in
            u, v = self.buffers[u_name], self.buffers[v_name]
            for _ in range(layer.n_power_iterations):
                u.copy_(nn.functional.normalize(torch.bmm(matrix, v.unsqueeze(-1)).squeeze(-1), dim=1, eps=layer.eps))
                v.copy_(nn.functional.normalize(torch.bmm(matrix.transpose(1, 2), u.unsqueeze(-1)).squeeze(-1), dim=1, eps=layer.eps))

    def trainable_stack(self) -> list[torch.Tensor]:
        return [self.params[name] for name in self.trainable_names]

    @torch.no_grad()
    def write_back(self, index: int) -> None:
        """Copy run `index`'s weights and buffers into its own module."""
        module = self.modules[index]
        for name, tensor in module.named_parameters():
            tensor.copy_(self.params[name][index])
        for name, tensor in module.named_buffers():
            tensor.copy_(self.buffers[name][index])


def _optimiser_state_to_runs(
    stacked: torch.optim.Optimizer,
    stacked_params: list[torch.Tensor],
    runs: list[tuple[torch.optim.Optimizer, list[nn.Parameter]]],
    indices: list[int],
) -> None:
    """Per-run optimiser states from the stacked one: tensors shaped like the stacked weight are sliced, the rest
    (a step count) copied."""
    for position, stacked_param in enumerate(stacked_params):
        state = stacked.state.get(stacked_param)
        if not state:
            continue
        for index in indices:
            optimiser, params = runs[index]
            optimiser.state[params[position]] = {
                key: (value[index].clone() if torch.is_tensor(value) and value.shape == stacked_param.shape else copy.deepcopy(value))
                for key, value in state.items()
            }


def _optimiser_state_from_runs(
    stacked: torch.optim.Optimizer, stacked_params: list[torch.Tensor], runs: list[tuple[torch.optim.Optimizer, list[nn.Parameter]]]
) -> None:
    """The stacked optimiser's state from the runs' resumed ones (all at the same step)."""
    for position, stacked_param in enumerate(stacked_params):
        states = [optimiser.state.get(params[position]) for optimiser, params in runs]
        if not states[0]:
            continue
        stacked.state[stacked_param] = {
            key: (
                torch.stack([state[key] for state in states])
                if torch.is_tensor(value) and value.shape == runs[0][1][position].shape
                else copy.deepcopy(value)
            )
            for key, value in states[0].items()
        }


def train_gan_batched(members: list[BatchMember], settings: TrainSettings) -> list[GANModels | TrainingDiverged]:
    """Train the runs of `members` as one batch; per run, the models to evaluate or the `TrainingDiverged` that
    ended it. Every member must be a run of the same method class and settings on images of one shape and device;
    `settings` as configured (each run's hooks adapt them, as in `train_gan`)."""
    hooks_class = type(members[0].hooks)
    problem = batching_problem(hooks_class)
    if problem or any(type(member.hooks) is not hooks_class for member in members):
        raise NotBatchable(f"runs of {hooks_class.__name__} cannot be batched: {problem or 'mixed methods'}")
    settings = members[0].hooks.training_settings(settings)
    device = members[0].real_images.device
    recorders = [
        RunRecorder(m.models, settings, m.seed, m.run_dir, m.hooks, m.run_identity, m.evaluate, device) for m in members
    ]  # fmt: skip
    outcomes: list[GANModels | TrainingDiverged | None] = [None] * len(members)
    by_start: dict[int, list[int]] = {}
    for index, recorder in enumerate(recorders):
        by_start.setdefault(recorder.start_step, []).append(index)
    for start_step, indices in sorted(by_start.items()):
        if len(by_start) > 1:
            log.info("runs %s resume at step %d: trained as one batch", [members[i].seed for i in indices], start_step)
        _train_group([members[i] for i in indices], [recorders[i] for i in indices], settings, start_step, outcomes, indices)
    return outcomes  # type: ignore[return-value]  # every run ends trained or diverged


def _train_group(
    members: list[BatchMember],
    recorders: list[RunRecorder],
    settings: TrainSettings,
    start_step: int,
    outcomes: list[GANModels | TrainingDiverged | None],
    positions: list[int],
) -> None:
    runs = len(members)
    alive = [True] * runs

    def guarded(index: int, action: Callable[[], None]) -> None:
        """Run a per-run action; a run that diverges in it is recorded and leaves the batch."""
        try:
            action()
        except TrainingDiverged as diverged:
            alive[index] = False
            outcomes[positions[index]] = diverged
            log.error("run %s diverged at step %d (%s); its batch-mates train on", members[index].run_dir, diverged.step, diverged.reason)

    generators = StackedModule([r.generator for r in recorders], [r.params_g for r in recorders], settings.compile)
    discriminators = StackedModule([r.discriminator for r in recorders], [r.params_d for r in recorders], settings.compile)
    stacked_g, stacked_d = generators.trainable_stack(), discriminators.trainable_stack()
    hooks0 = members[0].hooks
    optimiser_g = hooks0.make_optimiser(stacked_g, settings.lr_g, settings)  # type: ignore[arg-type]
    optimiser_d = hooks0.make_optimiser(stacked_d, settings.lr_d, settings)  # type: ignore[arg-type]
    runs_g = [(r.optimiser_g, r.params_g) for r in recorders]
    runs_d = [(r.optimiser_d, r.params_d) for r in recorders]
    if start_step:
        _optimiser_state_from_runs(optimiser_g, stacked_g, runs_g)
        _optimiser_state_from_runs(optimiser_d, stacked_d, runs_d)
    ema_weights = None
    if recorders[0].ema is not None:
        ema_names = [name for name, _ in recorders[0].ema.named_parameters()]
        ema_weights = {name: torch.stack([dict(r.ema.named_parameters())[name].detach() for r in recorders]).clone() for name in ema_names}  # type: ignore[union-attr]

    def write_back(with_optimisers: bool) -> None:
        live = [i for i in range(runs) if alive[i]]
        for index in live:
            generators.write_back(index)
            discriminators.write_back(index)
            if ema_weights is not None:
                with torch.no_grad():
                    for name, tensor in recorders[index].ema.named_parameters():  # type: ignore[union-attr]
                        tensor.copy_(ema_weights[name][index])
        if with_optimisers:
            _optimiser_state_to_runs(optimiser_g, stacked_g, runs_g, live)
            _optimiser_state_to_runs(optimiser_d, stacked_d, runs_d, live)

    if start_step == 0 and settings.evaluates_at(0):
        for index, recorder in enumerate(recorders):
            guarded(index, lambda recorder=recorder: recorder.run_evaluation(0))
    # Penalty hooks only where the method has them: each call costs a functional call per run and step.
    penalties_d = [m.hooks.discriminator_penalty for m in members] if overrides(hooks0, "discriminator_penalty") else None
    penalties_g = [m.hooks.generator_penalty for m in members] if overrides(hooks0, "generator_penalty") else None
    device = members[0].real_images.device
    batch, z_dim = settings.batch_size, recorders[0].generator.z_dim
    started = min(recorder.start_clock() for recorder in recorders)
    for step in range(start_step + 1, settings.steps + 1):
        if not any(alive):
            break
        samplers = [r.sampler for r in recorders]
        real = torch.stack(
            [m.real_images[torch.randint(m.real_images.shape[0], (batch,), generator=s).to(device)] for m, s in zip(members, samplers)]
        )
        z = torch.stack([m.hooks.sample_noise("d", step, batch, z_dim, s).to(device) for m, s in zip(members, samplers)])
        with autocast(device, settings):
            fake = generators(z)
            real_in = torch.stack([m.hooks.augment(real[i], samplers[i]) for i, m in enumerate(members)])
            fake_in = torch.stack([m.hooks.augment(fake[i].detach(), samplers[i]) for i, m in enumerate(members)])
            real_logits = discriminators(real_in)
            fake_logits = discriminators(fake_in)
            loss_d = vmap(lambda r, f: discriminator_loss(settings.loss, r, f))(real_logits, fake_logits)
        total_d, logged_d = _batch_loss(loss_d, penalties_d, discriminators, alive)
        optimiser_d.zero_grad(set_to_none=True)
        total_d.backward()
        optimiser_d.step()

        z = torch.stack([m.hooks.sample_noise("g", step, batch, z_dim, s).to(device) for m, s in zip(members, samplers)])
        with autocast(device, settings):
            fake = generators(z)
            fake_in = torch.stack([m.hooks.augment(fake[i], samplers[i]) for i, m in enumerate(members)])
            loss_g = vmap(lambda f: generator_loss(settings.loss, f))(discriminators(fake_in))
        total_g, logged_g = _batch_loss(loss_g, penalties_g, generators, alive)
        optimiser_g.zero_grad(set_to_none=True)
        total_g.backward()
        optimiser_g.step()
        if ema_weights is not None:
            with torch.no_grad():
                decay = ema_decay_at(step, settings.ema_decay)
                for name, average in ema_weights.items():
                    average.lerp_(generators.params[name], 1.0 - decay)

        for index in range(runs):
            if alive[index]:
                values = {"loss_d": logged_d[index], "loss_g": logged_g[index]}
                guarded(index, partial(recorders[index].record_step, step, values, real_logits[index], fake_logits[index]))
        if settings.evaluates_at(step) or (settings.checkpoint_every and step % settings.checkpoint_every == 0):
            write_back(with_optimisers=bool(settings.checkpoint_every and step % settings.checkpoint_every == 0))
            for index in range(runs):
                if alive[index] and step != settings.steps:
                    guarded(index, partial(recorders[index].after_step, step))
    write_back(with_optimisers=True)
    for index, recorder in enumerate(recorders):
        if alive[index]:
            guarded(index, lambda recorder=recorder, i=index: outcomes.__setitem__(positions[i], recorder.finish(started)))
    log.info("trained %d runs as one batch: %d steps in %.1f s", runs, settings.steps - start_step, time.perf_counter() - started)


def overrides(hooks: TrainingHooks, name: str) -> bool:
    return getattr(type(hooks), name) is not getattr(TrainingHooks, name)


def _batch_loss(
    losses: torch.Tensor, penalties: list[Callable[[nn.Module], torch.Tensor | None]] | None, stacked: StackedModule, alive: list[bool]
) -> tuple[torch.Tensor, list[float]]:
    """The sum over live runs of each run's loss plus its penalty (the penalty hook called on a view of the run's
    module whose weights are its slices of the stacked ones), and each run's loss as the per-run loop logs it.
    Summing keeps each run's gradients its own; a diverged run's terms are left out, so its non-finite values
    reach nobody's update."""
    per_run = [losses[index] for index in range(len(alive))]
    if penalties is not None:
        for index, penalty_of in enumerate(penalties):
            if alive[index]:
                weights = {f"module.{name}": tensor[index] for name, tensor in {**stacked.params, **stacked.buffers}.items()}
                penalty = functional_call(_RunView(stacked.template, penalty_of), weights, ())
                if penalty is not None:
                    per_run[index] = per_run[index] + penalty
    live = [loss for loss, running in zip(per_run, alive) if running]
    total = torch.stack(live).sum() if live else losses.new_zeros(())
    return total, torch.stack(per_run).detach().float().tolist()


class _RunView(nn.Module):
    """Calls a penalty hook on `module`; under `functional_call` the module's weights and buffers are one run's slices."""

    def __init__(self, module: nn.Module, penalty_of: Callable[[nn.Module], torch.Tensor | None]) -> None:
        super().__init__()
        self.module = module
        self.penalty_of = penalty_of

    def forward(self) -> torch.Tensor | None:
        return self.penalty_of(self.module)
