"""Hyperparameter selection: which draw of a sweep (`benchmark.sweep`) a table reports for each method.

Three rules, each named in every table that uses it (DomainBed's lesson: the rule changes the ranking):
- *target validation*: per (task, K, method), the draw with the best mean validation-split score over seeds.
  It spends extra target images (the validation split), which a truly few-shot user does not have: optimistic.
  Chosen and scored on the same seeds it is optimistic twice (the best of several noisy means is low by chance),
  so the tables report it *cross-fitted*: each seed at the draw chosen on the other seeds' validation scores
  (`cross_fitted_draws`); a cell with a single seed has no other seed and is chosen on itself.
- *leave-one-task-out*: per held-out task, the draw whose mean rank over the other tasks of the same kind (and K)
  is best, ranked there by their validation scores; applied unchanged to the held-out task. The rule a real
  few-shot user can follow. Not defined where a task has no other task of its kind.
- *oracle*: the draw with the best mean score on the reference set's choosing half, reported on its reporting
  half (`benchmark.selection.reference_halves`): what the best draw is worth when test-distribution images may
  choose it, without the reported number being the minimum it was chosen as. Only when asked for; labelled.

A run's validation score is its headline metric on the validation split at the reported checkpoint: the last
evaluated step for "final", the best step for "validation-selected". These come from the adaptation-curve rows,
which are validation-split scores only: the first two rules are computed from those rows alone and never see a
reference-set score. A draw with a diverged seed is never selected by any rule: its mean would hide the failure;
results missing a run are refused (`benchmark.completeness`). Ties go to the lowest draw (draw 0, the defaults, first).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.completeness import check_complete
from benchmark.errors import BenchmarkError
from benchmark.selection import CHOOSING_HALF, CURVE, FINAL, ORACLE, REPORTING_HALF, SELECTED, half_metric

TARGET_VALIDATION = "target validation"
TARGET_VALIDATION_CROSS_FIT = "target validation, cross-fitted"
LEAVE_ONE_TASK_OUT = "leave-one-task-out"
ORACLE_DRAW = "oracle (reference-selected draw)"
DEFAULTS = "defaults (draw 0)"
CELL = ["task", "task_kind", "shots", "method"]


def validation_scores(curve: pd.DataFrame, checkpoint: str, metric: str) -> pd.DataFrame:
    """One validation score per run (CELL + draw + seed -> score) from adaptation-curve rows: the score at the
    last evaluated step for the final checkpoint, the best one for a selected checkpoint."""
    rows = curve[curve["checkpoint"].eq(CURVE) & curve["metric"].eq(metric)]
    if rows.empty:
        return pd.DataFrame(columns=[*CELL, "draw", "seed", "score"])
    keys = [*CELL, "draw", "seed"]
    if checkpoint == FINAL:
        last = rows.sort_values("checkpoint_step", kind="stable").groupby(keys, sort=True).tail(1)
        scores = last.set_index(keys)["value"]
    else:
        scores = rows.groupby(keys, sort=True)["value"].min()
    return scores.rename("score").reset_index()


def draw_means(scores: pd.DataFrame, expected_seeds: pd.DataFrame) -> pd.DataFrame:
    """Mean score per (cell, draw); infinite where a seed has no finite score (diverged or missing), so that draw
    is never the best."""
    merged = expected_seeds.merge(scores, on=[*CELL, "draw", "seed"], how="left")
    merged["score"] = merged["score"].where(np.isfinite(merged["score"].astype(float)), np.inf)
    means = merged.groupby([*CELL, "draw"], sort=True)["score"].mean()
    return means.rename("mean").reset_index()


def best_draw(means: pd.DataFrame, column: str = "mean") -> pd.DataFrame:
    """Per cell, the draw with the lowest `column` (ties: the lowest draw), or none when no draw is finite."""
    finite = means[np.isfinite(means[column].astype(float))]
    ordered = finite.sort_values([*CELL, column, "draw"], kind="stable")
    return ordered.groupby(CELL, sort=True).head(1)[[*CELL, "draw"]]


def target_validation(means: pd.DataFrame) -> pd.DataFrame:
    return best_draw(means)


def leave_one_task_out(means: pd.DataFrame) -> pd.DataFrame:
    """Per (task, K, method): the draw with the best mean rank over the other tasks of the task's kind."""
    ranked = means.assign(rank=means.groupby(CELL, sort=True)["mean"].rank(method="average"))
    ranked = ranked[np.isfinite(ranked["mean"].astype(float))]
    chosen = []
    for (task, kind, shots, method), _ in means.groupby(CELL, sort=True):
        others = ranked[ranked["task_kind"].eq(kind) & ranked["shots"].eq(shots) & ranked["method"].eq(method) & ~ranked["task"].eq(task)]
        if others.empty:
            continue  # no other task of this kind: the rule is not defined here
        # Only draws that every other task scored can be chosen: a draw that failed anywhere is out.
        complete = others.groupby("draw")["task"].nunique().eq(others["task"].nunique())
        mean_rank = others[others["draw"].isin(complete[complete].index)].groupby("draw")["rank"].mean()
        if not mean_rank.empty:
            draw = min(mean_rank.index, key=lambda d: (mean_rank[d], d))
            chosen.append({"task": task, "task_kind": kind, "shots": shots, "method": method, "draw": draw})
    return pd.DataFrame(chosen, columns=[*CELL, "draw"])


