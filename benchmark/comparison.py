"""The comparison engine: every "better", "worse", "equivalent" or "undetermined" that any output prints comes
from here (`results.md`, the paper tables and their daggers, the comparisons with scratch and finetune, the
comparison with reference results, the reports' numbers).

One comparison is a method against another (`versus`) on one metric, task, K and checkpoint:
- *Paired by seed* where both completed the same seeds (at least 2 shared): seed i of every method trains on the
  same K shots from the same pretraining and is scored with the same latent codes, so the per-seed differences
  d_i remove what the seeds share. Difference: the mean of d_i; 95% CI: mean +/- t(n-1) x sd(d) / sqrt(n);
  p: the two-sided paired t-test.
- *Welch* where the seeds do not match (fewer than 2 shared, each side 2 or more): the difference of means, its
  own standard error and the Welch-Satterthwaite degrees of freedom.
- *None* below that (one seed on a side): no test; the verdict is "undetermined".
- *Holm* within each family (one table's comparisons): the adjusted p-values control the chance of any false
  "better"/"worse" in the table at `alpha`; the number of tests and the level are printed beside the verdicts.
- *Equivalence* (TOST, two one-sided tests) against a margin declared in the config (`paper.equivalence_margin`,
  a fraction of the compared-against method's mean): "equivalent" means the whole (1 - 2 alpha) interval of the
  difference lies within +/- the margin, Holm-adjusted over the family like the difference tests. So "tied" is a
  finding; "undetermined" is an absence of evidence either way.

Verdicts: "better"/"worse" where the Holm-adjusted p < alpha (direction from the metric's `better`), else
"equivalent" where the Holm-adjusted TOST p < alpha, else "undetermined". A diverged seed has no score; a side
with diverged seeds can never be called better nor equivalent (its completed seeds would flatter it), while a
failure on the other side leaves a "better" standing. Without spread in the differences, a nonzero difference is
systematic (p = 0) and a zero one is no difference (p = 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special  # Student t tails and quantiles (stdtr, stdtrit): scipy.stats.t without its overhead

from benchmark.errors import BenchmarkError

BETTER, WORSE, EQUIVALENT, UNDETERMINED = "better", "worse", "equivalent", "undetermined"
VERDICTS = (BETTER, WORSE, EQUIVALENT, UNDETERMINED)
PAIRED, WELCH, NO_TEST = "paired", "Welch", "none"
# What pairs a seed of one method with a seed of another: the same shots, pretraining and training seed.
PAIR_KEY = ("seed", "split_draw", "pretrain_seed")
COLUMNS = [
    "method", "versus", "design", "n", "n_versus", "pairs", "diverged", "diverged_versus", "mean", "versus_mean",
    "difference", "ci_low", "ci_high", "df", "p_value", "margin", "equivalence_p", "tests", "p_holm", "equivalence_p_holm",
    "alpha", "verdict",
]  # fmt: skip


@dataclass(frozen=True)
class ComparisonSettings:
    """The level of every test and the equivalence margin (a fraction of the compared-against mean)."""

    alpha: float = 0.05
    equivalence_margin: float = 0.1


@dataclass(frozen=True)
class DifferenceStatistics:
    """What a test of one difference rests on: the design, the difference, its standard error and df."""

    design: str
    difference: float
    standard_error: float
    df: float
    pairs: int


def difference_statistics(method: np.ndarray, versus: np.ndarray) -> DifferenceStatistics:
    """The statistics of method - versus from their per-seed values, aligned by seed (NaN: no score): paired over
    the seeds both completed where there are 2 or more, else Welch's, else no test."""
    method, versus = np.asarray(method, dtype=float), np.asarray(versus, dtype=float)
    shared = ~np.isnan(method) & ~np.isnan(versus)
    if shared.sum() >= 2:
        differences = method[shared] - versus[shared]
        n = len(differences)
        return DifferenceStatistics(PAIRED, float(differences.mean()), float(differences.std(ddof=1) / math.sqrt(n)), n - 1.0, n)
    a, b = method[~np.isnan(method)], versus[~np.isnan(versus)]
    if len(a) >= 2 and len(b) >= 2:
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        # Welch-Satterthwaite; with no spread on either side the df do not matter (p is 0 or 1 below)
        df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if va + vb > 0 else float(len(a) + len(b) - 2)
        return DifferenceStatistics(WELCH, float(a.mean() - b.mean()), math.sqrt(va + vb), float(df), int(shared.sum()))
    difference = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
    return DifferenceStatistics(NO_TEST, difference, math.nan, math.nan, int(shared.sum()))


