"""Evaluation stage: the full metric suite for a run's final checkpoint and its validation-selected checkpoint.

Checkpoint selection follows the protocol the benchmark reports:
- "final": the generator at the end of the step budget;
- "validation-selected": the evaluation step with the lowest validation KID (or FID, `evaluation.select_on`),
  scored during training on the task's validation split, which is disjoint from the reference set;
- "oracle (reference-selected)": only when `evaluation.oracle_selection` is true: the evaluation step that
  scores best on the reference set itself. It is optimistic (the test set chooses), so tables label it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from benchmark.checkpoint import generator_from_snapshot, load_checkpoint, models_from_checkpoint, snapshot_path
from benchmark.data import PreparedDataset
from benchmark.errors import BenchmarkError
from benchmark.io import atomic_write_json
from benchmark.metrics import SUITE_METRICS, EvaluationSets, MetricSettings, MetricSuite, feature_space
from benchmark.models import Architecture, Generator
from benchmark.provenance import environment
from benchmark.splits import check_dataset_matches, read_manifest
from benchmark.training import generate

log = logging.getLogger(__name__)

RUN_FIELDS = ("task", "task_kind", "method", "shots", "seed", "split_draw", "pretrain_seed")
FINAL, SELECTED, ORACLE = "final", "validation-selected", "oracle (reference-selected)"


def validation_scores(run_dir: Path) -> dict[int, dict[str, float]]:
    """{step: {"kid_validation": ..., "fid_validation": ...}} from the run's training log."""
    log_path = run_dir / "train_log.jsonl"
    if not log_path.is_file():
        return {}
    entries = (json.loads(line) for line in log_path.read_text().splitlines() if line.strip())
    return {int(entry["step"]): entry["eval"] for entry in entries if "eval" in entry}


def best_step(scores: dict[int, float]) -> int:
    """The step with the lowest score; ties go to the earliest step."""
    return min(sorted(scores), key=lambda step: scores[step])


def evaluate_run(
    run_dir: Path,
    task_manifest_path: Path,
    target_dataset_path: Path,
    encoder_path: Path,
    evaluation: dict[str, Any],
    device: torch.device,
    output: Path,
) -> list[dict[str, Any]]:
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise BenchmarkError(f"{config_path} is missing: the adaptation of {run_dir} did not finish. Rerun it.")
    run_config = json.loads(config_path.read_text())
    manifest = read_manifest(task_manifest_path, "task")
    if run_config.get("status") == "diverged":
        return _record_divergence(run_config, manifest, evaluation, output)
    target = PreparedDataset.load(target_dataset_path)
    check_dataset_matches(manifest["target"]["dataset"], target, task_manifest_path)
    checkpoint_path = run_dir / "checkpoint.pt"
    state = load_checkpoint(checkpoint_path, device)
    arch = Architecture.from_dict(run_config["architecture"])
    final_generator = models_from_checkpoint(state, checkpoint_path, arch, device).generator
    final_step = int(state["step"])

    reference_indices = manifest["target"]["reference"]["indices"]
    validation_indices = manifest["target"]["validation"]["indices"]
    sets = EvaluationSets(
        reference=target.images[reference_indices],
        reference_labels=target.labels[reference_indices],
        heldout=target.images[validation_indices],
        heldout_labels=target.labels[validation_indices],
        shots=target.images[run_config["shot_indices"]],
    )
    space = feature_space(encoder_path, evaluation["inception_weights"])
    log.info("evaluating %s: %d generated vs %d reference images (%s)", run_dir, evaluation["num_generated"], len(sets.reference), space.name)
    suite = MetricSuite(sets, space, str(encoder_path), MetricSettings.from_config(evaluation), device)

    scored: dict[int, list[dict[str, Any]]] = {}

    def score(step: int) -> list[dict[str, Any]]:
        if step not in scored:
            generator: Generator = final_generator
            if step != final_step:
                generator = generator_from_snapshot(snapshot_path(run_dir, step), state["identity_json"], arch, device)
            scored[step] = suite.score(generate(generator, evaluation["num_generated"], evaluation["seed"], device))
        return scored[step]

    select_on = evaluation["select_on"]
    validation = {step: values[f"{select_on}_validation"] for step, values in validation_scores(run_dir).items()}
    selections: list[tuple[str, int, dict[str, Any]]] = [(FINAL, final_step, {})]
    if validation:
        step = best_step(validation)
        selections.append((SELECTED, step, {"selected_on": f"{select_on} on the validation split", "selection_score": validation[step]}))
    else:
        log.warning("%s has no validation scores in its training log: only the final checkpoint is evaluated", run_dir)
    if evaluation["oracle_selection"]:
        steps = sorted(set(validation) | {final_step})
        on_reference = {step: next(r["value"] for r in score(step) if r["metric"] == select_on) for step in steps}
        step = best_step(on_reference)
        selections.append((ORACLE, step, {"selected_on": f"{select_on} on the reference (test) set", "selection_score": on_reference[step]}))

    shared = _shared_fields(run_config, manifest, evaluation)
    records = [
        {**shared, "checkpoint": label, "checkpoint_step": step, **selection, **record}
        for label, step, selection in selections
        for record in score(step)
    ]
    atomic_write_json(output, {"records": records})
    return records


def _shared_fields(run_config: dict[str, Any], manifest: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
    return {
        **{field: run_config[field] for field in RUN_FIELDS},
        "status": run_config.get("status", "completed"),
        "reference_set": "reference",
        "reference_sha256": manifest["target"]["reference"]["sha256"],
        "evaluation": evaluation,
        "environment": environment(),
        "run_config": run_config,
    }


def _record_divergence(run_config: dict[str, Any], manifest: dict[str, Any], evaluation: dict[str, Any], output: Path) -> list[dict[str, Any]]:
    """A diverged run has no generator to score: one record per metric and checkpoint says so, with no value."""
    log.warning("run diverged at step %d (%s): recorded without scores", run_config["diverged_at_step"], run_config["divergence_reason"])
    labels = [FINAL, SELECTED] + ([ORACLE] if evaluation["oracle_selection"] else [])
    metrics = [name for name in SUITE_METRICS if name != "fid_inf" or evaluation["fid_infinity"]]
    divergence = {"diverged_at_step": run_config["diverged_at_step"], "divergence_reason": run_config["divergence_reason"]}
    shared = _shared_fields(run_config, manifest, evaluation)
    records = [
        {**shared, "checkpoint": label, "checkpoint_step": None, "metric": metric, "value": None, **divergence}
        for label in labels
        for metric in metrics
    ]
    atomic_write_json(output, {"records": records})
    return records
