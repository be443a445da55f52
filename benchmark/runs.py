"""Training stages: source pretraining (once per source and pretraining seed) and adaptation to a target task."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from benchmark.checkpoint import save_checkpoint
from benchmark.data import PreparedDataset
from benchmark.hashing import sha256_file, sha256_json
from benchmark.io import atomic_write_json
from benchmark.methods import AdaptationContext, get_method
from benchmark.metrics import DistanceScorer, FeatureSpace, feature_space
from benchmark.models import Architecture, GANModels, Generator
from benchmark.provenance import environment
from benchmark.splits import check_dataset_matches, read_manifest, shots_for
from benchmark.training import TrainingDiverged, TrainingHooks, TrainSettings, as_training_tensor, generate, train_gan

log = logging.getLogger(__name__)


def architecture_for(dataset: PreparedDataset, settings: dict[str, Any]) -> Architecture:
    return Architecture(image_size=dataset.metadata["image_size"], channels=dataset.metadata["channels"], **settings)


def pretrain_source(
    source_manifest_path: Path,
    dataset_path: Path,
    architecture: dict[str, Any],
    train: dict[str, Any],
    seed: int,
    device: torch.device,
    output_dir: Path,
) -> None:
    manifest = read_manifest(source_manifest_path, "source")
    dataset = PreparedDataset.load(dataset_path)
    check_dataset_matches(manifest["dataset"], dataset, source_manifest_path)
    images = dataset.images[manifest["train"]["indices"]]
    arch = architecture_for(dataset, architecture)
    identity = {
        "stage": "pretrain",
        "source": manifest["name"],
        "source_manifest_sha256": sha256_json(manifest),
        "dataset_sha256": dataset.content_sha256,
        "architecture": arch.to_dict(),
    }
    log.info("pretraining on source '%s': %d images, seed %d, %s", manifest["name"], len(images), seed, device)
    models = GANModels.fresh(arch, seed, device)
    train_gan(models, as_training_tensor(images, device), TrainSettings(**train), seed, output_dir, TrainingHooks(), identity)
    atomic_write_json(output_dir / "config.json", {**identity, "seed": seed, "train_settings": train, "num_images": len(images), "environment": environment()})


def validation_evaluator(
    validation_images: np.ndarray, space: FeatureSpace, evaluation: dict[str, Any], device: torch.device
) -> Callable[[Generator, int], dict[str, Any]]:
    """KID and FID of the generator against the task's validation split, for the evaluation schedule."""
    scorer = DistanceScorer(validation_images, space, evaluation["kid_subset_size"], evaluation["kid_subsets"], evaluation["seed"], device)

    def evaluate(generator: Generator, step: int) -> dict[str, Any]:
        fake = generate(generator, evaluation["validation_num_generated"], evaluation["seed"], device)
        return {f"{metric}_validation": value for metric, value in scorer(fake).items()}

    return evaluate


def adapt_to_task(
    task_manifest_path: Path,
    target_dataset_path: Path,
    encoder_path: Path,
    method_name: str,
    method_hparams: dict[str, Any],
    shots: int,
    seed: int,
    split_draw: int,
    pretrain_seed: int,
    artefacts: dict[str, Path],
    architecture: dict[str, Any],
    train: dict[str, Any],
    evaluation: dict[str, Any],
    device: torch.device,
    output_dir: Path,
) -> None:
    manifest = read_manifest(task_manifest_path, "task")
    target = PreparedDataset.load(target_dataset_path)
    check_dataset_matches(manifest["target"]["dataset"], target, task_manifest_path)
    shot_indices = shots_for(manifest, shots, split_draw)
    method = get_method(method_name)(**method_hparams)
    arch = architecture_for(target, architecture)
    space = feature_space(encoder_path, evaluation["inception_weights"])
    validation = target.images[manifest["target"]["validation"]["indices"]]
    identity = {
        "stage": "adapt",
        "task": manifest["name"],
        "task_kind": manifest["task_kind"],
        "method": method_name,
        "method_paper": method.paper,
        "method_hparams": method.hparams,
        "shots": shots,
        "split_draw": split_draw,
        "pretrain_seed": pretrain_seed,
        "shot_indices": shot_indices,
        "task_manifest_sha256": sha256_json(manifest),
        "target_dataset_sha256": target.content_sha256,
        "artefacts_sha256": {name: sha256_file(path) for name, path in sorted(artefacts.items())},
        "architecture": arch.to_dict(),
        "feature_space": space.as_record(),
    }
    context = AdaptationContext(arch=arch, seed=seed, device=device, artefacts=artefacts)
    models = method.initialise(context)
    log.info("adapting '%s' to task '%s', K=%d, seed %d (draw %d) on %s", method_name, manifest["name"], shots, seed, split_draw, device)
    outcome: dict[str, Any] = {"status": "completed"}
    try:
        train_gan(
            models,
            as_training_tensor(target.images[shot_indices], device),
            TrainSettings(**train),
            seed,
            output_dir,
            method,
            identity,
            evaluate=validation_evaluator(validation, space, evaluation, device),
        )
    except TrainingDiverged as diverged:
        # A diverged run is a result, not a crash: it is recorded, and the rest of the benchmark goes on.
        log.error("run %s diverged at step %d (%s): recorded as diverged", output_dir, diverged.step, diverged.reason)
        outcome = {"status": "diverged", "diverged_at_step": diverged.step, "divergence_reason": diverged.reason}
        save_checkpoint(
            output_dir / "checkpoint.pt",
            {"status": "diverged", "step": diverged.step, "reason": diverged.reason, "architecture": arch.to_dict()},
        )
    atomic_write_json(
        output_dir / "config.json",
        {**identity, "seed": seed, "train_settings": train, "evaluation": evaluation, **outcome, "environment": environment()},
    )
