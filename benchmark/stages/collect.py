"""Stage `collect`: every run's metric records gathered into one tidy CSV (one row per run, checkpoint, metric);
and `collect-training`: every run's training log into another (one row per run, step and logged quantity)."""

from __future__ import annotations

import logging
from pathlib import Path

from benchmark.io import atomic_write_text
from benchmark.results import collect_results, collect_training

log = logging.getLogger(__name__)


def collect(metrics_files: list[Path], output: Path) -> None:
    frame = collect_results(metrics_files)
    atomic_write_text(output, frame.to_csv(index=False))
    log.info("collected %d records from %d runs into %s", len(frame), len(metrics_files), output)


def collect_training_logs(train_logs: list[Path], output: Path) -> None:
    frame = collect_training(train_logs)
    atomic_write_text(output, frame.to_csv(index=False))
    log.info("collected %d training-log rows from %d runs into %s", len(frame), len(train_logs), output)
