"""The method plugin interface and registry.

A method is a `Method` subclass in one file of `methods/` (or in an installed package, exposed through the entry
point group `ganbench.methods`). It says only what differs from plain GAN training: how G and D start
(`initialise`), which parameters train and which penalties apply (the `TrainingHooks`), and which pipeline
artefacts it needs (`requires`), so that the workflow wires its inputs without knowing the method.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import torch

from benchmark.checkpoint import load_checkpoint, models_from_checkpoint
from benchmark.errors import BenchmarkError
from benchmark.models import Architecture, GANModels
from benchmark.plugins import discover, lookup, plugin_folders
from benchmark.training import TrainingHooks

# Artefacts a method can require; the workflow maps each to the stage that produces it.
ARTEFACTS = ("source_checkpoint",)


@dataclass(frozen=True)
class Hyperparameter:
    default: Any
    search: tuple[Any, ...] | None = None  # (low, high) for numbers, or a tuple of choices
    log_scale: bool = False
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
        path = self.artefacts.get("source_checkpoint")
        if path is None:
            raise BenchmarkError("This method needs the source checkpoint, but none was given (declare it in `requires`).")
        return models_from_checkpoint(load_checkpoint(path, self.device), path, self.arch, self.device)


class Method(TrainingHooks):
    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    hyperparameters: ClassVar[dict[str, Hyperparameter]] = {}

    def __init__(self, **hparams: Any) -> None:
        unknown = sorted(set(hparams) - set(self.hyperparameters))
        if unknown:
            allowed = ", ".join(sorted(self.hyperparameters)) or "none"
            raise BenchmarkError(f"Method '{self.name}' has no hyperparameter(s) {unknown}; it takes: {allowed}.")
        self.hparams = {key: spec.default for key, spec in self.hyperparameters.items()} | hparams

    def initialise(self, context: AdaptationContext) -> GANModels:
        return context.fresh_models()


@cache
def methods() -> dict[str, type[Method]]:
    registry = discover(Method, plugin_folders("methods", "GANBENCH_METHODS_PATH"), "ganbench.methods", "methods")
    for name, cls in registry.items():
        unknown = set(cls.requires) - set(ARTEFACTS)
        if unknown:
            raise BenchmarkError(f"Method '{name}' requires unknown artefact(s) {sorted(unknown)}; known: {ARTEFACTS}.")
    return registry


def get_method(name: str) -> type[Method]:
    return lookup(methods(), name, "method")