def reference_means(frame: pd.DataFrame, checkpoint: str, metric: str, expected_seeds: pd.DataFrame) -> pd.DataFrame:
    """Mean score on the reference set's choosing half per (cell, draw) at a checkpoint: what only the oracle rule
    reads (it reports the chosen draw's `oracle_report_rows`)."""
    at_checkpoint = frame[frame["checkpoint"].eq(checkpoint)]
    rows = at_checkpoint[at_checkpoint["metric"].eq(half_metric(metric, CHOOSING_HALF))]
    if rows.empty and not at_checkpoint.empty:
        raise BenchmarkError(
            f"The oracle draw rule chooses on {half_metric(metric, CHOOSING_HALF)} (the reference set's choosing half), which "
            "these results do not hold: they were evaluated without sweep.oracle. Set sweep.oracle: true and rerun (only the "
            "evaluations rerun), or leave the oracle rule out (no --oracle-draws)."
        )
    scores = rows[[*CELL, "draw", "seed", "value"]].rename(columns={"value": "score"})
    return draw_means(scores, expected_seeds)


def oracle_report_rows(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The rows the oracle rule reports: `metric` on the reference set's reporting half, named `metric` (so they
    read like the other rules' rows)."""
    return frame[frame["metric"].eq(half_metric(metric, REPORTING_HALF))].assign(metric=metric)


def select_draws(frame: pd.DataFrame, checkpoint: str, metric: str, oracle: bool = False) -> pd.DataFrame:
    """The draw each rule selects per (task, K, method): columns CELL + rule + draw. Draw 0 is listed as the
    `DEFAULTS` rule. A rule that is not defined for a cell has no row for it. Results with a gap are refused."""
    check_complete(frame, "the results")
    expected_seeds = frame[[*CELL, "draw", "seed"]].drop_duplicates()
    curve = frame[frame["checkpoint"].eq(CURVE)]
    means = draw_means(validation_scores(curve, checkpoint if checkpoint != ORACLE else SELECTED, metric), expected_seeds)
    selections = {
        DEFAULTS: expected_seeds[CELL].drop_duplicates().assign(draw=0),  # every method runs draw 0
        TARGET_VALIDATION: target_validation(means),
        LEAVE_ONE_TASK_OUT: leave_one_task_out(means),
    }
    if oracle:
        selections[ORACLE_DRAW] = best_draw(reference_means(frame, checkpoint, metric, expected_seeds))
    parts = [chosen.assign(rule=rule) for rule, chosen in selections.items() if not chosen.empty]
    if not parts:
        return pd.DataFrame(columns=[*CELL, "rule", "draw"])
    return pd.concat(parts, ignore_index=True)[[*CELL, "rule", "draw"]].astype({"draw": int})


def cross_fitted_draws(frame: pd.DataFrame, checkpoint: str, metric: str) -> pd.DataFrame:
    """Per (task, K, method) and seed: the target-validation draw chosen on the validation scores of the cell's
    other seeds, so that no seed reports a draw it helped choose (a cell with one seed chooses on it). Columns
    CELL + seed + draw."""
    expected_seeds = frame[[*CELL, "draw", "seed"]].drop_duplicates()
    scores = validation_scores(frame[frame["checkpoint"].eq(CURVE)], checkpoint if checkpoint != ORACLE else SELECTED, metric)
    alone = expected_seeds.groupby(CELL)["seed"].transform("nunique").eq(1)  # a run whose cell has no other seed
    parts = []
    for seed in sorted(set(expected_seeds["seed"])):
        choosing = expected_seeds[expected_seeds["seed"].ne(seed) | alone]
        chooser_scores = scores.merge(choosing[[*CELL, "draw", "seed"]], on=[*CELL, "draw", "seed"], how="inner")
        chosen = best_draw(draw_means(chooser_scores, choosing))
        runs = expected_seeds[expected_seeds["seed"].eq(seed)][[*CELL, "draw"]]
        parts.append(chosen.merge(runs, on=[*CELL, "draw"], how="inner").assign(seed=seed))
    if not parts:
        return pd.DataFrame(columns=[*CELL, "seed", "draw"])
    return pd.concat(parts, ignore_index=True)[[*CELL, "seed", "draw"]].astype({"draw": int, "seed": int})


def expected_best_of_n(means: pd.DataFrame, budgets: list[int]) -> pd.DataFrame:
    """Dodge et al. (2019): per cell, the expected best (lowest) mean validation score of n draws taken at random,
    with replacement, from the draws the method ran: sum_i v_(i) [((N - i + 1) / N)^n - ((N - i) / N)^n] over the
    N finite scores sorted ascending. Methods are compared at equal n, whatever number of draws each ran.
    Columns CELL + draws + n + expected."""
    out = []
    for cell, block in means.groupby(CELL, sort=True):
        values = np.sort(block["mean"].to_numpy(dtype=float))
        values = values[np.isfinite(values)]
        total = len(values)
        if total == 0:
            continue
        above = (total - np.arange(total)) / total  # P(one draw is at least v_(i)), i = 1..N
        below = (total - np.arange(1, total + 1)) / total  # P(one draw is at least v_(i+1))
        for n in budgets:
            expected = float(np.sum(values * (above**n - below**n)))
            out.append({**dict(zip(CELL, cell, strict=True)), "draws": total, "n": n, "expected": expected})
    return pd.DataFrame(out, columns=[*CELL, "draws", "n", "expected"])
