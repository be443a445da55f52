"""Stage `evaluate`: the full metric suite for a run's final checkpoint and its validation-selected one (and the
oracle's, when asked for, chosen on one half of the reference set and scored on the other), against the task's
reference set. Which checkpoints: `benchmark.selection`. When an oracle asks for it, every reported checkpoint's
KID and FID against each half of the reference set too (metrics `kid_choosing_half`, ...). The
run's adaptation curve (KID and FID on the validation split at each evaluation step, scored during training)
is passed on as records of the checkpoint label `benchmark.selection.CURVE`.

The generators are rebuilt through the run's method (`Method.build_models`), so a method that adds networks or
parameters is scored as it trained. Every record carries the run's fields (`benchmark.settings.RUN_FIELDS`), its status, the sample sizes and
feature space of its value, the evaluation settings, the environment and the run's whole config.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmark.checkpoint import generator_from_snapshot, load_checkpoint, models_from_checkpoint
from benchmark.errors import BenchmarkError
from benchmark.io import atomic_write_json
from benchmark.layout import StageFolder
from benchmark.methods import get_method
from benchmark.metrics import SUITE_METRICS, DistanceScorer, EvaluationSets, FeatureSpace, MetricSettings, MetricSuite, feature_space
from benchmark.models import Architecture, non_finite_tensors
from benchmark.provenance import environment
from benchmark.selection import (
    CHOOSING_HALF,
    CURVE,
    FINAL,
    ORACLE,
    REPORTING_HALF,
    SELECTED,
    best_step,
    half_metric,
    half_name,
    reference_halves,
    validation_scores,
)
from benchmark.settings import RUN_FIELDS, EvaluateSettings
from benchmark.stage_inputs import open_stage_inputs
from benchmark.training import NonFiniteSamples, generate

log = logging.getLogger(__name__)


def evaluate(settings: EvaluateSettings, run_dir: Path, manifest: Path, dataset: Path, encoder: Path, output: Path) -> list[dict[str, Any]]:
    """Score the run in `run_dir` (its task's `manifest` and target `dataset`); writes the records to `output`."""
    folder = StageFolder(run_dir)
    if not folder.config.is_file():
        raise BenchmarkError(f"{folder.config} is missing: the adaptation of {run_dir} did not finish. Rerun it.")
    try:
        run_config = json.loads(folder.config.read_text())
        missing = (
            [key for key in ("architecture", "shot_indices", *RUN_FIELDS) if key not in run_config] if isinstance(run_config, dict) else ["every key"]
        )
        damage = f"it lacks {', '.join(missing)}" if missing else None
    except ValueError as error:
        damage = f"{type(error).__name__}: {error}"
    if damage:
        raise BenchmarkError(f"{folder.config} is damaged ({damage}). Delete the run folder {run_dir} and rerun its adaptation.")
    evaluation = settings.evaluation
    inputs = open_stage_inputs(manifest, "task", dataset, settings.device)
    task, target, device = inputs.manifest, inputs.dataset, inputs.device
    if run_config.get("status") == "diverged":
        return _record_divergence(run_config, task, evaluation, output, device)
    state = load_checkpoint(folder.checkpoint, device)
    arch = Architecture.from_dict(run_config["architecture"])
    build = get_method(run_config["method"])(**run_config.get("method_hparams", {})).build_models
    final_generator = models_from_checkpoint(state, folder.checkpoint, arch, device, build).generator
    final_step = int(state["step"])
    non_finite = non_finite_tensors(final_generator)
    if non_finite:  # its images would be NaN, cast to black: record the run as diverged instead of scoring them
        reason = f"non-finite tensors in the final checkpoint ({', '.join(non_finite)})"
        diverged = {**run_config, "status": "diverged", "diverged_at_step": final_step, "divergence_reason": reason}
        return _record_divergence(diverged, task, evaluation, output, device)

    reference_indices = task["target"]["reference"]["indices"]
    validation_indices = task["target"]["validation"]["indices"]
    sets = EvaluationSets(
        reference=target.images[reference_indices],
        reference_labels=target.labels[reference_indices],
        heldout=target.images[validation_indices],
        heldout_labels=target.labels[validation_indices],
        shots=target.images[run_config["shot_indices"]],
    )
    space = feature_space(encoder, evaluation["inception_weights"])
    log.info("evaluating %s: %d generated vs %d reference images (%s)", run_dir, evaluation["num_generated"], len(sets.reference), space.name)
    metric_settings = MetricSettings.from_config(evaluation)
    suite = MetricSuite(sets, space, str(encoder), metric_settings, device)
    oracle_checkpoint = evaluation["oracle_selection"]
    halves = _HalfScorers(sets, space, str(encoder), metric_settings, device) if oracle_checkpoint or settings.oracle_draws else None

    def generated(step: int) -> np.ndarray:
        generator: nn.Module = final_generator
        if step != final_step:
            generator = generator_from_snapshot(folder.snapshot(step), state["identity_json"], arch, device, build)
        return generate(generator, evaluation["num_generated"], evaluation["seed"], device)

    select_on = evaluation["select_on"]
    logged = validation_scores(run_dir)
    validation = {step: values[f"{select_on}_validation"] for step, values in logged.items()}
    selections: list[tuple[str, int, dict[str, Any]]] = [(FINAL, final_step, {})]
    if validation:
        step = best_step(validation)
        selections.append((SELECTED, step, {"selected_on": f"{select_on} on the validation split", "selection_score": validation[step]}))
    else:
        log.warning("%s has no validation scores in its training log: only the final checkpoint is evaluated", run_dir)
    try:
        images = {step: generated(step) for step in sorted({step for _, step, _ in selections})}
        at_step = {step: suite.score(step_images) + (halves.records(step_images) if halves else []) for step, step_images in images.items()}
        records_of = {label: at_step[step] for label, step, _ in selections}
        if oracle_checkpoint and halves:
            # Chosen on the choosing half, every metric reported on the other: the reported KID is not the minimum
            # it was chosen as. Only the chosen step is scored in full.
            steps = sorted(set(validation) | {final_step})

            def images_at(step: int) -> np.ndarray:  # the reported checkpoints' images are generated once
                return images[step] if step in images else generated(step)

            on_choosing = {step: halves.choosing(images_at(step))[select_on] for step in steps}
            step = best_step(on_choosing)
            chosen_images = images_at(step)
            reported = [{**record, "reference_set": halves.reporting_label} for record in halves.reporting_suite.score(chosen_images)]
            records_of[ORACLE] = reported + halves.records(chosen_images)
            selection = {"selected_on": f"{select_on} on the reference set's {half_name(CHOOSING_HALF)}", "selection_score": on_choosing[step]}
            selections.append((ORACLE, step, selection))
    except NonFiniteSamples:  # finite weights can still overflow to infinite pixels: a divergence, not black images
        reason = "non-finite generated images at evaluation"
        return _record_divergence(
            {**run_config, "status": "diverged", "diverged_at_step": final_step, "divergence_reason": reason}, task, evaluation, output, device
        )
    shared = _shared_fields(run_config, task, evaluation, device)
    records = [
        {**shared, "checkpoint": label, "checkpoint_step": step, **selection, **record}
        for label, step, selection in selections
        for record in records_of[label]
    ]
    records += [{**shared, **record} for record in curve_records(logged, run_config.get("feature_space", {}))]
    atomic_write_json(output, {"records": records})
    return records


class _HalfScorers:
    """KID and FID against each half of the reference set (`benchmark.selection.reference_halves`), for the oracles:
    the checkpoint oracle chooses on the choosing half and reports the full suite on the reporting half; the
    draw oracle of a sweep reads the records named `half_metric(metric, half)`."""

    reporting_label = f"reference: {half_name(REPORTING_HALF)}"

    def __init__(self, sets: EvaluationSets, space: FeatureSpace, encoder: str, settings: MetricSettings, device: torch.device) -> None:
        choosing, reporting = reference_halves(len(sets.reference))
        labels = sets.reference_labels
        self.reporting_sets = replace(sets, reference=sets.reference[reporting], reference_labels=None if labels is None else labels[reporting])
        n_classes = 0 if labels is None else len(np.unique(labels[reporting]))
        if len(reporting) <= settings.nearest_k or (n_classes >= 2 and len(reporting) < settings.class_neighbours):
            raise BenchmarkError(
                f"The oracle reports on half of the reference set ({len(reporting)} of {len(sets.reference)} images), fewer than "
                f"the k-NN metrics need (more than evaluation.nearest_k = {settings.nearest_k}, at least evaluation.class_neighbours "
                f"= {settings.class_neighbours}). Use a reference set twice that size (the task's reference_size), smaller k, "
                "or switch the oracle off (evaluation.oracle_selection, sweep.oracle)."
            )
        self.space, self.encoder, self.settings, self.device = space, encoder, settings, device
        scorer = partial(
            DistanceScorer, space=space, kid_subset_size=settings.kid_subset_size, kid_subsets=settings.kid_subsets, seed=settings.seed, device=device
        )
        self.choosing, self.reporting = scorer(sets.reference[choosing]), scorer(sets.reference[reporting])
        self.sizes = {CHOOSING_HALF: len(choosing), REPORTING_HALF: len(reporting)}

    def records(self, images: np.ndarray) -> list[dict[str, Any]]:
        """KID and FID of `images` against each half, one record each, named by `half_metric`."""
        records = []
        for half, scorer in ((CHOOSING_HALF, self.choosing), (REPORTING_HALF, self.reporting)):
            values = scorer(images)
            sizes = {"n_fake": len(images), "n_real": self.sizes[half], **self.space.as_record()}
            reference_set = f"reference: {half_name(half)}"
            records += [
                {"metric": half_metric(metric, half), "value": values[metric], "reference_set": reference_set, **sizes} for metric in ("kid", "fid")
            ]
        return records

    @cached_property
    def reporting_suite(self) -> MetricSuite:
        """The full metric suite against the reporting half: built only for the checkpoint oracle."""
        return MetricSuite(self.reporting_sets, self.space, self.encoder, self.settings, self.device)


def curve_records(logged: dict[int, dict[str, Any]], feature_space: dict[str, Any]) -> list[dict[str, Any]]:
    """The adaptation curve: one record per evaluation step and validation metric, against the validation split."""
    return [
        {
            "checkpoint": CURVE,
            "checkpoint_step": step,
            "metric": metric,
            "value": values[f"{metric}_validation"],
            "reference_set": "validation",
            "n_real": values.get("n_real"),
            "n_fake": values.get("n_fake"),
            **feature_space,
        }
        for step, values in sorted(logged.items())
        for metric in ("kid", "fid")
        if f"{metric}_validation" in values
    ]


def _shared_fields(run_config: dict[str, Any], task: dict[str, Any], evaluation: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        **{field: run_config[field] for field in RUN_FIELDS},
        "status": run_config.get("status", "completed"),
        "reference_set": "reference",
        "reference_sha256": task["target"]["reference"]["sha256"],
        "evaluation": evaluation,
        "environment": environment(device),
        "run_config": run_config,
    }


def _record_divergence(
    run_config: dict[str, Any], task: dict[str, Any], evaluation: dict[str, Any], output: Path, device: torch.device
) -> list[dict[str, Any]]:
    """A diverged run has no generator to score: one record per metric and checkpoint says so, with no value."""
    log.warning("run diverged at step %d (%s): recorded without scores", run_config["diverged_at_step"], run_config["divergence_reason"])
    labels = [FINAL, SELECTED] + ([ORACLE] if evaluation["oracle_selection"] else [])
    metrics = [name for name in SUITE_METRICS if name != "fid_inf" or evaluation["fid_infinity"]]
    divergence = {"diverged_at_step": run_config["diverged_at_step"], "divergence_reason": run_config["divergence_reason"]}
    shared = _shared_fields(run_config, task, evaluation, device)
    records = [
        {**shared, "checkpoint": label, "checkpoint_step": None, "metric": metric, "value": None, **divergence}
        for label in labels
        for metric in metrics
    ]
    atomic_write_json(output, {"records": records})
    return records
