"""Stage `adapt`: one method adapted to one task's K shots for one seed; one folder per run.

The method says how G and D start and what differs from plain training (`benchmark.methods`); the shared loop
trains (`benchmark.training`), scoring the generator on the task's validation split at the adaptation-curve
steps (`eval_steps`, from the starting point on), every `eval_every` steps and at the last step, so that
evaluation can report the validation-selected checkpoint and the curve. A run whose loss turns non-finite is
recorded as diverged, not raised: a diverged run is a result. The record's `train_settings` are those the method
trained with (a meta-learner adapts with its inner procedure), not merely those configured.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.checkpoint import save_checkpoint
from benchmark.errors import BenchmarkError
from benchmark.hashing import sha256_file, sha256_json
from benchmark.io import atomic_write_json
from benchmark.layout import StageFolder
from benchmark.methods import AdaptationContext, get_method
from benchmark.metrics import DistanceScorer, FeatureSpace, MetricSettings, check_reference_size, feature_space
from benchmark.models import Generator
from benchmark.provenance import environment
from benchmark.resume import job_folder
from benchmark.settings import AdaptSettings
from benchmark.splits import shots_for
from benchmark.stage_inputs import open_stage_inputs
from benchmark.training import TrainingDiverged, TrainSettings, as_training_tensor, generate, train_gan

log = logging.getLogger(__name__)


def adapt(settings: AdaptSettings, manifest: Path, dataset: Path, encoder: Path, artefacts: dict[str, Path], output_dir: Path) -> None:
    """`manifest`: the task's split manifest; `dataset`: its target dataset; `artefacts`: name -> file of each
    artefact the method requires. Writes checkpoint.pt, train_log.jsonl, snapshots/ and config.json."""
    with job_folder(output_dir):
        run = settings.run
        inputs = open_stage_inputs(manifest, "task", dataset, settings.device, settings.architecture)
        task, target, arch, device = inputs.manifest, inputs.dataset, inputs.arch, inputs.device
        if task["name"] != run.task:
            raise BenchmarkError(
                f"{manifest} is the manifest of task '{task['name']}', but the settings are for task '{run.task}'. Pass the manifest of '{run.task}'."
            )
        shot_indices = shots_for(task, run.shots, run.split_draw)
        reference = task["target"]["reference"]["indices"]
        check_reference_size(len(reference), len(set(target.labels[reference].tolist())), MetricSettings.from_config(settings.evaluation))
        method = get_method(run.method)(**settings.method_hparams)
        train_settings = method.training_settings(TrainSettings.from_config(settings.train))
        evaluation = settings.evaluation
        space = feature_space(encoder, evaluation["inception_weights"])
        identity = {
            "stage": "adapt",
            **asdict(run),
            "task_kind": task["task_kind"],
            "method_paper": method.paper,
            "method_hparams": method.hparams,
            "shot_indices": shot_indices,
            "task_manifest_sha256": sha256_json(task),
            "target_dataset_sha256": target.content_sha256,
            "artefacts_sha256": {name: sha256_file(path) for name, path in sorted(artefacts.items())},
            "architecture": arch.to_dict(),
            "feature_space": space.as_record(),
        }
        models = method.initialise(AdaptationContext(arch=arch, seed=run.seed, device=device, artefacts=artefacts))
        log.info("adapting '%s' to task '%s', K=%d, seed %d (draw %d) on %s", run.method, run.task, run.shots, run.seed, run.split_draw, device)
        validation = target.images[task["target"]["validation"]["indices"]]
        outcome: dict[str, Any] = {"status": "completed"}
        try:
            train_gan(
                models,
                as_training_tensor(target.images[shot_indices], device),
                train_settings,
                run.seed,
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
                StageFolder(output_dir).checkpoint,
                {"status": "diverged", "step": diverged.step, "reason": diverged.reason, "architecture": arch.to_dict()},
            )
        record = {**identity, "train_settings": train_settings.as_record(), "evaluation": evaluation, **outcome, "environment": environment()}
        atomic_write_json(StageFolder(output_dir).config, record)


def validation_evaluator(
    validation_images: np.ndarray, space: FeatureSpace, evaluation: dict[str, Any], device: torch.device
) -> Callable[[Generator, int], dict[str, Any]]:
    """KID and FID of the generator against the task's validation split, for the evaluation schedule, with the
    sample sizes behind them."""
    scorer = DistanceScorer(validation_images, space, evaluation["kid_subset_size"], evaluation["kid_subsets"], evaluation["seed"], device)
    sizes = {"n_real": len(validation_images), "n_fake": evaluation["validation_num_generated"]}

    def evaluate(generator: Generator, step: int) -> dict[str, Any]:
        fake = generate(generator, evaluation["validation_num_generated"], evaluation["seed"], device)
        return {**{f"{metric}_validation": value for metric, value in scorer(fake).items()}, **sizes}

    return evaluate
