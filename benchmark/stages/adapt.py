"""Stage `adapt`: one method adapted to one task's K shots for one seed; one folder per run.

The method says how G and D start and what differs from plain training (`benchmark.methods`); the shared loop
trains (`benchmark.training`), scoring the generator on the task's validation split at the adaptation-curve
steps (`eval_steps`, from the starting point on), every `eval_every` steps and at the last step, so that
evaluation can report the validation-selected checkpoint and the curve. A run whose loss turns non-finite is
recorded as diverged, not raised: a diverged run is a result. The record's `train_settings` are those the method
trained with (a meta-learner adapts with its inner procedure), not merely those configured.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.batched import BatchMember, NotBatchable, batching_problem, train_gan_batched
from benchmark.checkpoint import save_checkpoint
from benchmark.config import SEED_BATCHING
from benchmark.errors import BenchmarkError
from benchmark.hashing import sha256_file, sha256_json
from benchmark.io import atomic_write_json
from benchmark.layout import StageFolder
from benchmark.methods import AdaptationContext, Method, get_method
from benchmark.metrics import DistanceScorer, FeatureSpace, MetricSettings, check_reference_size, feature_space
from benchmark.models import GANModels, Generator
from benchmark.provenance import environment
from benchmark.resume import job_folder
from benchmark.settings import AdaptSettings
from benchmark.splits import shots_for
from benchmark.stage_inputs import open_stage_inputs
from benchmark.training import TrainingDiverged, TrainSettings, as_training_tensor, generate, train_gan

log = logging.getLogger(__name__)


@dataclass
class PreparedRun:
    """One adaptation run ready to train: its method (hooks), starting models, shots, identity and evaluator."""

    settings: AdaptSettings
    output_dir: Path
    method: Method
    train_settings: TrainSettings
    models: GANModels
    shots: torch.Tensor
    identity: dict[str, Any]
    evaluate: Callable[[Generator, int], dict[str, Any]]


def prepare_run(settings: AdaptSettings, manifest: Path, dataset: Path, encoder: Path, artefacts: dict[str, Path], output_dir: Path) -> PreparedRun:
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
    validation = target.images[task["target"]["validation"]["indices"]]
    return PreparedRun(
        settings, output_dir, method, train_settings, models, as_training_tensor(target.images[shot_indices], device), identity,
        validation_evaluator(validation, space, evaluation, device),
    )  # fmt: skip


def record_run(prepared: PreparedRun, outcome: GANModels | TrainingDiverged, batch: int = 1) -> None:
    """config.json of a finished run; a diverged run is a result, not a crash: it is recorded, and the rest of the
    benchmark goes on. `batch`: how many runs trained together with it as one vectorised model (1: alone)."""
    arch = prepared.models.arch
    status: dict[str, Any] = {"status": "completed"}
    if isinstance(outcome, TrainingDiverged):
        log.error("run %s diverged at step %d (%s): recorded as diverged", prepared.output_dir, outcome.step, outcome.reason)
        status = {"status": "diverged", "diverged_at_step": outcome.step, "divergence_reason": outcome.reason}
        save_checkpoint(
            StageFolder(prepared.output_dir).checkpoint,
            {"status": "diverged", "step": outcome.step, "reason": outcome.reason, "architecture": arch.to_dict()},
        )
    record = {
        **prepared.identity,
        "train_settings": prepared.train_settings.as_record(),
        "evaluation": prepared.settings.evaluation,
        **status,
        "environment": environment(prepared.shots.device),
    }
    if batch > 1:
        record["trained_in_batch_of"] = batch
    atomic_write_json(StageFolder(prepared.output_dir).config, record)


def _train_alone(prepared: PreparedRun) -> GANModels | TrainingDiverged:
    run = prepared.settings.run
    log.info("adapting '%s' to task '%s', K=%d, seed %d (draw %d)", run.method, run.task, run.shots, run.seed, run.split_draw)
    try:
        return train_gan(
            prepared.models, prepared.shots, prepared.train_settings, run.seed, prepared.output_dir, prepared.method, prepared.identity,
            evaluate=prepared.evaluate,
        )  # fmt: skip
    except TrainingDiverged as diverged:
        return diverged


def adapt(settings: AdaptSettings, manifest: Path, dataset: Path, encoder: Path, artefacts: dict[str, Path], output_dir: Path) -> None:
    """`manifest`: the task's split manifest; `dataset`: its target dataset; `artefacts`: name -> file of each
    artefact the method requires. Writes checkpoint.pt, train_log.jsonl, snapshots/ and config.json."""
    with job_folder(output_dir):
        prepared = prepare_run(settings, manifest, dataset, encoder, artefacts, output_dir)
        record_run(prepared, _train_alone(prepared))


def adapt_seeds(runs: list[tuple[AdaptSettings, dict[str, Path], Path]], manifest: Path, dataset: Path, encoder: Path, batching: str) -> None:
    """Several runs of one method on one task (its seeds), in one job: `runs` holds each run's settings, artefacts
    and output folder. `batching` "sequential" trains them one after another (each exactly as `adapt` would);
    "vectorised" trains them as one batched model (`benchmark.batched`), equal to separate runs up to rounding,
    unless the method cannot be batched: then they train one after another, and the log says why."""
    if batching not in SEED_BATCHING[1:]:
        raise BenchmarkError(f"Seed batching '{batching}' is not one of {', '.join(SEED_BATCHING[1:])} (a job of several runs).")
    with contextlib.ExitStack() as folders:
        for _, _, output_dir in runs:
            folders.enter_context(job_folder(output_dir))
        prepared = [prepare_run(settings, manifest, dataset, encoder, artefacts, output_dir) for settings, artefacts, output_dir in runs]
        problem = batching_problem(type(prepared[0].method)) if batching == "vectorised" else None
        if batching == "vectorised" and problem is None and len(prepared) > 1:
            run = prepared[0].settings.run
            log.info(
                "adapting '%s' to task '%s', K=%d: seeds %s as one batch", run.method, run.task, run.shots, [p.settings.run.seed for p in prepared]
            )
            try:
                outcomes = train_gan_batched(
                    [BatchMember(p.models, p.shots, p.settings.run.seed, p.output_dir, p.method, p.identity, p.evaluate) for p in prepared],
                    TrainSettings.from_config(prepared[0].settings.train),
                )
            except NotBatchable as error:  # raised while stacking, before any step
                problem = str(error)
            else:
                for item, outcome in zip(prepared, outcomes):
                    record_run(item, outcome, batch=len(prepared))
                return
        if problem:
            log.warning("'%s' cannot train its seeds as one batch (%s): training them one after another", prepared[0].settings.run.method, problem)
        for item in prepared:
            record_run(item, _train_alone(item))


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
