"""Stage `build_artefact`: a plugin artefact (`benchmark.methods.Artefact`), built once per source and pretraining
seed from the built-in artefacts it names, and stored as safetensors with its provenance: the artefact, the
method that provides it, the SHA-256 of every input file, the seed and the environment.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from benchmark.checkpoint import save_tensors
from benchmark.errors import BenchmarkError
from benchmark.hashing import sha256_file
from benchmark.methods import AdaptationContext, get_artefact
from benchmark.models import Architecture
from benchmark.provenance import environment, resolve_device
from benchmark.settings import BuildArtefactSettings

log = logging.getLogger(__name__)


def build_artefact(settings: BuildArtefactSettings, artefacts: dict[str, Path], output: Path) -> dict[str, torch.Tensor]:
    """`artefacts`: name -> file of each built-in artefact the plugin artefact is built from. Writes `output`."""
    spec = get_artefact(settings.artefact)
    missing = sorted(set(spec.requires) - set(artefacts))
    if missing:
        raise BenchmarkError(f"Artefact '{spec.name}' is built from {', '.join(missing)}, which was not given: pass --artefact NAME=PATH.")
    arch = Architecture.from_config(settings.architecture, settings.image_size, settings.channels)
    started = time.perf_counter()
    tensors = spec.build(AdaptationContext(arch=arch, seed=settings.seed, device=resolve_device(settings.device), artefacts=artefacts))
    if not isinstance(tensors, dict) or not tensors or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()):
        raise BenchmarkError(
            f"Artefact '{spec.name}': its build function must return a non-empty dict of named tensors, not {type(tensors).__name__}."
        )
    bad = [name for name, tensor in tensors.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        raise BenchmarkError(
            f"Artefact '{spec.name}' holds non-finite values in {', '.join(bad)}: check its inputs ({', '.join(sorted(artefacts))})."
        )
    provenance = {
        "artefact": spec.name,
        "seed": settings.seed,
        "architecture": arch.to_dict(),
        "inputs_sha256": {name: sha256_file(path) for name, path in sorted(artefacts.items())},
        "environment": environment(),
    }
    save_tensors(output, tensors, provenance)
    log.info("built artefact '%s' (%d tensors) in %.1f s: %s", spec.name, len(tensors), time.perf_counter() - started, output)
    return tensors
