"""Stage `evaluate`: the full metric suite for a run's final checkpoint and its validation-selected one (and the
oracle's, when asked for), against the task's reference set. Which checkpoints: `benchmark.selection`. The
run's adaptation curve (KID and FID on the validation split at each evaluation step, scored during training)
is passed on as records of the checkpoint label `benchmark.selection.CURVE`.

The generators are rebuilt through the run's method (`Method.build_models`), so a method that adds networks or
parameters is scored as it trained. Every record carries the run's fields (`benchmark.settings.RUN_FIELDS`), its status, the sample sizes and
feature space of its value, the evaluation settings, the environment and the run's whole config.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from torch import nn

from benchmark.checkpoint import generator_from_snapshot, load_checkpoint, models_from_checkpoint
from benchmark.errors import BenchmarkError
from benchmark.io import atomic_write_json
from benchmark.layout import StageFolder
from benchmark.methods import get_method
from benchmark.metrics import SUITE_METRICS, EvaluationSets, MetricSettings, MetricSuite, feature_space
from benchmark.models import Architecture, non_finite_tensors
from benchmark.provenance import environment
from benchmark.selection import CURVE, FINAL, ORACLE, SELECTED, best_step, validation_scores
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
        return _record_divergence(run_config, task, evaluation, output)
    state = load_checkpoint(folder.checkpoint, device)
    arch = Architecture.from_dict(run_config["architecture"])
    build = get_method(run_config["method"])(**run_config.get("method_hparams", {})).build_models
    final_generator = models_from_checkpoint(state, folder.checkpoint, arch, device, build).generator
    final_step = int(state["step"])
    non_finite = non_finite_tensors(final_generator)
    if non_finite:  # its images would be NaN, cast to black: record the run as diverged instead of scoring them
        reason = f"non-finite tensors in the final checkpoint ({', '.join(non_finite)})"
        diverged = {**run_config, "status": "diverged", "diverged_at_step": final_step, "divergence_reason": reason}
        return _record_divergence(diverged, task, evaluation, output)

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
    suite = MetricSuite(sets, space, str(encoder), MetricSettings.from_config(evaluation), device)

    scored: dict[int, list[dict[str, Any]]] = {}

    def score(step: int) -> list[dict[str, Any]]:
        if step not in scored:
            generator: nn.Module = final_generator
            if step != final_step:
                generator = generator_from_snapshot(folder.snapshot(step), state["identity_json"], arch, device, build)
            scored[step] = suite.score(generate(generator, evaluation["num_generated"], evaluation["seed"], device))
        return scored[step]

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
        if evaluation["oracle_selection"]:
            steps = sorted(set(validation) | {final_step})
            on_reference = {step: next(r["value"] for r in score(step) if r["metric"] == select_on) for step in steps}
            step = best_step(on_reference)
            selection = {"selected_on": f"{select_on} on the reference (test) set", "selection_score": on_reference[step]}
            selections.append((ORACLE, step, selection))
        scores = {step: score(step) for _, step, _ in selections}
    except NonFiniteSamples:  # finite weights can still overflow to infinite pixels: a divergence, not black images
        reason = "non-finite generated images at evaluation"
        return _record_divergence(
            {**run_config, "status": "diverged", "diverged_at_step": final_step, "divergence_reason": reason}, task, evaluation, output
        )
    shared = _shared_fields(run_config, task, evaluation)
    records = [
        {**shared, "checkpoint": label, "checkpoint_step": step, **selection, **record}
        for label, step, selection in selections
        for record in scores[step]
    ]
    records += [{**shared, **record} for record in curve_records(logged, run_config.get("feature_space", {}))]
    atomic_write_json(output, {"records": records})
    return records


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


def _shared_fields(run_config: dict[str, Any], task: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
    return {
        **{field: run_config[field] for field in RUN_FIELDS},
        "status": run_config.get("status", "completed"),
        "reference_set": "reference",
        "reference_sha256": task["target"]["reference"]["sha256"],
        "evaluation": evaluation,
        "environment": environment(),
        "run_config": run_config,
    }


def _record_divergence(run_config: dict[str, Any], task: dict[str, Any], evaluation: dict[str, Any], output: Path) -> list[dict[str, Any]]:
    """A diverged run has no generator to score: one record per metric and checkpoint says so, with no value."""
    log.warning("run diverged at step %d (%s): recorded without scores", run_config["diverged_at_step"], run_config["divergence_reason"])
    labels = [FINAL, SELECTED] + ([ORACLE] if evaluation["oracle_selection"] else [])
    metrics = [name for name in SUITE_METRICS if name != "fid_inf" or evaluation["fid_infinity"]]
    divergence = {"diverged_at_step": run_config["diverged_at_step"], "divergence_reason": run_config["divergence_reason"]}
    shared = _shared_fields(run_config, task, evaluation)
    records = [
        {**shared, "checkpoint": label, "checkpoint_step": None, "metric": metric, "value": None, **divergence}
        for label in labels
        for metric in metrics
    ]
    atomic_write_json(output, {"records": records})
    return records
