"""A run of one's own against reference results (`reports/reference/`): per task, K, method, checkpoint and
metric present in both, the two means over seeds, their difference, and whether the seeds tell them apart.

Same config, same seeds and a CPU give the same numbers (`identical`: every seed's value equal to 1e-9 relative);
on other hardware or code, differences within the seed spread (Welch's t-test p >= alpha) are expected, larger
ones are findings to explain.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

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
        p_value = np.nan
        if len(mine) >= 2 and len(theirs) >= 2 and not identical and (mine["value"].std() > 0 or theirs["value"].std() > 0):
            p_value = float(stats.ttest_ind(mine["value"], theirs["value"], equal_var=False).pvalue)
        mean, reference_mean = mine["value"].mean(), theirs["value"].mean()
        out.append({
            **dict(zip(CELL, key, strict=True)), "mean": mean, "reference_mean": reference_mean, "difference": mean - reference_mean,
            "relative_difference": (mean - reference_mean) / abs(reference_mean) if reference_mean else np.nan,
            "seeds": len(mine), "reference_seeds": len(theirs), "identical": identical, "p_value": p_value,
            "verdict": "identical" if identical else ("within seed spread" if not p_value < alpha else "DIFFERENT"),
        })  # fmt: skip
    return pd.DataFrame(out)
