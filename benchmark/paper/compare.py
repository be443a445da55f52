"""A run of one's own against reference results (`reports/reference/`): per task, K, method, checkpoint and
metric present in both, the two means over seeds, their difference, and the comparison engine's verdict on it.

Same config, same seeds and a CPU give the same numbers (`identical`: every seed's value equal to 1e-9 relative);
on other hardware or code, differences within the seed spread are expected. Otherwise the comparison engine
(`benchmark.comparison`) decides, with "better"/"worse" read as this run against the reference: paired by seed
where both ran the same seeds (each seed: the same shots and pretraining), else Welch's; "undetermined" with a
single seed on either side; Holm over all cells of one metric, so the chance of any false "better"/"worse" among
hundreds of cells stays at alpha; "equivalent" where TOST puts the difference within the equivalence margin.
A cell that is not identical names the provenance its records differ in (`differs_in`: the feature extractor,
the reference set, sample sizes, code or torch version, scoring threads, device), the likely cause.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.comparison import PAIR_KEY, ComparisonSettings, close_family, compare_one, diverged
from benchmark.results import METRIC_DIRECTIONS
from benchmark.selection import CURVE

CELL = ["task", "shots", "method", "checkpoint", "metric"]
IDENTICAL = "identical"
# What can change a value besides the method and seed, as the records carry it: what differs is named beside a
# cell that is not identical, so that "different" comes with its likely cause.
PROVENANCE = {
    "feature_weights_sha256": "feature extractor (the domain encoder's weights: encoder.threads, its data and settings)",
    "reference_sha256": "reference set",
    "n_real": "reference sample size",
    "n_fake": "generated sample size",
    "code_version": "code version",
    "torch_version": "torch version",
    "torch_threads": "torch threads of the scoring job",
    "device": "device",
}


def provenance_differences(own: pd.DataFrame, reference: pd.DataFrame) -> str:
    """The provenance fields (`PROVENANCE`) whose values differ between two sets of rows, each with both sides'
    values ("" when none differs, or neither side records them)."""
    parts = []
    for field, meaning in PROVENANCE.items():
        if field not in own or field not in reference:
            continue
        mine, theirs = (sorted({str(value) for value in rows[field].dropna()}) for rows in (own, reference))
        if mine and theirs and mine != theirs:
            parts.append(f"{meaning} ({field}): {'/'.join(v[:12] for v in mine)} vs {'/'.join(v[:12] for v in theirs)}")
    return "; ".join(parts)


def compare_results(own: pd.DataFrame, reference: pd.DataFrame, settings: ComparisonSettings) -> pd.DataFrame:
    """The adaptation curve is left out (its cells are per step: the tables' checkpoints summarise it)."""
    own_rows = own[own["checkpoint"].ne(CURVE)]
    reference_rows = reference[reference["checkpoint"].ne(CURVE)]
    key = [column for column in PAIR_KEY if column in own_rows and column in reference_rows]
    shared = own_rows[CELL].drop_duplicates().merge(reference_rows[CELL].drop_duplicates(), on=CELL)
    own_groups, reference_groups = own_rows.groupby(CELL), reference_rows.groupby(CELL)
    out = []
    for cell in shared.itertuples(index=False, name=None):
        mine, theirs = _by_seed(own_groups.get_group(cell), key), _by_seed(reference_groups.get_group(cell), key)
        if mine[0].notna().sum() == 0 or theirs[0].notna().sum() == 0:
            continue  # nothing scored on a side (every seed diverged): no means to compare
        aligned = mine[0].align(theirs[0], join="outer")
        identical = bool(np.allclose(aligned[0].to_numpy(), aligned[1].to_numpy(), rtol=1e-9, atol=0.0, equal_nan=True))  # the same seeds diverged
        better = METRIC_DIRECTIONS.get(cell[-1], "lower")
        statistics = compare_one(aligned[0].to_numpy(), aligned[1].to_numpy(), settings, better, mine[1], theirs[1])
        differs = "" if identical else provenance_differences(own_groups.get_group(cell), reference_groups.get_group(cell))
        out.append({**dict(zip(CELL, cell, strict=True)), **statistics, "identical": identical, "differs_in": differs})
    if not out:
        return pd.DataFrame(columns=[*CELL, "mean", "reference_mean", "difference", "relative_difference", "verdict", "differs_in"])
    frame = pd.DataFrame(out).rename(columns={"versus_mean": "reference_mean", "n": "seeds", "n_versus": "reference_seeds"})
    # Identical cells are no test: they leave the families, and their verdict says what they are.
    tested = frame[~frame["identical"]]
    families = [close_family(family, settings) for _, family in tested.groupby("metric", sort=True)]
    identical = frame[frame["identical"]].drop(columns="sign").assign(verdict=IDENTICAL, p_holm=np.nan, equivalence_p_holm=np.nan)
    frame = pd.concat([*families, identical], ignore_index=True)
    frame["relative_difference"] = (frame["difference"] / frame["reference_mean"].abs()).where(frame["reference_mean"].ne(0))
    return frame.sort_values(CELL, kind="stable").reset_index(drop=True)


def _by_seed(rows: pd.DataFrame, key: list[str]) -> tuple[pd.Series, int]:
    """A cell's values by pair key (NaN where a run diverged) and how many diverged."""
    failed = diverged(rows)
    values = rows.assign(value=rows["value"].where(~failed)).set_index(key)["value"]
    return values, int(failed.sum())
