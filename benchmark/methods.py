"""The method plugin interface and registry.

A method is a `Method` subclass in one file of `methods/` (or in an installed package, exposed through the entry
point group `ganbench.methods`). It says only what differs from plain GAN training:
- the structure of the models it trains when it adds networks or parameters (`build_models`; evaluation,
  snapshots and resume rebuild them through it) and how G and D start (`initialise`);
- the training settings it uses, which parameters train, which penalties and per-step losses apply, the noise
  and the per-step schedule (the `TrainingHooks`);
- which artefacts it adds to the pipeline (`provides`: tensors built once per source and pretraining seed,
  `Artefact`) and which it needs (`requires`: names of `benchmark.layout.ARTEFACTS` or of a registered method's
  `provides`), so that the workflow wires its inputs without knowing the method.

A method requiring "meta_checkpoint" subclasses `benchmark.meta_learning.MetaMethod`, which the meta-training
stage runs once per source and pretraining seed.

Discovering the methods imports the method files and the library below them (models, training loop,
meta-learning machinery), never a pipeline stage or the metrics: the Snakefile discovers them while it parses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import torch

from benchmark.augment import diff_augment
from benchmark.checkpoint import load_checkpoint, load_tensors, models_from_checkpoint, plain_models
from benchmark.errors import BenchmarkError
from benchmark.layout import ARTEFACTS
from benchmark.models import Architecture, GANModels
from benchmark.plugins import discover, lookup, plugin_folders
from benchmark.training import TrainingHooks

# Switches any method can turn on by a name suffix, e.g. "freeze_d+diffaug": class attributes they set.
MODIFIERS: dict[str, dict[str, Any]] = {
    "diffaug": {"augmentation": ("color", "translation", "cutout")},  # Zhao et al., NeurIPS 2020
}


@dataclass(frozen=True)
class Hyperparameter:
    default: Any
    search: tuple[Any, ...] | None = None  # (low, high) for numbers, or a tuple of choices for text and flags
    log_scale: bool = False
    help: str = ""
    minimum: float = 0  # smallest value that means something (1 for counts)
    # False: a setting that must agree with one outside the method (a meta-learner's loss with the adaptation
    # loss), so sweeps keep it at its default or configured value instead of drawing it.
    swept: bool = True

    def search_problem(self) -> str | None:
        """Why a numeric search range is not one a sweep could draw from, or None (`Method` checks it on definition)."""
        if self.search is None or isinstance(self.default, bool | str):
            return None  # choices of text or flags (or no range at all)
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in self.search)
        if not numbers or len(self.search) != 2 or not self.search[0] < self.search[1]:
            return "a range is (low, high) with low below high"
        low, high = self.search
        if not low <= self.default <= high:
            return "the default lies outside the range"
        if low < self.minimum:
            return f"the range starts below the minimum {self.minimum}"
        if self.log_scale and low <= 0:
            return "a log-scale range must be positive"
        if not self.log_scale and low > 0 and high / low >= 100:
            return "it spans two orders of magnitude or more: set log_scale=True"
        return None

    def check(self, key: str, value: Any) -> None:
        """A value must have the default's type (an int passes for a float); text and flags must be a choice."""
        expected = type(self.default)
        fits = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            fits = True
        if not fits:
            hint = " YAML reads 1e-4 without a dot as text: write 1.0e-4." if isinstance(value, str) else ""
            raise BenchmarkError(f"Hyperparameter '{key}' = {value!r} should be of type {expected.__name__}.{hint}")
        if expected in (str, bool) and self.search is not None and value not in self.search:
            raise BenchmarkError(f"Hyperparameter '{key}' = {value!r} is not one of {list(self.search)}.")
        if expected is float and not math.isfinite(value):
            raise BenchmarkError(f"Hyperparameter '{key}' = {value!r} is not a finite number. Write a finite value.")
        if expected in (int, float) and value < self.minimum:
            raise BenchmarkError(f"Hyperparameter '{key}' = {value!r} is below its minimum {self.minimum}.")


# What a plugin artefact may be built from: artefacts kept per source and pretraining seed, as it is.
ARTEFACT_INPUTS = ("source_checkpoint",)


@dataclass(frozen=True)
class Artefact:
    """An artefact a plugin adds to the pipeline: named tensors that `build` computes once per source and
    pretraining seed from built-in artefacts (`requires`, among `ARTEFACT_INPUTS`, read through the context it is
    given), stored as safetensors by the `build_artefact` stage with its provenance, and read by a
    method that requires it through `AdaptationContext.tensors_from`. Declared in a method's `provides`; any method
    may require it. E.g. statistics of the source generator that every run of every task would otherwise
    recompute."""

    name: str
    build: Callable[[AdaptationContext], dict[str, torch.Tensor]]
    requires: tuple[str, ...] = ("source_checkpoint",)
    help: str = ""


@dataclass
class AdaptationContext:
    """What a method may use to build its starting point."""

    arch: Architecture
    seed: int
    device: torch.device
    artefacts: dict[str, Path]

    def fresh_models(self) -> GANModels:
        return GANModels.fresh(self.arch, self.seed, self.device)

    def source_models(self) -> GANModels:
        """G and D as the source pretraining left them (the EMA generator when one was kept)."""
        return self.models_from("source_checkpoint")

    def models_from(self, artefact: str) -> GANModels:
        path = self.artefact_path(artefact)
        return models_from_checkpoint(load_checkpoint(path, self.device), path, self.arch, self.device)

    def tensors_from(self, artefact: str) -> dict[str, torch.Tensor]:
        """The tensors of a plugin artefact (`Artefact`), on the run's device."""
        return {name: tensor.to(self.device) for name, tensor in load_tensors(self.artefact_path(artefact)).items()}

    def artefact_path(self, artefact: str) -> Path:
        path = self.artefacts.get(artefact)
        if path is None:
            raise BenchmarkError(f"This method needs the {artefact}, but none was given (declare it in `requires`).")
        return path


