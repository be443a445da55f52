"""Which method is best across tasks, and how sure we are: a rank test over tasks (Friedman with the
Iman-Davenport statistic, Nemenyi's critical difference via autorank) and rliable's aggregates (interquartile mean,
probability of improvement) with a hierarchical bootstrap over tasks, then seeds.

What a number means:
- A *block* is one task and K, its seeds averaged: the seeds of a task share its reference set, pretraining and
  evaluation set, so they are not independent evidence about methods (Demsar 2006 blocks on data sets). Each
  method's mean headline score (KID) is ranked within a block (1 = lowest); a method with a diverged seed in a
  block ranks last there (its mean would leave the failure out). The Iman-Davenport F statistic (from Friedman's
  chi-square) asks whether any method ranks differently at all; Nemenyi's critical difference (CD) says which
  pairs of mean ranks are told apart. Cross-task inference needs tasks: with fewer than 5 there is no rank test,
  no critical-difference diagram and no aggregate verdict, and the output says so.
- *Normalised KID* of a run is its KID over the source generator's KID before adaptation on the same task: the
  step-0 validation KID of `finetune` (the pretrained source, unchanged), averaged over that task's seeds. The
  other endpoint is fixed: a generator that draws real target images has an expected KID of 0 (KID is unbiased),
  so 0 means as close as real data and 1 no closer than the unadapted source. The step-0 normaliser is itself
  measured, so it is resampled with the seeds inside every bootstrap resample.
- The *interquartile mean* (IQM) of a method pools its normalised runs over all tasks and trims a quarter from each
  end (scipy's trim_mean: int(n / 4) runs per end; the text states how many). Its 95% interval is a hierarchical
  percentile bootstrap: tasks drawn with replacement, then seeds within each drawn task (the same seed draws for
  every method and for the normaliser, which keeps the pairing). A diverged run scores +inf.
- *Probability of improvement* P(X < Y) (Agarwal et al. 2021, "better" = lower KID): per task the probability
  that a random run of X has a lower KID than a random run of Y (ties count half), averaged over tasks; 95%
  interval from the same bootstrap. Shown once per pair (one triangle); a star marks an interval that excludes
  0.5 only on the pre-declared comparisons (against finetune and scratch) and only with enough tasks.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from benchmark.paper.tables import diverged
from benchmark.results import BASELINE, HEADLINE, NO_TRANSFER
from benchmark.selection import CURVE

log = logging.getLogger(__name__)

BLOCK = ["task", "shots"]
CONFIDENCE = 0.95
MIN_TASKS = 5  # below this no cross-task verdict (autorank also refuses fewer than 5 blocks)
MIN_METHODS = 3  # Friedman and Nemenyi need three; autorank tests two with Wilcoxon instead
DECLARED = (BASELINE, NO_TRANSFER)  # probability-of-improvement comparisons declared before seeing the results
TRIM = 0.25


def too_few_tasks(rows: pd.DataFrame) -> str | None:
    """The one line that says why no cross-task verdict is drawn, or None when there are enough tasks."""
    tasks = sorted(set(rows["task"]))
    if len(tasks) >= MIN_TASKS:
        return None
    return (
        f"No cross-task verdict: {len(tasks)} task{'s' if len(tasks) != 1 else ''} ({', '.join(tasks)}), and a rank test, a "
        f"critical-difference diagram or an aggregate verdict needs at least {MIN_TASKS}; the numbers below describe these tasks only."
    )


def score_matrix(rows: pd.DataFrame, metric: str = HEADLINE.metric) -> tuple[pd.DataFrame, int]:
    """Blocks (task, K) x methods of one checkpoint's `metric`, each cell the mean over the method's completed seeds;
    complete blocks only, and how many blocks were dropped for a missing score. A method with a diverged seed in a
    block ranks last there; a method with no score at all is left out."""
    own = rows[rows["metric"].eq(metric)]
    values = own.assign(value=own["value"].where(~diverged(own), np.inf))
    means = values.groupby([*BLOCK, "method"])["value"].mean().unstack("method")  # +inf where any seed diverged
    means = means.loc[:, means.notna().any()]
    complete = means.dropna(axis=0, how="any")
    # Last place, as a finite number: autorank also computes means and medians, which an infinity would spoil.
    finite = complete.replace(np.inf, np.nan)
    worst = (finite.max(axis=1) + finite.abs().max(axis=1) + 1.0).fillna(1.0)  # a block where all diverged: all tied
    complete = complete.apply(lambda column: column.where(np.isfinite(column), worst))
    return complete, len(means) - len(complete)


@dataclass(frozen=True)
class RankTest:
    ranks: pd.DataFrame  # per method: mean_rank (1 = best), best first
    friedman_p: float
    iman_davenport: float  # F statistic
    df: tuple[int, int]
    p_value: float  # of the Iman-Davenport F test
    critical_difference: float | None
    blocks: int
    tasks: int
    dropped_blocks: int
    result: object  # autorank's result, for its critical-difference plot


def iman_davenport(matrix: pd.DataFrame) -> tuple[float, float, tuple[int, int], float]:
    """Friedman's chi-square p, and the Iman-Davenport F = (N - 1) chi2 / (N (k - 1) - chi2) with its df and p."""
    blocks, methods = matrix.shape
    chi2 = stats.friedmanchisquare(*(matrix[column].to_numpy() for column in matrix)).statistic
    chi2_p = float(stats.chi2.sf(chi2, methods - 1))
    df = (methods - 1, (methods - 1) * (blocks - 1))
    denominator = blocks * (methods - 1) - chi2
    f = float((blocks - 1) * chi2 / denominator) if denominator > 0 else np.inf  # ranks identical in every block
    return chi2_p, f, df, float(stats.f.sf(f, *df)) if np.isfinite(f) else 0.0


