"""How many seeds it takes to resolve a given relative difference in the headline metric between two methods,
paired by seed (each seed: the same K shots and pretraining for both methods), from the seed spread measured.

For a pair of methods on one task and K, the paired differences d_s = KID_A,s - KID_B,s over the seeds both
completed have a standard deviation sd_d. A difference of `effect` (10%) of the pair's mean KID is
delta = effect x mean; the standardised effect delta / sd_d sets the seeds a two-sided paired t-test needs at
level `alpha` to detect it with probability `power` (statsmodels' `TTestPower`). Read the other way: with the
seeds a preset runs, the smallest relative difference resolved at the same level and power. sd_d from 2-3
seeds is itself uncertain: the counts are a planning estimate, not a guarantee.
"""

from __future__ import annotations

import math
import warnings
from itertools import combinations

import pandas as pd
from scipy import stats

from benchmark.results import HEADLINE

MAX_SEEDS = 10_000  # beyond this, "not resolvable in practice"


def _solver():
    from statsmodels.stats.power import TTestPower  # imported here: statsmodels is slow to import

    return TTestPower()


def seeds_needed(standardised_effect: float, alpha: float, power: float) -> float:
    """The fewest seeds (pairs, at least 2) at which a two-sided paired t-test reaches `power`; inf when the effect
    is 0 or needs over `MAX_SEEDS`. A bisection over statsmodels' power function, which rises with the seeds
    (its own `solve_power` fails to converge for large effects)."""
    if not standardised_effect > 0:
        return math.inf
    solver = _solver()

    def reached(seeds: int) -> bool:
        achieved = float(solver.power(effect_size=standardised_effect, nobs=seeds, alpha=alpha, alternative="two-sided"))
        if math.isnan(achieved):  # the noncentral t overflows for very large effects: its normal limit is then exact enough
            shift, critical = standardised_effect * math.sqrt(seeds), stats.norm.isf(alpha / 2)
            achieved = float(stats.norm.sf(critical - shift) + stats.norm.cdf(-critical - shift))
        return achieved >= power

    if not reached(MAX_SEEDS):
        return math.inf
    low, high = 1, MAX_SEEDS  # reached(high) holds; reached(low) is taken as false (one pair has no spread)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if reached(middle) else (middle, high)
    return float(high)


def resolvable_effect(seeds: int, alpha: float, power: float) -> float:
    """The standardised effect a two-sided paired t-test over `seeds` pairs detects at `alpha` with `power`."""
    if seeds < 2:
        return math.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(_solver().solve_power(nobs=seeds, alpha=alpha, power=power, alternative="two-sided"))


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
    relative = spread["sd_difference"] / spread["mean"]
    spread = spread.assign(relative_sd=relative, observed_relative_difference=spread["difference"].abs() / spread["mean"])
    spread["seeds_needed"] = [seeds_needed(effect / value if value > 0 else math.inf, alpha, power) for value in relative]
    # The seeds that would resolve the difference these runs show (0 difference: never).
    spread["seeds_for_observed"] = [
        seeds_needed(observed / value if value > 0 else math.inf, alpha, power)
        for observed, value in zip(spread["observed_relative_difference"], relative, strict=True)
    ]
    if planned_seeds is not None:
        d = resolvable_effect(planned_seeds, alpha, power)
        spread["resolvable_relative_difference"] = d * spread["relative_sd"]
    return spread


def power_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per task and K: the median and the quartiles of the seeds needed over all method pairs."""
    if table.empty:
        return pd.DataFrame(columns=["task", "shots", "pairs_of_methods", "seeds_q25", "seeds_median", "seeds_q75", "relative_sd_median"])
    grouped = table.groupby(["task", "shots"], sort=True)
    summary = grouped["seeds_needed"].quantile([0.25, 0.5, 0.75]).unstack()
    summary.columns = ["seeds_q25", "seeds_median", "seeds_q75"]
    summary["pairs_of_methods"] = grouped.size()
    summary["relative_sd_median"] = grouped["relative_sd"].median()
    return summary.reset_index()[["task", "shots", "pairs_of_methods", "seeds_q25", "seeds_median", "seeds_q75", "relative_sd_median"]]
