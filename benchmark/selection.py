"""Checkpoint selection: which of a run's evaluated generators the benchmark reports.

- "final": the generator at the end of the step budget;
- "validation-selected": the evaluation step with the lowest validation KID (or FID, `evaluation.select_on`),
  scored during training on the task's validation split, which is disjoint from the reference set;
- "oracle (reference-selected)": only when `evaluation.oracle_selection` is true: the evaluation step that
  scores best on one half of the reference set (the *choosing half*), scored on the other half (the *reporting
  half*), so that no reported number is the minimum it was chosen as. It still lets test-distribution images
  choose, so tables label it as an oracle.

The two halves (`reference_halves`) are fixed by the task's reference set alone: its even and its odd positions
in the manifest's sorted index list. Every oracle, of checkpoints here and of hyperparameter draws
(`benchmark.hparam_selection`), chooses on the first and reports on the second.

Every evaluation step is a candidate: the adaptation-curve steps (`train.eval_steps`, 0 being the starting point
before any adaptation), every `eval_every`-th step and the last. Their validation scores, reported as the
"adaptation curve" (`CURVE`), answer which method is best after a given number of steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmark.errors import BenchmarkError
from benchmark.layout import StageFolder

FINAL, SELECTED, ORACLE = "final", "validation-selected", "oracle (reference-selected)"
CHECKPOINTS = (FINAL, SELECTED, ORACLE)  # in the order tables show them
CURVE = "adaptation curve"  # validation-split scores at every evaluation step, not a checkpoint choice
CHOOSING_HALF, REPORTING_HALF = "choosing_half", "reporting_half"  # the reference set's halves, for the oracles


def reference_halves(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions in a reference set of `count` images of its choosing and its reporting half: the even and the odd
    positions. The manifest lists the reference indices sorted, so alternate positions split every run of
    neighbouring images (a class, in a dataset stored class by class) evenly; no random draw, so nothing to record."""
    positions = np.arange(count)
    return positions[0::2], positions[1::2]


def half_name(half: str) -> str:
    """How records and messages name a half: "choosing half", "reporting half"."""
    return half.replace("_", " ")


def half_metric(metric: str, half: str) -> str:
    """The record name of `metric` scored against one half of the reference set (e.g. "kid_choosing_half")."""
    return f"{metric}_{half}"


def validation_scores(run_dir: str | Path) -> dict[int, dict[str, float]]:
    """{step: {"kid_validation": ..., "fid_validation": ...}} from the run's training log."""
    log_path = StageFolder(run_dir).train_log
    if not log_path.is_file():
        return {}
    try:
        entries = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
        return {int(entry["step"]): entry["eval"] for entry in entries if "eval" in entry}
    except (ValueError, KeyError, TypeError) as error:
        raise BenchmarkError(
            f"{log_path} is damaged ({type(error).__name__}: {error}). Delete the run folder {log_path.parent} and rerun its adaptation."
        ) from error


def best_step(scores: dict[int, float]) -> int:
    """The step with the lowest score; ties go to the earliest step."""
    return min(sorted(scores), key=lambda step: scores[step])
