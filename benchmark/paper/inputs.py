"""What the paper outputs are rendered from: a results folder, read without training or scoring anything.

A folder holds `results.csv` (the tidy results of `collect`), and where they were gathered, `training.csv` (the
runs' training logs, `collect-training`) and `panels.npz` (generated samples with their nearest shots, `panels`).
Each may be gzip-compressed (`.csv.gz`), as in the committed reference results (`reports/reference/`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.completeness import check_complete
from benchmark.errors import BenchmarkError
from benchmark.hparam_selection import CELL, DEFAULTS, TARGET_VALIDATION_CROSS_FIT
from benchmark.results import at_cross_fitted_draws
from benchmark.selection import CHECKPOINTS, CURVE

RESULTS_NAME, TRAINING_NAME, PANELS_NAME = "results.csv", "training.csv", "panels.npz"


@dataclass(frozen=True)
class PaperInputs:
    """The results at the hyperparameter draws the paper reports (`rule`), with what else the folder holds."""

    results: pd.DataFrame  # every checkpoint (and the adaptation curve) at the reported draws
    rule: str  # how each run's draw was chosen: DEFAULTS without a sweep, else TARGET_VALIDATION_CROSS_FIT
    training: pd.DataFrame | None  # tidy training logs, or None when the folder has none
    panels: dict[str, np.ndarray] | None  # arrays of `benchmark.stages.panels`, or None
    folder: Path
    runs: int  # every run in the folder, at every draw (`results` holds the reported draws only)
    draws: int  # the most hyperparameter draws any method ran


def find(folder: Path, name: str) -> Path | None:
    """`name` in `folder`, or its gzip-compressed form; None when neither exists."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_results_folder(folder: Path) -> PaperInputs:
    folder = Path(folder)
    results_path = find(folder, RESULTS_NAME)
    if results_path is None:
        raise BenchmarkError(
            f"{folder} has no {RESULTS_NAME} (nor {RESULTS_NAME}.gz). Point --input-dir at a run's results folder after "
            "its `collect` stage, or at reports/reference for the committed reference results."
        )
    try:
        results = pd.read_csv(results_path)
    except (OSError, ValueError) as error:
        raise BenchmarkError(f"{results_path} is not a readable results CSV ({error}). Rerun the collect stage.") from error
    missing = sorted({*CELL, "checkpoint", "seed", "metric", "value", "status"} - set(results.columns))
    if missing:
        raise BenchmarkError(f"{results_path} lacks the column(s) {', '.join(missing)}: it is not a results CSV of `ganbench collect`.")
    if results.empty:
        raise BenchmarkError(f"{results_path} has no rows. Run the benchmark first.")
    check_complete(results, str(results_path))
    every_draw = results.assign(draw=results["draw"].fillna(0) if "draw" in results else 0)
    runs = len(every_draw.drop_duplicates(["task", "shots", "method", "draw", "seed"]))
    draws = int(every_draw.groupby(["task", "shots", "method"])["draw"].nunique().max())
    results, rule = at_reported_draws(results)
    training_path = find(folder, TRAINING_NAME)
    training = pd.read_csv(training_path) if training_path else None
    panels_path = folder / PANELS_NAME
    panels = None
    if panels_path.is_file():
        with np.load(panels_path, allow_pickle=False) as stored:
            panels = {key: stored[key] for key in stored.files}
    return PaperInputs(results, rule, training, panels, folder, runs, draws)


def at_reported_draws(results: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Without a sweep, every run is draw 0 (the defaults). With one, each seed of each method at the draw the
    target-validation rule selects per checkpoint on the other seeds (cross-fitted, as in the results report; never
    an oracle's draw). A seed with no selectable draw (every draw had a diverged seed elsewhere) is shown at draw 0,
    where its failures show as such."""
    results = results.assign(draw=results["draw"].fillna(0).astype(int) if "draw" in results else 0)
    if results["draw"].nunique() <= 1:
        only = int(results["draw"].iloc[0])
        return results, DEFAULTS if only == 0 else f"draw {only} (the only draw in these results)"
    chosen = at_cross_fitted_draws(results)
    keys = ["task", "shots", "method", "checkpoint", "seed"]
    unselected = results[keys].drop_duplicates().merge(chosen[keys].drop_duplicates(), how="left", indicator=True)
    unselected = unselected[unselected["_merge"].eq("left_only")].drop(columns="_merge")
    fallback = results[results["draw"].eq(0)].merge(unselected, on=keys, how="inner")
    return pd.concat([chosen, fallback], ignore_index=True), TARGET_VALIDATION_CROSS_FIT


def checkpoints_present(results: pd.DataFrame) -> list[str]:
    """The checkpoint labels with results, in the order tables show them (the adaptation curve is not one)."""
    present = set(results["checkpoint"]) - {CURVE}
    return [name for name in CHECKPOINTS if name in present] + sorted(present - set(CHECKPOINTS))