def two_sided_p(statistics: DifferenceStatistics) -> float:
    if statistics.design == NO_TEST:
        return math.nan
    if not statistics.standard_error > 0:
        return 0.0 if statistics.difference != 0 else 1.0
    return float(2 * special.stdtr(statistics.df, -abs(statistics.difference) / statistics.standard_error))


def equivalence_p(statistics: DifferenceStatistics, margin: float) -> float:
    """TOST: the larger of the two one-sided p-values of difference > -margin and difference < +margin."""
    if statistics.design == NO_TEST or not margin > 0:
        return math.nan
    if not statistics.standard_error > 0:
        return 0.0 if abs(statistics.difference) < margin else 1.0
    se, df = statistics.standard_error, statistics.df
    lower = special.stdtr(df, -(statistics.difference + margin) / se)  # P(T > t) of difference > -margin
    upper = special.stdtr(df, (statistics.difference - margin) / se)  # P(T < t) of difference < +margin
    return float(max(lower, upper))


def confidence_interval(statistics: DifferenceStatistics, level: float = 0.95) -> tuple[float, float]:
    if statistics.design == NO_TEST:
        return math.nan, math.nan
    half = float(special.stdtrit(statistics.df, 0.5 + level / 2)) * statistics.standard_error if statistics.standard_error > 0 else 0.0
    return statistics.difference - half, statistics.difference + half


def mean_interval(mean: pd.Series, std: pd.Series, n: pd.Series, level: float = 0.95) -> tuple[pd.Series, pd.Series]:
    """The t-interval of each mean (NaN with fewer than 2 seeds): a description of one method, not a comparison."""
    half = special.stdtrit(np.maximum(n - 1, 1), 0.5 + level / 2) * std / np.sqrt(n)
    half = half.where(n >= 2)
    return mean - half, mean + half


