"""Stage `panels`: a few generated images of each run beside the run's K shots, with each image's nearest shot
under the memorisation metric's distance (encoder-LPIPS), for the sample grids and nearest-shot figures.

It generates (no training, no scoring): `samples` images per run from the latent codes the evaluation scores
first (the evaluation's noise seed), so every method's images come from the same codes; and every image the
evaluation scored (`scored`, the same codes), of which it keeps the `CLOSEST` nearest to a shot with their
distances: the nearest-shot panels pick the closest of all scored samples over a method's seeds. Written to one
npz, without pickled objects: `index` is a JSON text listing each run with the names of its arrays.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.checkpoint import load_checkpoint, models_from_checkpoint
from benchmark.errors import BenchmarkError
from benchmark.io import atomic_write_bytes
from benchmark.layout import StageFolder
from benchmark.methods import get_method
from benchmark.metrics.diversity import NearestShots
from benchmark.metrics.perceptual import PerceptualEmbedding
from benchmark.models import Architecture, non_finite_tensors
from benchmark.provenance import resolve_device
from benchmark.settings import RUN_FIELDS, PanelSettings
from benchmark.splits import load_split
from benchmark.training import NonFiniteSamples, generate

log = logging.getLogger(__name__)

CLOSEST = 8  # per run, the scored samples nearest to a shot that are kept for the nearest-shot panels


def panels(settings: PanelSettings, run_dirs: list[Path], manifests: dict[str, Path], datasets: dict[str, Path], encoder: Path, output: Path) -> None:
    """`manifests` and `datasets`: per task name, its split manifest and the target dataset it indexes."""
    device = resolve_device(settings.device)
    perceptual = PerceptualEmbedding(str(encoder), device)
    arrays: dict[str, np.ndarray] = {}
    index: list[dict[str, Any]] = []
    opened: dict[str, tuple[dict[str, Any], Any]] = {}
    for number, run_dir in enumerate(run_dirs):
        folder = StageFolder(run_dir)
        try:
            run_config = json.loads(folder.config.read_text())
        except (OSError, ValueError) as error:
            raise BenchmarkError(f"{folder.config} is not readable ({error}). Rerun the adaptation of {run_dir}.") from error
        task = run_config["task"]
        if task not in manifests or task not in datasets:
            raise BenchmarkError(f"{run_dir} is a run of task '{task}', but no --manifest/--dataset was given for it.")
        if task not in opened:
            opened[task] = load_split(manifests[task], "task", datasets[task])
        target = opened[task][1]
        entry = {field: run_config[field] for field in RUN_FIELDS} | {"run_dir": str(run_dir), "status": run_config.get("status", "completed")}
        shots_key = f"shots_{task}_k{run_config['shots']}_d{run_config['split_draw']}"
        if shots_key not in arrays:
            arrays[shots_key] = target.images[run_config["shot_indices"]]
        entry["shots_array"] = shots_key
        generated = None if entry["status"] == "diverged" else _generate(run_config, folder, settings, device)
        if generated is None:
            entry["status"] = "diverged"
        else:
            images, scored = generated
            shot_embeddings = perceptual(arrays[shots_key])
            nearest = NearestShots.of(perceptual.chunks(images), shot_embeddings)
            entry |= {"samples_array": f"samples_{number}", "nearest_array": f"nearest_{number}", "distance_array": f"distance_{number}"}
            arrays[entry["samples_array"]] = images
            arrays[entry["nearest_array"]] = nearest.index.numpy().astype(np.int64)
            arrays[entry["distance_array"]] = nearest.first.numpy()
            all_nearest = NearestShots.of(perceptual.chunks(scored), shot_embeddings)
            closest = np.argsort(all_nearest.first.numpy(), kind="stable")[:CLOSEST]
            entry |= {f"closest_{kind}_array": f"closest_{kind}_{number}" for kind in ("samples", "nearest", "distance")}
            entry["closest_of"] = len(scored)
            arrays[entry["closest_samples_array"]] = scored[closest]
            arrays[entry["closest_nearest_array"]] = all_nearest.index.numpy()[closest].astype(np.int64)
            arrays[entry["closest_distance_array"]] = all_nearest.first.numpy()[closest]
        index.append(entry)
        log.info("panel %d/%d: %s (%s)", number + 1, len(run_dirs), run_dir, entry["status"])
    arrays["index"] = np.array(
        json.dumps({"runs": index, "samples": settings.samples, "noise_seed": settings.noise_seed, "distance": perceptual.name})
    )
    _write_npz(output, arrays)


def _generate(run_config: dict[str, Any], folder: StageFolder, settings: PanelSettings, device) -> tuple[np.ndarray, np.ndarray] | None:
    """The run's first `samples` evaluation images and all `scored` ones from its final checkpoint (the same codes
    as the evaluation's); None when the generator is not finite."""
    state = load_checkpoint(folder.checkpoint, device)
    arch = Architecture.from_dict(run_config["architecture"])
    build = get_method(run_config["method"])(**run_config.get("method_hparams", {})).build_models
    generator = models_from_checkpoint(state, folder.checkpoint, arch, device, build).generator
    if non_finite_tensors(generator):
        return None
    try:
        scored = generate(generator, max(settings.samples, settings.scored), settings.noise_seed, device)
    except NonFiniteSamples:
        return None
    return scored[: settings.samples], scored[: settings.scored]  # the grid's samples are the first scored ones


def _write_npz(output: Path, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(output, buffer.getvalue())
