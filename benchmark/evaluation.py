"""Evaluation stage: samples from a run's final generator, scored against the task's reference set."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from benchmark.checkpoint import load_checkpoint, models_from_checkpoint
from benchmark.data import PreparedDataset
from benchmark.errors import BenchmarkError
from benchmark.io import atomic_write_json
from benchmark.metrics import feature_space, fidelity_metrics
from benchmark.models import Architecture
from benchmark.provenance import environment
from benchmark.splits import check_dataset_matches, read_manifest
from benchmark.training import generate

log = logging.getLogger(__name__)

RUN_FIELDS = ("task", "task_kind", "method", "shots", "seed", "split_draw", "pretrain_seed")


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
    target = PreparedDataset.load(target_dataset_path)
    check_dataset_matches(manifest["target"]["dataset"], target, task_manifest_path)
    checkpoint_path = run_dir / "checkpoint.pt"
    state = load_checkpoint(checkpoint_path, device)
    arch = Architecture.from_dict(run_config["architecture"])
    models = models_from_checkpoint(state, checkpoint_path, arch, device)
    reference = target.images[manifest["target"]["reference"]["indices"]]
    space = feature_space(encoder_path, evaluation["inception_weights"])
    log.info("evaluating %s: %d generated vs %d reference images (%s)", run_dir, evaluation["num_generated"], len(reference), space.name)
    fake = generate(models.generator, evaluation["num_generated"], evaluation["seed"], device)
    metric_records = fidelity_metrics(
        fake, reference, space, evaluation["kid_subset_size"], evaluation["kid_subsets"], evaluation["seed"], device
    )
    shared = {
        **{field: run_config[field] for field in RUN_FIELDS},
        "checkpoint": "final",
        "checkpoint_step": int(state["step"]),
        "reference_set": "reference",
        "reference_sha256": manifest["target"]["reference"]["sha256"],
        "evaluation": evaluation,
        "environment": environment(),
        "run_config": run_config,
    }
    records = [{**shared, **record} for record in metric_records]
    atomic_write_json(output, {"records": records})
    return records
