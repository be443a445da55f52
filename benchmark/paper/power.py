"""How many seeds it takes to resolve a given relative difference in the headline metric between two methods,
paired by seed (each seed: the same K shots and pretraining for both methods), from the seed spread measured.

For a pair of methods on one task and K, the paired differences d_s = KID_A,s - KID_B,s over the seeds both
completed have a standard deviation sd_d; relative to the pair's mean KID it is the relative SD. One pair's SD
rests on 1-2 degrees of freedom, so it is pooled over the pairs of a family of methods and over tasks (the
variances weighted by their degrees of freedom); pairs with fewer than 3 seeds give no seed verdict. A difference
of `effect` (10%) of the mean KID, over the pooled relative SD, sets the seeds a two-sided paired t-test needs at
level `alpha` to detect it with probability `power` (the noncentral t distribution, scipy). Every count is given
at the estimate and at the SD's 80% upper confidence bound (chi-square on the pooled degrees of freedom): the
second is what to plan with. Read the other way, the minimum detectable effect (MDE) is the smallest relative
difference that a number of seeds resolves at the same level and power; differences that happened to be observed
are not turned into power (post-hoc power says nothing the p-value does not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from itertools import combinations

import pandas as pd
from scipy import integrate, optimize, stats

from benchmark.results import HEADLINE

MAX_SEEDS = 10_000  # beyond this, "not resolvable in practice"
MIN_PAIRS = 3  # a pair's SD from fewer seeds (1 degree of freedom) is not planned from
UPPER_CONFIDENCE = 0.8  # the one-sided confidence of the SD's upper bound that the counts are also given at
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


@cache  # the same few seed counts for every pair of methods: each root search once
def resolvable_effect(seeds: int, alpha: float, power: float) -> float:
    """The standardised effect a two-sided paired t-test over `seeds` pairs detects at `alpha` with `power`."""
    if seeds < 2:
        return math.inf
    return float(optimize.brentq(lambda effect: paired_power(effect, seeds, alpha) - power, 1e-6, 1e3))


def pair_spread(rows: pd.DataFrame, metric: str = HEADLINE.metric) -> pd.DataFrame:
    """Per task, K and pair of methods with at least `MIN_PAIRS` shared seeds: mean of the pair's metric, sd of the
    paired differences, pairs (seeds)."""
    values = rows[rows["metric"].eq(metric) & rows["value"].notna()]
    out = []
    for (task, shots), block in values.groupby(["task", "shots"], sort=True):
        by_seed = block.pivot_table(index="seed", columns="method", values="value", aggfunc="first")
        for first, second in combinations(sorted(by_seed.columns), 2):
            pair = by_seed[[first, second]].dropna()
            if len(pair) < MIN_PAIRS:
                continue
            difference = pair[first] - pair[second]
            out.append({
                "task": task, "shots": int(shots), "method": first, "versus": second, "pairs": len(pair),
                "mean": float(pair.to_numpy().mean()), "difference": float(difference.mean()), "sd_difference": float(difference.std()),
            })  # fmt: skip
    return pd.DataFrame(out, columns=["task", "shots", "method", "versus", "pairs", "mean", "difference", "sd_difference"])


def power_table(rows: pd.DataFrame, effect: float = 0.1, alpha: float = 0.05, power: float = 0.8) -> pd.DataFrame:
    """Per pair of methods (task, K) with `MIN_PAIRS` seeds or more: the relative sd of the paired differences
    (sd_d / mean; NaN where the mean KID is not positive: unbiased KID can dip below 0), and the minimum detectable
    relative difference at the seeds it ran (`mde_at_pairs`)."""
    spread = pair_spread(rows)
    relative = (spread["sd_difference"] / spread["mean"]).where(spread["mean"] > 0)
    spread = spread.assign(relative_sd=relative)
    spread["mde_at_pairs"] = [resolvable_effect(int(n), alpha, power) * value for n, value in zip(spread["pairs"], relative, strict=True)]
    return spread


@dataclass(frozen=True)
class PooledSpread:
    """A family's relative SD pooled over its pairs and tasks, with its degrees of freedom and upper bound."""

    relative_sd: float
    df: int
    upper: float  # the one-sided `UPPER_CONFIDENCE` upper confidence bound
    pairs_of_methods: int
    tasks: int


def pooled_spread(table: pd.DataFrame) -> PooledSpread | None:
    """sqrt(sum (n_i - 1) rsd_i^2 / sum (n_i - 1)) over the rows of `table` with a defined relative SD; the upper
    bound rsd x sqrt(df / chi2_{1 - confidence}(df)). None where no row has one."""
    usable = table[table["relative_sd"].notna()]
    if usable.empty:
        return None
    dfs = usable["pairs"].to_numpy() - 1
    df = int(dfs.sum())
    pooled = math.sqrt(float((dfs * usable["relative_sd"].to_numpy() ** 2).sum()) / df)
    upper = pooled * math.sqrt(df / float(stats.chi2.ppf(1 - UPPER_CONFIDENCE, df)))
    return PooledSpread(pooled, df, upper, len(usable[["method", "versus"]].drop_duplicates()), usable["task"].nunique())


def family_power(table: pd.DataFrame, effect: float, alpha: float, power: float, seed_counts: list[int]) -> dict | None:
    """For one family's pairs: the pooled relative SD and its upper bound, the seeds needed for `effect` at both, and
    the MDE at each of `seed_counts` at both. None where nothing can be pooled."""
    pooled = pooled_spread(table)
    if pooled is None:
        return None
    out = {
        "relative_sd": pooled.relative_sd, "relative_sd_upper": pooled.upper, "df": pooled.df,
        "pairs_of_methods": pooled.pairs_of_methods, "tasks": pooled.tasks,
        "seeds_needed": seeds_needed(_standardised(effect, pooled.relative_sd), alpha, power),
        "seeds_needed_upper": seeds_needed(_standardised(effect, pooled.upper), alpha, power),
    }  # fmt: skip
    for count in seed_counts:
        d = resolvable_effect(count, alpha, power)
        out[f"mde_{count}_seeds"], out[f"mde_{count}_seeds_upper"] = d * pooled.relative_sd, d * pooled.upper
    return out


def _standardised(relative_difference: float, relative_sd: float) -> float:
    """A relative difference in units of the paired differences' relative sd: NaN where the sd is undefined; with no
    spread at all, any nonzero difference is resolved (inf) and a zero one never (0)."""
    if pd.isna(relative_sd) or pd.isna(relative_difference):
        return math.nan
    if relative_sd == 0:
        return math.inf if relative_difference > 0 else 0.0
    return relative_difference / relative_sd
