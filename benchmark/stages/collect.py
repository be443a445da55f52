"""Stage `collect`: every run's metric records gathered into one tidy CSV (one row per run, checkpoint, metric);
and `collect-training`: every run's training log into another (one row per run, step and logged quantity)."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from benchmark.errors import BenchmarkError
from benchmark.io import atomic_write_text, check_apart
from benchmark.results import collect_results, collect_training

log = logging.getLogger(__name__)


def collect(metrics_files: list[Path], output: Path) -> None:
    _check_inputs(metrics_files, output, "metrics files")
    frame = collect_results(metrics_files)
    atomic_write_text(output, frame.to_csv(index=False))
    log.info("collected %d records from %d runs into %s", len(frame), len(metrics_files), output)


def collect_training_logs(train_logs: list[Path], output: Path) -> None:
    _check_inputs(train_logs, output, "training logs")
    frame = collect_training(train_logs)
    atomic_write_text(output, frame.to_csv(index=False))
    log.info("collected %d training-log rows from %d runs into %s", len(frame), len(train_logs), output)


def _check_inputs(files: list[Path], output: Path, option: str) -> None:
    """Each input named once (a file named twice would count its run twice), and the output none of them."""
    counts = Counter(Path(path).resolve() for path in files)
    twice = sorted({str(path) for path in files if counts[Path(path).resolve()] > 1})
    if twice:
        raise BenchmarkError(
            f"{twice[0]} is named more than once among the {option} ({len(twice)} such names): each run is collected once. Name each file once."
        )
    check_apart(output, "--output", [(option, path) for path in files])