def holm(p_values: list[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment; NaN (no test) stays NaN and does not count as a test."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m, running = len(order), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def _badness(values: np.ndarray, better: str) -> np.ndarray:
    """Values turned so that lower is better: the direction every verdict is read in."""
    return {"lower": values, "higher": -values, "~1": np.abs(values - 1)}[better]


def diverged(rows: pd.DataFrame) -> pd.Series:
    """Which rows record a diverged run (rows without a status column: none)."""
    return rows["status"].eq("diverged") if "status" in rows else pd.Series(False, index=rows.index)


@dataclass(frozen=True)
class SeedValues:
    """One metric's per-seed values: pair key x method (NaN: no score), and which cells are diverged runs."""

    values: pd.DataFrame
    diverged: pd.DataFrame

    def methods(self) -> list[str]:
        return list(self.values.columns)


def seed_values(rows: pd.DataFrame, metric: str) -> SeedValues:
    """The per-seed values of `metric` in `rows` (one task, K and checkpoint), pivoted by the pair key."""
    own = rows[rows["metric"].eq(metric)]
    key = [column for column in PAIR_KEY if column in own]
    failed = diverged(own)
    duplicated = own.duplicated([*key, "method"], keep=False)
    if duplicated.any():
        # One run counted twice would shrink every spread: refuse instead of averaging.
        example = own[duplicated].iloc[0]
        raise BenchmarkError(
            f"{example['method']} has more than one {metric} value for {dict(example[key])} ({example['task']}, K = {example['shots']}): "
            "a run counted twice. Collect each run's metrics.json once (ganbench collect) and rerun the tables."
        )
    values = own.assign(value=own["value"].where(~failed)).pivot_table(index=key, columns="method", values="value", aggfunc="first", dropna=False)
    failures = own.assign(failed=failed).pivot_table(index=key, columns="method", values="failed", aggfunc="any", dropna=False)
    return SeedValues(values, failures.reindex_like(values).fillna(False).astype(bool))


def compare_one(
    a: np.ndarray, b: np.ndarray, settings: ComparisonSettings, better: str = "lower", diverged: int = 0, diverged_versus: int = 0
) -> dict:
    """The statistics of one comparison, a against b, from their per-seed values aligned by seed (NaN where a run
    has no score); the verdict comes with its family (`close_family`)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    statistics = difference_statistics(_badness(a, better), _badness(b, better))
    raw = difference_statistics(a, b)  # the difference and its interval in the metric's own units
    completed_a, completed_b = a[~np.isnan(a)], b[~np.isnan(b)]
    reference_mean = float(completed_b.mean()) if len(completed_b) else math.nan
    margin = settings.equivalence_margin * abs(reference_mean) if not math.isnan(reference_mean) else math.nan
    low, high = confidence_interval(raw)
    return {
        "design": statistics.design, "n": len(completed_a), "n_versus": len(completed_b), "pairs": statistics.pairs,
        "diverged": int(diverged), "diverged_versus": int(diverged_versus), "mean": float(completed_a.mean()) if len(completed_a) else math.nan,
        "versus_mean": reference_mean, "difference": raw.difference, "ci_low": low, "ci_high": high, "df": statistics.df,
        "p_value": two_sided_p(statistics), "margin": margin, "equivalence_p": equivalence_p(statistics, margin),
        "sign": math.copysign(1.0, statistics.difference) if statistics.difference else 0.0,
    }  # fmt: skip


def close_family(frame: pd.DataFrame, settings: ComparisonSettings) -> pd.DataFrame:
    """Rows of `compare_one` that form one family: Holm-adjusted together, each with its verdict."""
    frame = frame.copy()
    frame["p_holm"] = holm(frame["p_value"].to_numpy())
    frame["equivalence_p_holm"] = holm(frame["equivalence_p"].to_numpy())
    frame["tests"] = int(frame["p_value"].notna().sum())
    frame["alpha"] = settings.alpha
    frame["verdict"] = [_verdict(row, settings.alpha) for row in frame.to_dict("records")]
    return frame.drop(columns="sign")


def compare_pairs(seeds: SeedValues, pairs: list[tuple[str, str]], settings: ComparisonSettings, better: str = "lower") -> pd.DataFrame:
    """One family of comparisons (method, versus) on one metric, Holm-adjusted together: `COLUMNS`."""
    out = [
        {"method": method, "versus": versus, **compare_one(seeds.values[method].to_numpy(), seeds.values[versus].to_numpy(), settings,
                                                           better, seeds.diverged[method].sum(), seeds.diverged[versus].sum())}
        for method, versus in pairs
    ]  # fmt: skip
    if not out:
        return pd.DataFrame(columns=COLUMNS)
    return close_family(pd.DataFrame(out), settings)[COLUMNS]


def _verdict(row: dict, alpha: float) -> str:
    if row["design"] == NO_TEST:
        return UNDETERMINED
    if row["p_holm"] < alpha and row["sign"] != 0:
        verdict = BETTER if row["sign"] < 0 else WORSE
        # A side's failures only count against it: they cannot make it the better one.
        if (verdict == BETTER and row["diverged"]) or (verdict == WORSE and row["diverged_versus"]):
            return UNDETERMINED
        return verdict
    if row["equivalence_p_holm"] < alpha and not (row["diverged"] or row["diverged_versus"]):
        return EQUIVALENT
    return UNDETERMINED


def against(seeds: SeedValues, versus: str, settings: ComparisonSettings, better: str = "lower", methods: list[str] | None = None) -> pd.DataFrame:
    """Every other method (or `methods`) against `versus`: one family. Empty when `versus` has no runs here."""
    if versus not in seeds.values:
        return pd.DataFrame(columns=COLUMNS)
    others = [method for method in (methods or seeds.methods()) if method != versus and method in seeds.values]
    return compare_pairs(seeds, [(method, versus) for method in others], settings, better)


def difference_text(row: pd.Series, scale: float = 1.0) -> str:
    """ "-12.3 [-30.1, 5.5], p_Holm 0.41: undetermined" (paired), "(Welch)" where unpaired, or why no test ran."""
    if row["design"] == NO_TEST:
        if row["n"] == 0:
            return "diverged" if row["diverged"] else "n/a"
        return f"{_signed(row['difference'] * scale)} (one seed: no test): {UNDETERMINED}"
    low, high = row["ci_low"] * scale, row["ci_high"] * scale
    design = "" if row["design"] == PAIRED else f" ({row['design']})"
    failed = f", {int(row['diverged'])} diverged" if row["diverged"] else ""
    tost = f", TOST p_Holm {p_text(row['equivalence_p_holm'])}" if row["verdict"] == EQUIVALENT else ""
    return f"{_signed(row['difference'] * scale)} [{_signed(low)}, {_signed(high)}]{design}, p_Holm {p_text(row['p_holm'])}{tost}{failed}: {row['verdict']}"


def p_text(p: float) -> str:
    if pd.isna(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.2g}" if p < 0.995 else "1"


def _signed(value: float) -> str:
    if pd.isna(value):
        return "n/a"
    text = f"{value:+.1f}" if abs(value) >= 100 else f"{value:+.3g}"
    return text.replace("+-", "-")


def family_note(frame: pd.DataFrame, settings: ComparisonSettings) -> str:
    """What every table of verdicts prints beside them: tests in the family, the level, the margin."""
    tests = int(frame["tests"].iloc[0]) if len(frame) else 0
    return (
        f"Holm over the {tests} test{'s' if tests != 1 else ''} of this table at alpha = {settings.alpha:g}; equivalent: "
        f"TOST within +/- {settings.equivalence_margin:.0%} of the compared-against mean"
    )
