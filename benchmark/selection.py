"""Checkpoint selection: which of a run's evaluated generators the benchmark reports.

- "final": the generator at the end of the step budget;
- "validation-selected": the evaluation step with the lowest validation KID (or FID, `evaluation.select_on`),
  scored during training on the task's validation split, which is disjoint from the reference set;
- "oracle (reference-selected)": only when `evaluation.oracle_selection` is true: the evaluation step that
  scores best on the reference set itself. It is optimistic (the test set chooses), so tables label it.

Every evaluation step is a candidate: the adaptation-curve steps (`train.eval_steps`, 0 being the starting point
before any adaptation), every `eval_every`-th step and the last. Their validation scores, reported as the
"adaptation curve" (`CURVE`), answer which method is best after a given number of steps.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmark.errors import BenchmarkError
from benchmark.layout import StageFolder

FINAL, SELECTED, ORACLE = "final", "validation-selected", "oracle (reference-selected)"
CHECKPOINTS = (FINAL, SELECTED, ORACLE)  # in the order tables show them
CURVE = "adaptation curve"  # validation-split scores at every evaluation step, not a checkpoint choice


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