def rank_test(rows: pd.DataFrame, alpha: float = 0.05, metric: str = HEADLINE.metric) -> RankTest | None:
    """Iman-Davenport and Nemenyi on the (task, K) x method matrix (lower is better). None with fewer than
    `MIN_TASKS` tasks, `MIN_METHODS` methods or `MIN_TASKS` complete blocks."""
    from autorank import autorank  # imported here: it pulls in statsmodels and matplotlib

    if too_few_tasks(rows) is not None:
        return None
    matrix, dropped = score_matrix(rows, metric)
    tasks = matrix.index.get_level_values("task").nunique() if len(matrix) else 0
    if matrix.shape[1] < MIN_METHODS or tasks < MIN_TASKS:
        return None
    printed = io.StringIO()
    # autorank prints its choice of tests and warns about effect sizes and normality tests on constant columns,
    # which the paper does not use.
    with contextlib.redirect_stdout(printed), warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", (RuntimeWarning, UserWarning))
        result = autorank(matrix.reset_index(drop=True), alpha=alpha, verbose=False, order="ascending", force_mode="nonparametric")
    if printed.getvalue().strip():
        log.debug("autorank: %s", " ".join(printed.getvalue().split()))
    ranks = result.rankdf[["meanrank"]].rename(columns={"meanrank": "mean_rank"})
    ranks.index.name = "method"
    friedman_p, f, df, p = iman_davenport(matrix)
    cd = None if result.cd is None else float(result.cd)
    return RankTest(ranks.reset_index(), friedman_p, f, df, p, cd, len(matrix), tasks, dropped, result)


@dataclass(frozen=True)
class TaskRuns:
    """One (task, K): the methods' runs by seed (seeds x methods, +inf where diverged) and the source generator's
    step-0 KID on the same seeds (the normaliser, resampled with them)."""

    task: str
    shots: int
    values: np.ndarray
    source: np.ndarray


def task_runs(
    rows: pd.DataFrame, curve: pd.DataFrame, metric: str = HEADLINE.metric, source_method: str = BASELINE
) -> tuple[list[TaskRuns], list[str]]:
    """Per (task, K) with a step-0 score of `source_method` on the adaptation curve: every method's runs by seed.
    Only methods with runs in every such (task, K) are kept (else their aggregate would be over other tasks);
    seeds missing for a method are left out of that task."""
    own = rows[rows["metric"].eq(metric)]
    own = own.assign(value=own["value"].where(~diverged(own), np.inf))
    start = curve[curve["checkpoint"].eq(CURVE) & curve["metric"].eq(metric) & curve["method"].eq(source_method) & curve["checkpoint_step"].eq(0)]
    start = start[start["value"].notna()]
    blocks = []
    for (task, shots), block in own.groupby(BLOCK, sort=True):
        source = start[start["task"].eq(task) & start["shots"].eq(shots)].set_index("seed")["value"]
        if source.empty or not source.mean() > 0:
            continue  # nothing (or nothing positive) to normalise by
        by_seed = block.pivot_table(index="seed", columns="method", values="value", aggfunc="first").dropna(axis=0, how="any")
        by_seed = by_seed[by_seed.index.isin(source.index)]
        if len(by_seed):
            blocks.append((task, int(shots), by_seed, source.loc[by_seed.index].to_numpy(float)))
    if not blocks:
        return [], []
    methods = sorted(set.intersection(*(set(frame.columns) for _, _, frame, _ in blocks)))
    return [TaskRuns(task, shots, frame[methods].to_numpy(float), source) for task, shots, frame, source in blocks], methods


def interquartile_mean(values: np.ndarray) -> float:
    with np.errstate(invalid="ignore"):
        return float(stats.trim_mean(values, TRIM))


