"""Checkpoints: a dict of tensors and plain values, written atomically, read with `weights_only=True`.

Nothing here unpickles arbitrary objects: `torch.load(..., weights_only=True)` refuses anything but tensors and
primitive containers, so a file carrying a malicious pickle payload is rejected without running it.

A method may train models of its own structure (a miner in front of G, modulated kernels, an extra D head:
`benchmark.methods.Method.build_models`). A checkpoint or snapshot of such models records their structure (the
classes of G and D, `model_structure`); readers rebuild the models through a `ModelBuilder` (the method's) and
refuse a checkpoint whose recorded structure differs from what they build, naming both. Checkpoints of the plain
backbone record nothing, so their bytes are what they were before structures existed.
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmark.errors import BenchmarkError, brief
from benchmark.io import atomic_write_bytes
from benchmark.models import Architecture, Discriminator, GANModels, Generator

FORMAT_VERSION = 1

ModelBuilder = Callable[[Architecture], GANModels]  # empty models of a structure, for loading weights into


def plain_models(arch: Architecture) -> GANModels:
    """The shared backbone's G and D, the structure of every checkpoint that records none."""
    return GANModels(arch, Generator(arch), Discriminator(arch))


def _class_name(cls: type) -> str:
    # The class name alone: a plugin file's module name depends on where the checkout lies.
    return cls.__qualname__


PLAIN_STRUCTURE = {"generator": _class_name(Generator), "discriminator": _class_name(Discriminator)}


def model_structure(generator: nn.Module, discriminator: nn.Module) -> dict[str, str] | None:
    """What a checkpoint records about its models' structure: None for the plain backbone, else the classes of G
    and D (a method's own modules, e.g. a miner wrapped around G, are classes of their own)."""
    structure = {"generator": _class_name(type(generator)), "discriminator": _class_name(type(discriminator))}
    return None if structure == PLAIN_STRUCTURE else structure


def check_structure(payload: dict[str, Any], path: str | Path, built: dict[str, nn.Module]) -> None:
    """Refuse a checkpoint whose recorded structure is not that of the models built to load it (`built`: part name
    -> module, "generator" and/or "discriminator")."""
    recorded = payload.get("structure") or PLAIN_STRUCTURE
    differing = [
        f"{part}: checkpoint {recorded.get(part)} vs built {_class_name(type(module))}"
        for part, module in built.items()
        if recorded.get(part) != _class_name(type(module))
    ]
    if differing:
        raise BenchmarkError(
            f"Checkpoint {path} holds models of another structure than this run builds ({'; '.join(differing)}). Load it with "
            "the method that wrote it (the run's `method`), or delete it and rerun the stage that wrote it."
        )


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Atomically. Serialised to memory first: torch.save names its archive after the file it writes, which
    would be the random temporary name, and then the same checkpoint would not hash the same twice."""
    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **payload}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"Checkpoint {path} does not exist. Run the stage that writes it first.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise BenchmarkError(
            f"Checkpoint {path} holds objects other than tensors and plain values; it was refused without being "
            f"executed ({str(error).splitlines()[0]}). Use checkpoints written by this benchmark."
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise BenchmarkError(f"Checkpoint {path} is truncated or corrupt ({error}). Delete it and rerun its stage.") from error
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise BenchmarkError(f"{path} is not a version-{FORMAT_VERSION} checkpoint of this benchmark. Delete it and rerun its stage.")
    return payload


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Named tensors as safetensors (no pickle at all), atomically, with JSON metadata (provenance)."""
    from safetensors.torch import save

    data = save(
        {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}, {"metadata_json": json.dumps(metadata, sort_keys=True)}
    )
    atomic_write_bytes(path, data)


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"Artefact {path} does not exist. Run the stage that builds it first.")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise BenchmarkError(f"Artefact {path} is truncated or corrupt ({error}). Delete it and rerun its stage.") from error


def models_from_checkpoint(
    payload: dict[str, Any], path: str | Path, expected: Architecture, device: torch.device | str, build: ModelBuilder = plain_models
) -> GANModels:
    """G and D from a checkpoint (the EMA generator when one was kept), after checking the architecture and the
    structure (`build` makes the empty models to load into: the plain backbone unless a method says otherwise)."""
    if payload.get("status") == "diverged":
        raise BenchmarkError(f"{path} records a run that diverged at step {payload['step']} ({payload['reason']}): it holds no weights.")
    stored = payload["architecture"]
    if stored != expected.to_dict():
        differing = sorted(key for key in set(stored) | set(expected.to_dict()) if stored.get(key) != expected.to_dict().get(key))
        details = ", ".join(f"{key}: checkpoint {stored.get(key)!r} vs config {expected.to_dict().get(key)!r}" for key in differing)
        raise BenchmarkError(f"Checkpoint {path} was trained with a different architecture ({details}). Use a matching config.")
    built = build(expected)
    generator, discriminator = built.generator, built.discriminator
    check_structure(payload, path, {"generator": generator, "discriminator": discriminator})
    load_weights(generator, payload, ("generator_ema", "generator"), path)
    load_weights(discriminator, payload, ("discriminator",), path)
    return GANModels(expected, generator.to(device), discriminator.to(device))


def load_weights(module: torch.nn.Module, payload: dict[str, Any], keys: tuple[str, ...], path: str | Path) -> None:
    """The first of `keys` the checkpoint holds, into `module`; a missing part or tensors of another shape are one
    clear error, not a traceback."""
    state = next((payload[key] for key in keys if payload.get(key) is not None), None)
    if state is None:
        raise BenchmarkError(f"Checkpoint {path} holds no '{keys[-1]}' weights. Delete it and rerun the stage that wrote it.")
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise BenchmarkError(
            f"Checkpoint {path} does not fit the {type(module).__name__} this run builds ({brief(error)}). Delete it and rerun the stage that wrote it."
        ) from error


def save_snapshot(
    path: str | Path, step: int, arch: Architecture, identity: dict[str, Any], generator: nn.Module, structure: dict[str, str] | None = None
) -> None:
    """The generator that an evaluation step scored, with the identity of its run (and its models' structure, when
    not the plain backbone's)."""
    payload = {
        "step": step,
        "architecture": arch.to_dict(),
        "identity_json": json.dumps(identity, sort_keys=True),
        "generator": generator.state_dict(),
    }
    if structure is not None:
        payload["structure"] = structure
    save_checkpoint(path, payload)


def generator_from_snapshot(
    path: str | Path, run_identity_json: str, expected: Architecture, device: torch.device | str, build: ModelBuilder = plain_models
) -> nn.Module:
    """A snapshot's generator, refused when it was written by a run with another identity (stale file) or holds a
    generator of another structure than `build` makes."""
    payload = load_checkpoint(path, device)
    if payload.get("identity_json") != run_identity_json:
        raise BenchmarkError(f"Snapshot {path} belongs to another run of this folder. Delete the run folder and rerun its adaptation.")
    if payload["architecture"] != expected.to_dict():
        raise BenchmarkError(f"Snapshot {path} was trained with a different architecture. Delete the run folder and rerun its adaptation.")
    generator = build(expected).generator
    check_structure(payload, path, {"generator": generator})
    load_weights(generator, payload, ("generator",), path)
    return generator.to(device)
