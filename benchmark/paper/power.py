"""How many seeds it takes to resolve a given relative difference in the headline metric between two methods,
paired by seed (each seed: the same K shots and pretraining for both methods), from the seed spread measured.

For a pair of methods on one task and K, the paired differences d_s = KID_A,s - KID_B,s over the seeds both
completed have a standard deviation sd_d. A difference of `effect` (10%) of the pair's mean KID is
delta = effect x mean; the standardised effect delta / sd_d sets the seeds a two-sided paired t-test needs at
level `alpha` to detect it with probability `power` (the noncentral t distribution, scipy). Read the other way: with the
seeds a preset runs, the smallest relative difference resolved at the same level and power. sd_d from 2-3
seeds is itself uncertain: the counts are a planning estimate, not a guarantee.
"""

from __future__ import annotations

import math
from itertools import combinations

import pandas as pd
from scipy import integrate, optimize, stats

from benchmark.results import HEADLINE

MAX_SEEDS = 10_000  # beyond this, "not resolvable in practice"
LARGE_DF = 500  # t with more degrees of freedom is normal to within 0.1% of its quantiles


def paired_power(standardised_effect: float, seeds: int, alpha: float) -> float:
    """The probability that a two-sided paired t-test over `seeds` pairs rejects at level `alpha` when the true
    mean difference is `standardised_effect` standard deviations of the differences: the noncentral t
    distribution's tails beyond the critical value (df = seeds - 1, noncentrality = effect x sqrt(seeds)).
    Where scipy's noncentral t gives NaN (very large noncentralities), the same probability is integrated over
    the chi-square distribution of the sample variance."""
    df, shift = seeds - 1, standardised_effect * math.sqrt(seeds)
    critical = float(stats.t.isf(alpha / 2, df))
    if df > LARGE_DF:  # scipy's noncentral t loses its tails there (0 instead of 1); the normal limit is exact enough
        return float(stats.norm.sf(critical - shift) + stats.norm.cdf(-critical - shift))
    achieved = float(stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift))
    if math.isnan(achieved):
        # T = (Z + shift) / sqrt(V / df) with V ~ chi2(df): P(|T| > c) = E_V[P(Z > c s - shift) + P(Z < -c s - shift)]
        def tails(v: float) -> float:
            scale = critical * math.sqrt(v / df)
            return (stats.norm.sf(scale - shift) + stats.norm.cdf(-scale - shift)) * stats.chi2.pdf(v, df)

        achieved = float(integrate.quad(tails, 0, math.inf, limit=200)[0])
    return achieved


def seeds_needed(standardised_effect: float, alpha: float, power: float) -> float:
    """The fewest seeds (pairs, at least 2) at which a two-sided paired t-test reaches `power`; inf when the effect
    is 0 or needs over `MAX_SEEDS`, NaN when it is undefined (NaN)."""
    if math.isnan(standardised_effect):
        return math.nan
    if not standardised_effect > 0:
        return math.inf
    # Double until reached (the power rises with the seeds), then bisect between the last two counts.
    low, high = 1, 2  # one pair has no spread: never reached at `low`
    while paired_power(standardised_effect, high, alpha) < power:
        if high >= MAX_SEEDS:
            return math.inf
        low, high = high, min(2 * high, MAX_SEEDS)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if paired_power(standardised_effect, middle, alpha) >= power else (middle, high)
    return float(high)


def resolvable_effect(seeds: int, alpha: float, power: float) -> float:
    """The standardised effect a two-sided paired t-test over `seeds` pairs detects at `alpha` with `power`."""
    if seeds < 2:
        return math.inf
    return float(optimize.brentq(lambda effect: paired_power(effect, seeds, alpha) - power, 1e-6, 1e3))


def pair_spread(rows: pd.DataFrame, metric: str = HEADLINE.metric) -> pd.DataFrame:
    """Per task, K and pair of methods: mean of the pair's metric, sd of the paired differences, pairs (seeds)."""
    values = rows[rows["metric"].eq(metric) & rows["value"].notna()]
    out = []
    for (task, shots), block in values.groupby(["task", "shots"], sort=True):
        by_seed = block.pivot_table(index="seed", columns="method", values="value", aggfunc="first")
        for first, second in combinations(sorted(by_seed.columns), 2):
            pair = by_seed[[first, second]].dropna()
            if len(pair) < 2:
                continue
            difference = pair[first] - pair[second]
            out.append({
                "task": task, "shots": int(shots), "method": first, "versus": second, "pairs": len(pair),
                "mean": float(pair.to_numpy().mean()), "difference": float(difference.mean()), "sd_difference": float(difference.std()),
            })  # fmt: skip
    return pd.DataFrame(out, columns=["task", "shots", "method", "versus", "pairs", "mean", "difference", "sd_difference"])


def power_table(rows: pd.DataFrame, effect: float = 0.1, alpha: float = 0.05, power: float = 0.8, planned_seeds: int | None = None) -> pd.DataFrame:
    """Per pair of methods (task, K): relative sd of the paired differences (sd_d / mean), the seeds needed to
    resolve a relative difference `effect` and to resolve the difference observed, and with `planned_seeds` the
    smallest relative difference those seeds resolve."""
    spread = pair_spread(rows)
    # Relative to the pair's mean KID; undefined (NaN) where that mean is not positive (unbiased KID can dip below 0).
    relative = (spread["sd_difference"] / spread["mean"]).where(spread["mean"] > 0)
    spread = spread.assign(relative_sd=relative, observed_relative_difference=spread["difference"].abs() / spread["mean"])
    spread["seeds_needed"] = [seeds_needed(_standardised(effect, value), alpha, power) for value in relative]
    # The seeds that would resolve the difference these runs show (a zero difference: never).
    spread["seeds_for_observed"] = [
        seeds_needed(_standardised(observed, value), alpha, power)
        for observed, value in zip(spread["observed_relative_difference"], relative, strict=True)
    ]
    if planned_seeds is not None:
        d = resolvable_effect(planned_seeds, alpha, power)
        spread["resolvable_relative_difference"] = d * spread["relative_sd"]
    return spread


def _standardised(relative_difference: float, relative_sd: float) -> float:
    """A relative difference in units of the paired differences' relative sd: NaN where the sd is undefined; with no
    spread at all, any nonzero difference is resolved (inf) and a zero one never (0)."""
    if pd.isna(relative_sd) or pd.isna(relative_difference):
        return math.nan
    if relative_sd == 0:
        return math.inf if relative_difference > 0 else 0.0
    return relative_difference / relative_sd


def power_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per task and K: the median and the quartiles of the seeds needed over all method pairs."""
    if table.empty:
        return pd.DataFrame(columns=["task", "shots", "pairs_of_methods", "seeds_q25", "seeds_median", "seeds_q75", "relative_sd_median"])
    grouped = table.groupby(["task", "shots"], sort=True)
    # "higher": a quartile is one of the pairs' counts (never a fraction of a seed, and inf where pairs cannot be resolved)
    summary = grouped["seeds_needed"].quantile([0.25, 0.5, 0.75], interpolation="higher").unstack()
    summary.columns = ["seeds_q25", "seeds_median", "seeds_q75"]
    summary["pairs_of_methods"] = grouped.size()
    summary["relative_sd_median"] = grouped["relative_sd"].median()
    return summary.reset_index()[["task", "shots", "pairs_of_methods", "seeds_q25", "seeds_median", "seeds_q75", "relative_sd_median"]]