class Method(TrainingHooks):
    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    provides: ClassVar[tuple[Artefact, ...]] = ()  # artefacts this plugin adds to the pipeline
    hyperparameters: ClassVar[dict[str, Hyperparameter]] = {}
    augmentation: ClassVar[tuple[str, ...]] = ()  # DiffAugment policy, set by the "+diffaug" modifier
    # False: seeds never train as one vectorised model (`benchmark.batched.batching_problem`), e.g. modules with
    # in-place state other than BatchNorm statistics and spectral norm's vectors.
    batchable: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A search range no sweep could draw from is refused where the method is defined, naming both."""
        super().__init_subclass__(**kwargs)
        for key, spec in cls.hyperparameters.items():
            problem = spec.search_problem()
            if problem:
                raise BenchmarkError(f"Method '{cls.__dict__.get('name', cls.__name__)}' declares {key} with search={spec.search}: {problem}.")

    def __init__(self, **hparams: Any) -> None:
        unknown = sorted(set(hparams) - set(self.hyperparameters))
        if unknown:
            allowed = ", ".join(sorted(self.hyperparameters)) or "none"
            raise BenchmarkError(f"Method '{self.name}' has no hyperparameter(s) {unknown}; it takes: {allowed}.")
        for key, value in hparams.items():
            self.hyperparameters[key].check(f"{self.name}.{key}", value)
        self.hparams = {key: spec.default for key, spec in self.hyperparameters.items()} | hparams

    def build_models(self, arch: Architecture) -> GANModels:
        """Empty models of the structure this method trains, for loading its checkpoints and snapshots into (their
        weights are overwritten). Override together with `initialise` when the method adds networks or
        parameters: a miner in front of G, modulated kernels, an extra D head. The default is the plain backbone."""
        return plain_models(arch)

    def initialise(self, context: AdaptationContext) -> GANModels:
        """G and D as training starts, of the structure `build_models` makes."""
        return context.fresh_models()

    def augment(self, images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        return diff_augment(images, self.augmentation, rng) if self.augmentation else images


@cache
def methods() -> dict[str, type[Method]]:
    registry = discover(Method, plugin_folders("methods", "GANBENCH_METHODS_PATH"), "ganbench.methods", "methods")
    known = set(ARTEFACTS) | set(_plugin_artefacts(registry))
    for name, cls in registry.items():
        unknown = set(cls.requires) - known
        if unknown:
            raise BenchmarkError(f"Method '{name}' requires unknown artefact(s) {sorted(unknown)}; known: {sorted(known)}.")
    return registry


def _plugin_artefacts(registry: dict[str, type[Method]]) -> dict[str, Artefact]:
    """Every artefact the registered methods provide; a name given twice, or one that is built in, is refused, as
    is an artefact built from anything but `ARTEFACT_INPUTS`."""
    found: dict[str, tuple[str, Artefact]] = {}
    for method, cls in sorted(registry.items()):
        for artefact in cls.provides:
            if artefact.name in ARTEFACTS or artefact.name in found:
                other = "the pipeline" if artefact.name in ARTEFACTS else f"method '{found[artefact.name][0]}'"
                raise BenchmarkError(f"Method '{method}' provides artefact '{artefact.name}', which {other} provides already. Rename one.")
            unknown = set(artefact.requires) - set(ARTEFACT_INPUTS)
            if unknown:
                raise BenchmarkError(
                    f"Artefact '{artefact.name}' of method '{method}' is built from {sorted(unknown)}; a plugin artefact is built from "
                    f"{', '.join(ARTEFACT_INPUTS)} only (it is kept per source and pretraining seed)."
                )
            found[artefact.name] = (method, artefact)
    return {name: artefact for name, (_, artefact) in found.items()}


def plugin_artefacts() -> dict[str, Artefact]:
    """The artefacts registered methods add to the pipeline, by name."""
    return _plugin_artefacts(methods())


def get_artefact(name: str) -> Artefact:
    return lookup(plugin_artefacts(), name, "plugin artefact")


def split_variant(name: str) -> tuple[str, list[str]]:
    """The registered base method and its modifiers: "freeze_d+diffaug" -> ("freeze_d", ["diffaug"])."""
    base, *modifiers = name.split("+")
    return base, modifiers


@cache
def get_method(name: str) -> type[Method]:
    """A registered method, or a variant "<method>+<modifier>[+...]" with the modifiers' switches turned on."""
    base, modifiers = split_variant(name)
    cls = lookup(methods(), base, "method")
    if not modifiers:
        return cls
    attributes: dict[str, Any] = {"name": name}
    for modifier in modifiers:
        if modifier not in MODIFIERS:
            raise BenchmarkError(f"Unknown method modifier '+{modifier}' in '{name}'. Available: {', '.join(sorted(MODIFIERS))}.")
        attributes.update(MODIFIERS[modifier])
    return type(f"{cls.__name__}_{'_'.join(modifiers)}", (cls,), attributes)
