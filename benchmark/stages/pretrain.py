"""Stage `pretrain`: G and D trained on a source domain, once per source and pretraining seed."""

from __future__ import annotations

import logging
from pathlib import Path

from benchmark.errors import BenchmarkError
from benchmark.hashing import sha256_json
from benchmark.io import atomic_write_json
from benchmark.layout import StageFolder
from benchmark.models import GANModels
from benchmark.provenance import environment
from benchmark.resume import job_folder
from benchmark.settings import PretrainSettings
from benchmark.stage_inputs import open_stage_inputs
from benchmark.training import TrainingDiverged, TrainingHooks, TrainSettings, as_training_tensor, train_gan

log = logging.getLogger(__name__)


def pretrain(settings: PretrainSettings, manifest: Path, dataset: Path, output_dir: Path) -> None:
    """`manifest`: the source's split manifest; writes checkpoint.pt and config.json to `output_dir`."""
    with job_folder(output_dir):
        inputs = open_stage_inputs(manifest, "source", dataset, settings.device, settings.architecture)
        source, data, arch, device = inputs.manifest, inputs.dataset, inputs.arch, inputs.device
        images = data.images[source["train"]["indices"]]
        identity = {
            "stage": "pretrain",
            "source": source["name"],
            "source_manifest_sha256": sha256_json(source),
            "dataset_sha256": data.content_sha256,
            "architecture": arch.to_dict(),
        }
        log.info("pretraining on source '%s': %d images, seed %d, %s", source["name"], len(images), settings.seed, device)
        models = GANModels.fresh(arch, settings.seed, device)
        train = TrainSettings.from_config(settings.train)
        try:
            train_gan(models, as_training_tensor(images, device), train, settings.seed, output_dir, TrainingHooks(), identity)
        except TrainingDiverged as diverged:  # every adaptation would start from it: stop here, with the fix
            raise BenchmarkError(
                f"Pretraining on source '{source['name']}' (seed {settings.seed}) diverged at step {diverged.step} "
                f"({diverged.reason}); no checkpoint was written. Lower pretrain.train.lr_g / lr_d, then run it again."
            ) from diverged
        record = {**identity, "seed": settings.seed, "train_settings": settings.train, "num_images": len(images), "environment": environment()}
        atomic_write_json(StageFolder(output_dir).config, record)
