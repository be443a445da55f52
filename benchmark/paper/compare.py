"""A run of one's own against reference results (`reports/reference/`): per task, K, method, checkpoint and
metric present in both, the two means over seeds, their difference, and whether the seeds tell them apart.

Same config, same seeds and a CPU give the same numbers (`identical`: every seed's value equal to 1e-9 relative);
on other hardware or code, differences within the seed spread are expected, larger ones are findings to explain.
The test is paired by seed where both ran the same seeds (each seed: the same shots and pretraining), else
Welch's; "undetermined" with a single seed on either side. Over hundreds of
cells about alpha (5%) of them are DIFFERENT by chance alone: read them as leads, not verdicts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from benchmark.paper.tables import paired_p_value
from benchmark.selection import CURVE

CELL = ["task", "shots", "method", "checkpoint", "metric"]


def compare_results(own: pd.DataFrame, reference: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """The adaptation curve is left out (its cells are per step: the tables' checkpoints summarise it)."""
    own_values = own[own["value"].notna() & own["checkpoint"].ne(CURVE)]
    reference_values = reference[reference["value"].notna() & reference["checkpoint"].ne(CURVE)]
    out = []
    shared = own_values[CELL].drop_duplicates().merge(reference_values[CELL].drop_duplicates(), on=CELL)
    own_groups, reference_groups = own_values.groupby(CELL), reference_values.groupby(CELL)
    for key in shared.itertuples(index=False, name=None):
        mine, theirs = own_groups.get_group(key), reference_groups.get_group(key)
        by_seed = mine.set_index("seed")["value"].align(theirs.set_index("seed")["value"], join="outer")
        identical = bool(np.allclose(by_seed[0].to_numpy(), by_seed[1].to_numpy(), rtol=1e-9, atol=0.0, equal_nan=False))
        p_value = np.nan if identical else _p_value(mine.set_index("seed")["value"], theirs.set_index("seed")["value"])
        mean, reference_mean = mine["value"].mean(), theirs["value"].mean()
        out.append({
            **dict(zip(CELL, key, strict=True)), "mean": mean, "reference_mean": reference_mean, "difference": mean - reference_mean,
            "relative_difference": (mean - reference_mean) / abs(reference_mean) if reference_mean else np.nan,
            "seeds": len(mine), "reference_seeds": len(theirs), "identical": identical, "p_value": p_value,
            "verdict": "identical" if identical else ("undetermined" if np.isnan(p_value) else "DIFFERENT" if p_value < alpha else "within seed spread"),
        })  # fmt: skip
    return pd.DataFrame(out)


def _p_value(mine: pd.Series, theirs: pd.Series) -> float:
    """Paired t-test over the seeds when both sides ran the same ones, else Welch's; NaN with one seed. Without any
    spread, a difference is systematic (p = 0) and equality is no difference (p = 1)."""
    if len(mine) < 2 or len(theirs) < 2:
        return np.nan
    if sorted(mine.index) == sorted(theirs.index):
        mine, theirs = mine.sort_index(), theirs.sort_index()
        difference = mine - theirs
        if difference.std() == 0:
            return 0.0 if difference.mean() != 0 else 1.0
        return paired_p_value(mine, theirs)
    if mine.std() == 0 and theirs.std() == 0:
        return 0.0 if mine.mean() != theirs.mean() else 1.0
    return float(stats.ttest_ind(mine, theirs, equal_var=False).pvalue)
