"""Checkpoints: a dict of tensors and plain values, written atomically, read with `weights_only=True`.

Nothing here unpickles arbitrary objects: `torch.load(..., weights_only=True)` refuses anything but tensors and
primitive containers, so a file carrying a malicious pickle payload is rejected without running it.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

import torch

from benchmark.errors import BenchmarkError, brief
from benchmark.io import atomic_write_bytes
from benchmark.models import Architecture, Discriminator, GANModels, Generator

FORMAT_VERSION = 1


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


def models_from_checkpoint(payload: dict[str, Any], path: str | Path, expected: Architecture, device: torch.device | str) -> GANModels:
    """G and D from a checkpoint (the EMA generator when one was kept), after checking the architecture."""
    if payload.get("status") == "diverged":
        raise BenchmarkError(f"{path} records a run that diverged at step {payload['step']} ({payload['reason']}): it holds no weights.")
    stored = payload["architecture"]
    if stored != expected.to_dict():
        differing = sorted(key for key in set(stored) | set(expected.to_dict()) if stored.get(key) != expected.to_dict().get(key))
        details = ", ".join(f"{key}: checkpoint {stored.get(key)!r} vs config {expected.to_dict().get(key)!r}" for key in differing)
        raise BenchmarkError(f"Checkpoint {path} was trained with a different architecture ({details}). Use a matching config.")
    generator, discriminator = Generator(expected), Discriminator(expected)
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


def save_snapshot(path: str | Path, step: int, arch: Architecture, identity: dict[str, Any], generator: Generator) -> None:
    """The generator that an evaluation step scored, with the identity of its run."""
    payload = {
        "step": step,
        "architecture": arch.to_dict(),
        "identity_json": json.dumps(identity, sort_keys=True),
        "generator": generator.state_dict(),
    }
    save_checkpoint(path, payload)


def generator_from_snapshot(path: str | Path, run_identity_json: str, expected: Architecture, device: torch.device | str) -> Generator:
    """A snapshot's generator, refused when it was written by a run with another identity (stale file)."""
    payload = load_checkpoint(path, device)
    if payload.get("identity_json") != run_identity_json:
        raise BenchmarkError(f"Snapshot {path} belongs to another run of this folder. Delete the run folder and rerun its adaptation.")
    if payload["architecture"] != expected.to_dict():
        raise BenchmarkError(f"Snapshot {path} was trained with a different architecture. Delete the run folder and rerun its adaptation.")
    generator = Generator(expected)
    load_weights(generator, payload, ("generator",), path)
    return generator.to(device)
