"""Which method is best across tasks, and how sure we are: ranks with a Friedman test and a post-hoc test
(autorank), and rliable's aggregate statistics with stratified-bootstrap intervals (scipy).

What a number means:
- A *block* is one (task, K, seed): one draw of K shots with its own training seed. Each method's headline
  score (KID) is ranked within a block (1 = lowest KID); the *mean rank* averages over blocks. The Friedman test
  asks whether any method ranks differently from the others at all; the Nemenyi post-hoc test says which pairs
  differ, and two methods closer than the critical difference (CD) in mean rank are not told apart (joined by a
  bar in the CD diagram). The blocks of one task share its reference set, so the tests speak about these tasks'
  shot draws, not about unseen tasks. Blocks where a method has no score at all are left out, and counted.
- *Normalised KID* of a run is its KID divided by the mean KID of `scratch` (no transfer) on the same task and K:
  below 1 the transfer helped. Its *interquartile mean* (IQM: the mean of the middle 50% of runs, robust to
  outlier runs) over all runs of a method is the aggregate score, with a 95% stratified-bootstrap interval
  (runs resampled within each task and K, as rliable does; percentile interval).
- *Probability of improvement* P(X < Y) (Agarwal et al. 2021, with "better" = lower KID): per task and K the
  probability that a random run of X has a lower KID than a random run of Y (ties count half; the Mann-Whitney
  U statistic over the product of the run counts), averaged over the (task, K) strata; 95% stratified-bootstrap
  interval. 0.5 means no difference; an interval that excludes 0.5 is a resolved difference. A diverged run
  scores +inf (worst) in the IQM and in these comparisons; an interval needs two runs in every stratum.
- Blocks of one task share its reference set, and with seeds as blocks the critical difference is smaller than
  with tasks as blocks (Demsar's convention) by about the square root of the seeds per task: it compares these
  tasks' shot draws, not unseen tasks. A diverged run ranks last in its block.
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
from benchmark.results import HEADLINE, NO_TRANSFER

log = logging.getLogger(__name__)

BLOCK = ["task", "shots", "seed"]
STRATUM = ["task", "shots"]
CONFIDENCE = 0.95
MIN_BLOCKS = 5  # autorank refuses fewer blocks
MIN_METHODS = 3  # Friedman and Nemenyi need three; autorank tests two with Wilcoxon instead


def score_matrix(rows: pd.DataFrame, metric: str = HEADLINE.metric) -> tuple[pd.DataFrame, int]:
    """Blocks x methods of one checkpoint's `metric` over the blocks that ran, complete blocks only, and how many
    blocks were dropped for a missing score. A diverged run ranks last in its block (it is worse than any score:
    dropping its block would flatter the method); a method with no score at all is left out."""
    own = rows[rows["metric"].eq(metric)]
    values = own.assign(value=own["value"].where(~diverged(own), np.inf))
    matrix = values.groupby([*BLOCK, "method"])["value"].first().unstack("method")
    matrix = matrix.loc[:, matrix.notna().any()]  # methods without any score here
    complete = matrix.dropna(axis=0, how="any")
    # Last place, as a finite number: autorank also computes means and medians, which an infinity would spoil.
    finite = complete.replace(np.inf, np.nan)
    worst = (finite.max(axis=1) + finite.abs().max(axis=1) + 1.0).fillna(1.0)  # a block where all diverged: all tied
    complete = complete.apply(lambda column: column.where(np.isfinite(column), worst))
    return complete, len(matrix) - len(complete)


@dataclass(frozen=True)
class RankTest:
    ranks: pd.DataFrame  # per method: mean_rank (1 = best), best first
    omnibus: str  # the test autorank ran (Friedman)
    posthoc: str  # and its post-hoc test (Nemenyi)
    p_value: float
    critical_difference: float | None
    blocks: int
    dropped_blocks: int
    result: object  # autorank's result, for its critical-difference plot


def rank_test(rows: pd.DataFrame, alpha: float = 0.05, metric: str = HEADLINE.metric) -> RankTest | None:
    """Friedman and Nemenyi via autorank on the block x method matrix (lower is better). None with fewer than
    `MIN_METHODS` methods (with two, autorank would run a Wilcoxon test and no post-hoc test) or `MIN_BLOCKS`
    complete blocks (autorank's minimum)."""
    from autorank import autorank  # imported here: it pulls in statsmodels and matplotlib

    matrix, dropped = score_matrix(rows, metric)
    if matrix.shape[1] < MIN_METHODS or matrix.shape[0] < MIN_BLOCKS:
        return None
    printed = io.StringIO()
    # autorank prints its choice of tests (the report states them) and warns about effect sizes and normality tests
    # on constant columns, which the paper does not use.
    with contextlib.redirect_stdout(printed), warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", (RuntimeWarning, UserWarning))
        result = autorank(matrix.reset_index(drop=True), alpha=alpha, verbose=False, order="ascending", force_mode="nonparametric")
    if printed.getvalue().strip():
        log.debug("autorank: %s", " ".join(printed.getvalue().split()))
    ranks = result.rankdf[["meanrank"]].rename(columns={"meanrank": "mean_rank"})
    ranks.index.name = "method"
    return RankTest(
        ranks.reset_index(), result.omnibus, result.posthoc, float(result.pvalue), None if result.cd is None else float(result.cd),
        len(matrix), dropped, result,
    )  # fmt: skip


def normalised_scores(rows: pd.DataFrame, metric: str = HEADLINE.metric, baseline: str = NO_TRANSFER) -> pd.DataFrame:
    """Each run's metric divided by the baseline's mean on the same task and K; a diverged run scores +inf (the
    worst: it counts in the IQM's trimmed quarter and loses every comparison). Strata without a completed
    baseline run, or whose baseline mean is not positive (unbiased KID can dip below 0), are left out: nothing to
    normalise by. Columns: task, shots, seed, method, score."""
    own = rows[rows["metric"].eq(metric)]
    failed = diverged(own)
    values = own[own["value"].notna() | failed][[*BLOCK, "method", "value"]].assign(diverged=failed)
    completed = values[~values["diverged"]]
    reference = completed[completed["method"].eq(baseline)].groupby(STRATUM)["value"].mean().rename("baseline")
    reference = reference[reference > 0]
    values = values.merge(reference.reset_index(), on=STRATUM, how="inner")
    score = (values["value"] / values["baseline"]).where(~values["diverged"], np.inf)
    return values.assign(score=score)[[*BLOCK, "method", "score"]]


def interquartile_mean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    return stats.trim_mean(values, 0.25, axis=axis)


def _pooled_iqm(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
    """IQM of the runs of all strata together (vectorised: scipy passes resamples along the leading axes)."""
    return interquartile_mean(np.concatenate(samples, axis=axis), axis=axis)


def _strata(scores: pd.DataFrame, method: str) -> list[np.ndarray]:
    own = scores[scores["method"].eq(method)]
    return [group["score"].to_numpy() for _, group in own.groupby(STRATUM, sort=True)]


def _bootstrap(samples: list[np.ndarray], statistic, resamples: int, seed: int) -> tuple[float, float]:
    """Percentile interval of `statistic` with every sample resampled on its own (scipy's independent resampling
    of several samples is the stratified bootstrap)."""
    if any(len(sample) < 2 for sample in samples):
        return float("nan"), float("nan")  # a stratum of one run has nothing to resample
    with np.errstate(invalid="ignore"), warnings.catch_warnings():  # a diverged run's +inf: percentiles of inf are inf
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        result = stats.bootstrap(
            samples, statistic, n_resamples=resamples, confidence_level=CONFIDENCE, method="percentile", vectorized=True,
            paired=False, axis=-1, rng=np.random.default_rng(seed),
        )  # fmt: skip
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def aggregate_scores(scores: pd.DataFrame, resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per method: IQM of the normalised scores over all its runs, with its stratified-bootstrap 95% interval.
    Only methods with runs in every stratum are compared (else their IQM would be over other tasks)."""
    strata = scores[STRATUM].drop_duplicates()
    out = []
    for method in sorted(set(scores["method"])):
        samples = _strata(scores, method)
        if len(samples) != len(strata):
            continue
        point = float(_pooled_iqm(*samples))
        low, high = _bootstrap(samples, _pooled_iqm, resamples, seed)
        out.append({"method": method, "iqm": point, "ci_low": low, "ci_high": high, "runs": int(sum(map(len, samples))), "strata": len(samples)})
    return pd.DataFrame(out, columns=["method", "iqm", "ci_low", "ci_high", "runs", "strata"])


def probability_lower(x: list[np.ndarray], y: list[np.ndarray]) -> np.ndarray:
    """rliable's probability of improvement with lower = better: the mean over strata of P(x < y) + P(x = y) / 2.
    Each array holds one stratum's runs along its last axis (leading axes: bootstrap resamples)."""
    per_stratum = []
    for x_runs, y_runs in zip(x, y, strict=True):
        pairs_less = x_runs[..., :, None] < y_runs[..., None, :]
        pairs_equal = x_runs[..., :, None] == y_runs[..., None, :]
        per_stratum.append(pairs_less.mean(axis=(-2, -1)) + pairs_equal.mean(axis=(-2, -1)) / 2)
    return np.mean(per_stratum, axis=0)


def improvement_probabilities(scores: pd.DataFrame, resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """P(X better than Y) for every ordered pair of methods that share all strata, with its 95% interval."""
    strata = scores[STRATUM].drop_duplicates()
    per_method = {method: _strata(scores, method) for method in sorted(set(scores["method"]))}
    per_method = {method: samples for method, samples in per_method.items() if len(samples) == len(strata)}
    out = []
    for x_name, x in per_method.items():
        for y_name, y in per_method.items():
            if x_name == y_name:
                continue
            count = len(x)
            low, high = _bootstrap([*x, *y], lambda *s, count=count, axis=-1: probability_lower(list(s[:count]), list(s[count:])), resamples, seed)
            out.append({"method": x_name, "versus": y_name, "probability": float(probability_lower(x, y)), "ci_low": low, "ci_high": high})
    return pd.DataFrame(out, columns=["method", "versus", "probability", "ci_low", "ci_high"])