def trimmed_each_end(runs: int) -> int:
    """How many runs scipy's trim_mean drops from each end at `TRIM`."""
    return int(TRIM * runs)


def _iqms(tasks: list[TaskRuns]) -> np.ndarray:
    """Per method: the IQM of its normalised runs pooled over `tasks`."""
    pooled = np.concatenate([task.values / task.source.mean() for task in tasks], axis=0)
    with np.errstate(invalid="ignore"):
        return stats.trim_mean(pooled, TRIM, axis=0)


def probability_lower(x: list[np.ndarray], y: list[np.ndarray]) -> float:
    """rliable's probability of improvement with lower = better: the mean over tasks of P(x < y) + P(x = y) / 2."""
    per_task = []
    for x_runs, y_runs in zip(x, y, strict=True):
        less = (x_runs[:, None] < y_runs[None, :]).mean()
        equal = (x_runs[:, None] == y_runs[None, :]).mean()
        per_task.append(less + equal / 2)
    return float(np.mean(per_task))


def improvement_matrix(tasks: list[TaskRuns]) -> np.ndarray:
    """methods x methods: P(row < column) averaged over tasks, every pair at once (`probability_lower` per pair)."""
    per_task = []
    for task in tasks:
        x, y = task.values[:, None, :, None], task.values[None, :, None, :]  # runs of the row method x runs of the column one
        per_task.append((x < y).mean(axis=(0, 1)) + (x == y).mean(axis=(0, 1)) / 2)
    return np.mean(per_task, axis=0)


def _improvements(tasks: list[TaskRuns], pairs: list[tuple[int, int]]) -> np.ndarray:
    matrix = improvement_matrix(tasks)
    return np.array([matrix[i, j] for i, j in pairs])


def hierarchical_resamples(tasks: list[TaskRuns], resamples: int, seed: int):
    """Bootstrap resamples of `tasks`: tasks drawn with replacement, then seeds within each drawn task (one draw of
    seed indices per task shared by every method and the normaliser)."""
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        drawn = rng.integers(0, len(tasks), len(tasks))
        out = []
        for index in drawn:
            task = tasks[index]
            seeds = rng.integers(0, len(task.source), len(task.source))
            out.append(TaskRuns(task.task, task.shots, task.values[seeds], task.source[seeds]))
        yield out


def _interval(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tail = (1 - CONFIDENCE) / 2 * 100
    with warnings.catch_warnings():  # a diverged run's +inf: percentiles of inf are inf
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        return np.percentile(samples, tail, axis=0), np.percentile(samples, 100 - tail, axis=0)


def aggregate_scores(tasks: list[TaskRuns], methods: list[str], resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per method: IQM of the normalised runs over all tasks, its hierarchical-bootstrap 95% interval, the runs and
    how many the IQM trims from each end."""
    columns = ["method", "iqm", "ci_low", "ci_high", "runs", "trimmed_each_end", "tasks"]
    if not tasks:
        return pd.DataFrame(columns=columns)
    point = _iqms(tasks)
    low, high = _interval(np.array([_iqms(resample) for resample in hierarchical_resamples(tasks, resamples, seed)]))
    runs = sum(len(task.source) for task in tasks)
    return pd.DataFrame(
        [{"method": m, "iqm": point[i], "ci_low": low[i], "ci_high": high[i], "runs": runs, "trimmed_each_end": trimmed_each_end(runs), "tasks": len(tasks)}
         for i, m in enumerate(methods)],
        columns=columns,
    )  # fmt: skip


def improvement_probabilities(tasks: list[TaskRuns], methods: list[str], resamples: int = 2000, seed: int = 0, verdicts: bool = True) -> pd.DataFrame:
    """P(X better than Y) for each unordered pair once (X before Y in name order), with its 95% interval. `resolved`
    (the interval excludes 0.5) only for the pre-declared comparisons, and only where `verdicts` are allowed."""
    columns = ["method", "versus", "probability", "ci_low", "ci_high", "declared", "resolved"]
    pairs = [(i, j) for i in range(len(methods)) for j in range(i + 1, len(methods))]
    if not tasks or not pairs:
        return pd.DataFrame(columns=columns)
    point = _improvements(tasks, pairs)
    low, high = _interval(np.array([_improvements(resample, pairs) for resample in hierarchical_resamples(tasks, resamples, seed)]))
    out = []
    for index, (i, j) in enumerate(pairs):
        declared = methods[i] in DECLARED or methods[j] in DECLARED
        resolved = bool(verdicts and declared and (low[index] > 0.5 or high[index] < 0.5))
        out.append({"method": methods[i], "versus": methods[j], "probability": point[index], "ci_low": low[index], "ci_high": high[index],
                    "declared": declared, "resolved": resolved})  # fmt: skip
    return pd.DataFrame(out, columns=columns)
