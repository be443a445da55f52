"""Results that can be reported: every run counted once, and no gap (a run some methods have and another lacks).
Checked wherever results are gathered or read: `ganbench collect`, the results table, the paper outputs and the
selection of hyperparameter draws."""

from __future__ import annotations

import pandas as pd

from benchmark.errors import BenchmarkError
from benchmark.selection import CURVE


def check_complete(frame: pd.DataFrame, source: str) -> None:
    """Refuse results with a gap: within a task and K, every method (and hyperparameter draw) must hold the same
    seeds, the seeds its rows name anywhere there. A missing run would leave a method's mean on fewer seeds than its
    rivals' (a draw of a sweep could be selected on the seeds it happens to have). A diverged run is no gap: it is
    recorded, and counted as a failure. Also refuses a run counted twice (`check_runs_counted_once`)."""
    check_runs_counted_once(frame, source)
    draw = ["draw"] if "draw" in frame else []
    for (task, shots), block in frame.groupby(["task", "shots"], sort=True):
        seeds = sorted(set(block["seed"]))
        for cell, rows in block.groupby(["method", *draw], sort=True):
            missing = sorted(set(seeds) - set(rows["seed"]))
            if missing:
                method, *drawn = cell if isinstance(cell, tuple) else (cell,)
                which = f"{method}" + (f" (draw {drawn[0]})" if drawn else "")
                raise BenchmarkError(
                    f"{source}: {task}, K = {shots}: {which} has no results for seed(s) {', '.join(map(str, missing))}, which other "
                    f"methods of this task and K have ({len(missing)} missing run(s)). Evaluate the missing run(s) and collect again, "
                    "or leave those seeds out of every method."
                )


def check_runs_counted_once(frame: pd.DataFrame, source: str) -> None:
    """Refuse results that hold a run twice (one value per run, checkpoint, curve step and metric): a run counted
    twice adds a seed that does not exist, shrinks every spread and can move the best mean. Named: the run, and the
    folders its rows came from where the results say."""
    run = [field for field in ("task", "shots", "method", "draw", "seed") if field in frame]
    key = [*run, *(column for column in ("checkpoint", "checkpoint_step", "metric") if column in frame)]
    # The reported checkpoints' steps may differ between two copies of a run; the adaptation curve is per step.
    key_rows = frame.assign(checkpoint_step=frame["checkpoint_step"].where(frame["checkpoint"].eq(CURVE))) if "checkpoint_step" in frame else frame
    twice = key_rows.duplicated(key, keep=False)
    if not twice.any():
        return
    example = frame[twice].iloc[0]
    same_run = frame[twice & frame[run].eq(example[run]).all(axis=1)]
    where = sorted(set(same_run["run_dir"].dropna().astype(str))) if "run_dir" in frame else []
    runs = frame[twice].drop_duplicates(run)
    raise BenchmarkError(
        f"{source}: {len(runs)} run(s) appear more than once, e.g. "
        + ", ".join(f"{field} {example[field]}" for field in run)
        + (f" (from {' and '.join(where)})" if len(where) > 1 else " (the same rows twice)")
        + ": each run must be counted once. Collect each run's metrics.json once (ganbench collect) and render again."
    )
