"""Stage `meta_train`: a meta-learner's initialisation of G and D, learnt on a source's meta-training tasks.

Runs once per (source, meta-learner, pretraining seed) for every method that subclasses `MetaMethod`, from a
random initialisation seeded by the pretraining seed or, with `init: source`, from that seed's source
pretraining; the method's adaptation runs then start from its checkpoint. The loop itself:
`benchmark.meta_learning`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from benchmark.errors import BenchmarkError
from benchmark.hashing import sha256_file, sha256_json
from benchmark.io import atomic_write_json
from benchmark.layout import StageFolder
from benchmark.meta_learning import MetaMethod, meta_train_gan
from benchmark.methods import AdaptationContext, get_method
from benchmark.provenance import environment
from benchmark.resume import job_folder
from benchmark.settings import MetaTrainSettings
from benchmark.stage_inputs import open_stage_inputs
from benchmark.training import TrainingDiverged, as_training_tensor

log = logging.getLogger(__name__)


def meta_train(settings: MetaTrainSettings, manifest: Path, dataset: Path, output_dir: Path, artefacts: dict[str, Path] | None = None) -> None:
    """`manifest`: the source's meta-task manifest; `artefacts`: name -> file of each artefact the method's
    meta-training reads (`MetaMethod.meta_requires`). Writes checkpoint.pt, meta_log.jsonl and config.json."""
    artefacts = artefacts or {}
    with job_folder(output_dir):
        inputs = open_stage_inputs(manifest, "meta", dataset, settings.device, settings.architecture)
        meta_manifest, data, arch, device = inputs.manifest, inputs.dataset, inputs.arch, inputs.device
        method_class = get_method(settings.method)
        if not issubclass(method_class, MetaMethod):
            raise BenchmarkError(
                f"Method '{settings.method}' is not a meta-learner (it does not subclass MetaMethod): it has no meta-training stage."
            )
        method = method_class(**settings.method_hparams)
        missing = sorted(set(method.meta_requires) - set(artefacts))
        if missing:
            raise BenchmarkError(
                f"Meta-training of '{settings.method}' with init '{method.hparams['init']}' needs the {', '.join(missing)}: pass "
                + " ".join(f"--artefact {name}=PATH" for name in missing)
                + "."
            )
        models = method.meta_initialise(AdaptationContext(arch=arch, seed=settings.seed, device=device, artefacts=artefacts))
        # Only the images some task uses go to the device; tasks index them by row.
        used = sorted({index for task in meta_manifest["tasks"] for index in task["support"] + task["query"]})
        row = {index: position for position, index in enumerate(used)}
        tasks = [([row[i] for i in task["support"]], [row[i] for i in task["query"]]) for task in meta_manifest["tasks"]]
        identity = {
            "stage": "meta_train",
            "method": settings.method,
            "method_hparams": method.hparams,
            "meta_manifest_sha256": sha256_json(meta_manifest),
            "dataset_sha256": data.content_sha256,
            "architecture": arch.to_dict(),
            "seed": settings.seed,
            "artefacts_sha256": {name: sha256_file(artefacts[name]) for name in method.meta_requires},
        }
        started = time.perf_counter()
        try:
            meta_train_gan(models, method, as_training_tensor(data.images[used], device), tasks, settings.seed, output_dir, identity)
        except TrainingDiverged as diverged:  # every adaptation of this method would start from it
            raise BenchmarkError(
                f"Meta-training of '{settings.method}' (seed {settings.seed}) diverged at iteration {diverged.step} "
                f"({diverged.reason}); no checkpoint was written. Lower its learning rates (adapt.method_hparams."
                f"{settings.method}), then run it again."
            ) from diverged
        atomic_write_json(StageFolder(output_dir).config, {**identity, "environment": environment(), "seconds": time.perf_counter() - started})
