"""Paper outputs (benchmark/paper/): the renderer on a committed fixture gives exactly the expected Markdown and
LaTeX, the statistics agree with independent computations, and the figures are made and not empty.

The fixture (`tests/fixtures/paper/results.csv`) is a slice of a real medical-preset run (4 methods, 2 tasks,
3 seeds), with three defects put in on purpose: freeze_d's seed 2 on the rare-class task diverged, l2sp has no
precision on fashion_to_xray, and scratch's seed 1 has no final-checkpoint metrics at all on fashion_to_xray.
Regenerate the expected files after an intended change with GANBENCH_WRITE_GOLDEN=1 and review their diff.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from benchmark import comparison
from benchmark.errors import BenchmarkError
from benchmark.paper import aggregate, power
from benchmark.paper.compare import compare_results
from benchmark.paper.inputs import read_results_folder
from benchmark.paper.render import render_paper
from benchmark.paper.tables import build_table, column_decimals, mark_best, seed_statistics, versus_comparisons
from benchmark.results import MetricColumn, collect_training
from benchmark.settings import PaperSettings
from conftest import REPO, run_cli

FIXTURE = REPO / "tests" / "fixtures" / "paper"
EXPECTED = FIXTURE / "expected"
WRITE = os.environ.get("GANBENCH_WRITE_GOLDEN") == "1"
SETTINGS = PaperSettings.from_json('{"bootstrap_resamples": 500}')
COMPARISON = SETTINGS.comparison()


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("paper") / "paper"
    render_paper(FIXTURE, output, SETTINGS)
    return output


def test_tables_match_the_golden_files(rendered):
    names = sorted(path.name for path in (rendered / "tables").iterdir())
    assert len(names) == 16  # 2 tasks x 2 checkpoints x 2 groups, .md and .tex
    if WRITE:
        EXPECTED.mkdir(exist_ok=True)
        for name in names:
            (EXPECTED / name).write_text((rendered / "tables" / name).read_text())
    assert sorted(path.name for path in EXPECTED.iterdir()) == names
    for name in names:
        assert (rendered / "tables" / name).read_text() == (EXPECTED / name).read_text(), name


def test_missing_and_diverged_show_as_such_never_as_zero(rendered):
    rare = (rendered / "tables" / "xray_normal_to_pneumonia_k10_final_fidelity.md").read_text()
    freeze_d = next(line for line in rare.splitlines() if line.startswith("| freeze_d"))
    assert "2 + 1 diverged" in freeze_d  # its mean is over the 2 seeds that completed, the failure counted beside
    assert "**" not in freeze_d and "\u2020" not in freeze_d  # never best nor tied: its mean leaves a failure out
    fashion = (rendered / "tables" / "fashion_to_xray_k10_final_fidelity.md").read_text()
    l2sp = [cell.strip() for cell in next(line for line in fashion.splitlines() if line.startswith("| l2sp")).split("|")]
    header = [cell.strip() for cell in fashion.splitlines()[2].split("|")]
    assert l2sp[header.index("precision \u2191 [domain encoder]")] == "n/a"
    scratch = next(line for line in fashion.splitlines() if line.startswith("| scratch"))
    assert scratch.split("|")[header.index("n")].strip() == "2"  # the seed without metrics is missing, not a zero
    numbers = pd.read_csv(rendered / "tables.csv")
    assert not ((numbers["method"] == "l2sp") & (numbers["metric"] == "precision") & numbers["table"].str.startswith("fashion")).any()


def test_latex_is_booktabs_and_compiles(rendered, tmp_path):
    """Every .tex table is a booktabs table; with a TeX engine (`.ci/run` installs Debian's texlive-latex-base and
    texlive-latex-recommended) all of them compile in one document."""
    tables = sorted((rendered / "tables").glob("*.tex"))
    for table in tables:
        text = table.read_text()
        assert text.count(r"\toprule") == text.count(r"\midrule") == text.count(r"\bottomrule") == 1
        assert r"\begin{tabular}" in text and r"\end{table}" in text and "freeze\\_d" in text
    document = tmp_path / "tables.tex"
    inputs = "\n".join(rf"\input{{{table}}}" for table in tables)
    document.write_text(
        rf"\documentclass{{article}}\usepackage{{booktabs}}\usepackage[margin=1cm,landscape]{{geometry}}\begin{{document}}{inputs}\end{{document}}"
    )
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (apt-get install texlive-latex-base texlive-latex-recommended); structure checked above")
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", document.name], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
    assert (tmp_path / "tables.pdf").stat().st_size > 10_000


def test_figures_are_made_and_not_empty(rendered):
    figures = rendered / "figures"
    names = {path.stem for path in figures.glob("*.png")}
    # Two tasks: no critical-difference diagram, and one line that says why. One K: no metric-vs-K figure.
    assert not any(name.startswith(("critical_difference", "kid_vs_k")) for name in names)
    assert "No cross-task verdict: 2 tasks (fashion_to_xray, xray_normal_to_pneumonia)" in (rendered / "paper.md").read_text()
    assert {f"adaptation_curve_{task}_k10" for task in ("fashion_to_xray", "xray_normal_to_pneumonia")} <= names
    for png in figures.glob("*.png"):
        pixels = np.asarray(Image.open(png).convert("L"))
        assert pixels.shape[0] > 100 and pixels.std() > 5, png.name  # not blank
        assert png.with_suffix(".pdf").stat().st_size > 1000


def long_rows(values: dict[str, dict[str, list[float]]]) -> pd.DataFrame:
    """metric -> method -> per-seed values, as rows of one task, K and checkpoint."""
    return pd.DataFrame(
        [{"method": m, "metric": metric, "seed": s, "value": v, "status": "completed"}
         for metric, by_method in values.items() for m, seeds in by_method.items() for s, v in enumerate(seeds)]
    )  # fmt: skip


def test_bold_follows_each_metric_direction_and_daggers_follow_the_engine():
    """A wrong direction (e.g. bolding the lowest precision) fails here; b scatters around a (paired differences
    0.05, 0, 0.05: undetermined), so it carries a dagger, while c is 2 worse on every seed."""
    rows = long_rows({
        "kid": {"a": [1.0, 1.1, 1.2], "b": [1.05, 1.1, 1.25], "c": [3.0, 3.1, 3.2]},
        "precision": {"a": [1.0, 1.1, 1.2], "b": [1.05, 1.1, 1.25], "c": [3.0, 3.1, 3.2]},
        "density": {"a": [0.4, 0.5, 0.6], "b": [1.2, 1.3, 1.4], "c": [3.0, 3.1, 3.2]},  # closest to 1: b, neither end
    })  # fmt: skip
    statistics = seed_statistics(rows)
    kid = mark_best(statistics, MetricColumn("kid", "KID"), rows, COMPARISON).set_index("method")
    assert kid.loc["a", "best"] and kid.loc["b", "tied"] and not kid.loc["c", "tied"]
    precision = mark_best(statistics, MetricColumn("precision", "p", better="higher"), rows, COMPARISON).set_index("method")
    assert precision.loc["c", "best"] and not precision.loc["a", "best"]
    density = mark_best(statistics, MetricColumn("density", "d", better="~1"), rows, COMPARISON).set_index("method")
    assert density.loc["b", "best"] and not density["best"].drop("b").any()
    interval = stats.t.ppf(0.975, 2) * 0.1 / np.sqrt(3)
    assert kid.loc["a", "ci_high"] == pytest.approx(1.1 + interval)


def test_ties_follow_the_paired_engine_and_an_unpaired_rule_fails(monkeypatch):
    """Seed-to-seed spread that both methods share cancels in a paired test: b is worse than a by exactly 0.1 on
    every seed, so it is not tied although their 95% intervals overlap widely; c's differences scatter around 0
    and it is tied. Methods with the same best mean are all bold. An unpaired rule, monkeypatched in, ties b."""
    rows = long_rows({"kid": {"a": [1.0, 2.0, 3.0], "b": [1.1, 2.1, 3.1], "c": [1.2, 1.8, 3.1], "d": [1.0, 2.0, 3.0]}})
    marked = mark_best(seed_statistics(rows), MetricColumn("kid", "KID"), rows, COMPARISON).set_index("method")
    assert marked.loc["a", "best"] and marked.loc["d", "best"]
    assert not marked.loc["b", "tied"] and marked.loc["c", "tied"]

    def unpaired(method: np.ndarray, versus: np.ndarray) -> comparison.DifferenceStatistics:
        a, b = method[~np.isnan(method)], versus[~np.isnan(versus)]
        error = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
        return comparison.DifferenceStatistics("unpaired", float(a.mean() - b.mean()), float(error), len(a) + len(b) - 2.0, 0)

    monkeypatch.setattr(comparison, "difference_statistics", unpaired)
    broken = mark_best(seed_statistics(rows), MetricColumn("kid", "KID"), rows, COMPARISON).set_index("method")
    assert not broken["best"].any()  # unpaired, nothing is found worse than a: the column marks nobody


def test_a_column_where_nothing_is_found_worse_marks_nobody():
    """Three methods whose seeds scatter into each other: bold on the lowest mean would claim a winner the engine
    does not see; so no bold and no daggers. 0 +/- 0 for everyone is the same case."""
    rows = long_rows({"kid": {"a": [1.0, 2.0, 3.0], "b": [1.5, 1.7, 3.1], "c": [2.0, 1.2, 3.3]}, "recall": {m: [0.0, 0.0, 0.0] for m in "abc"}})
    for column in (MetricColumn("kid", "KID"), MetricColumn("recall", "r", better="higher")):
        marked = mark_best(seed_statistics(rows), column, rows, COMPARISON)
        assert not marked["best"].any() and not marked["tied"].any(), column.metric


def test_latex_headers_escape_metric_names():
    rows = pd.DataFrame(
        [{"method": m, "metric": "fid_inf", "seed": s, "value": 1.0 + s + i, "status": "completed", "feature_space": "domain encoder 0123abcd"}
         for i, m in enumerate(("finetune", "l2sp")) for s in range(2)]
    )  # fmt: skip
    table = build_table(rows, "fidelity", "caption", "name", COMPARISON)
    assert r"FID\_inf $\downarrow$ [domain encoder]" in table.latex and "FID_inf" not in table.latex


def test_the_verdicts_against_finetune_and_scratch_are_the_engines():
    """Paired by seed: an unpaired test (ttest_ind) on the same numbers gives p = 0.4, the paired one about 0.0002;
    the table's p and verdict are the engine's, Holm over the table's comparisons against finetune."""
    finetune = [10.0, 20.0, 30.0, 40.0]
    method = [9.0, 19.1, 28.9, 39.0]
    rows = long_rows({"kid": {"finetune": finetune, "x": method, "scratch": [50.0, 61.0, 58.0, 70.0]}})
    families = versus_comparisons(rows, COMPARISON)
    result = families["finetune"].set_index("method").loc["x"]
    assert result["p_value"] == pytest.approx(stats.ttest_rel(method, finetune).pvalue)
    assert result["p_value"] < 0.001 < stats.ttest_ind(method, finetune).pvalue
    assert result["tests"] == 2 and result["verdict"] == "better"
    assert families["scratch"].set_index("method").loc["finetune", "verdict"] == "better"
    table = build_table(rows.assign(metric="kid"), "fidelity", "caption", "name", COMPARISON)
    x_row = next(line for line in table.markdown.splitlines() if line.startswith("| x "))
    assert ": better" in x_row and "(reference)" in next(line for line in table.markdown.splitlines() if line.startswith("| finetune "))


def test_each_column_has_one_precision():
    """KID means of 2,757 and 39 print as 2757 and 39; a recall of 6.67e-05 beside 0.176 prints at the column's 3
    decimals, not in scientific notation."""
    assert column_decimals(pd.Series([2756.7, 39.0])) == 0
    assert column_decimals(pd.Series([0.176, 6.67e-05])) == 3
    assert column_decimals(pd.Series([0.0115, 0.0038])) == 4
    rows = long_rows({"kid": {"a": [2.7, 2.8, 2.76], "b": [0.039, 0.04, 0.038]}})
    table = build_table(rows, "fidelity", "caption", "name", COMPARISON)
    assert "| 2753 ± 50 " in table.markdown and "| **39 ± 1** " in table.markdown


def task_rows(tasks: dict[str, dict[str, list[float]]], metric: str = "kid") -> pd.DataFrame:
    """task -> method -> per-seed values, as rows of one checkpoint."""
    return pd.DataFrame(
        [{"task": task, "shots": 5, "seed": s, "method": m, "metric": metric, "value": v, "status": "completed", "checkpoint": "final"}
         for task, by_method in tasks.items() for m, values in by_method.items() for s, v in enumerate(values)]
    )  # fmt: skip


def source_curve(sources: dict[str, list[float]]) -> pd.DataFrame:
    """The step-0 adaptation-curve rows of finetune (the source generator) per task and seed."""
    return pd.DataFrame(
        [{"task": task, "shots": 5, "seed": s, "method": "finetune", "metric": "kid", "checkpoint": "adaptation curve", "checkpoint_step": 0, "value": v}
         for task, values in sources.items() for s, v in enumerate(values)]
    )  # fmt: skip


def test_rank_test_blocks_on_tasks_with_seeds_averaged():
    """Six tasks of three seeds: six blocks (not 18: the seeds of a task share its reference set and pretraining);
    the Friedman p is scipy's on the per-task means, Iman-Davenport's F is (N - 1) chi2 / (N (k - 1) - chi2),
    and Nemenyi's CD is q(0.05, 3) x sqrt(k (k + 1) / (6 N)) with N = 6."""
    rng = np.random.default_rng(0)
    rows = task_rows({f"t{t}": {m: list(rng.normal(shift, 1.0, 3)) for m, shift in (("a", 0.0), ("b", 0.5), ("c", 2.0))} for t in range(6)})
    test = aggregate.rank_test(rows)
    means = rows.pivot_table(index="task", columns="method", values="value", aggfunc="mean")
    chi2 = stats.friedmanchisquare(*(means[m] for m in means))
    assert test.blocks == 6 and test.tasks == 6 and test.friedman_p == pytest.approx(chi2.pvalue)
    f = 5 * chi2.statistic / (6 * 2 - chi2.statistic)
    assert test.iman_davenport == pytest.approx(f) and test.df == (2, 10) and test.p_value == pytest.approx(stats.f.sf(f, 2, 10))
    assert dict(zip(test.ranks["method"], test.ranks["mean_rank"], strict=True)) == pytest.approx(means.rank(axis=1).mean().to_dict())
    assert test.critical_difference == pytest.approx(2.343 * np.sqrt(3 * 4 / (6 * 6)), rel=1e-3)


def test_no_cross_task_verdict_below_five_tasks():
    """Four tasks: no rank test and one line that says why; five: a test. Two methods: no Friedman test either."""
    rows = task_rows({f"t{t}": {m: [float(i + t), float(i + t) + 0.5, float(i + t) + 0.2] for i, m in enumerate("abc")} for t in range(5)})
    assert aggregate.rank_test(rows) is not None and aggregate.too_few_tasks(rows) is None
    four = rows[rows["task"] != "t4"]
    assert aggregate.rank_test(four) is None
    assert aggregate.too_few_tasks(four).startswith("No cross-task verdict: 4 tasks (t0, t1, t2, t3), and a rank test")
    assert aggregate.rank_test(rows[rows["method"] != "c"]) is None
    assert "c" not in aggregate.score_matrix(rows.assign(value=rows["value"].where(rows["method"] != "c")))[0]


def test_a_diverged_seed_ranks_its_method_last_in_that_task():
    """Dropping the seed (or the task) would flatter the method that diverged; it ranks last in that task
    instead, also below negative scores (unbiased KID can be negative)."""
    rows = task_rows({f"t{t}": {"a": [3.0, 3.0], "b": [-10.0, -10.0], "c": [1.0, 1.0]} for t in range(6)})
    failed = rows["method"].eq("c") & rows["task"].eq("t0") & rows["seed"].eq(0)
    rows.loc[failed, ["value", "status"]] = [np.nan, "diverged"]
    matrix, dropped = aggregate.score_matrix(rows)
    assert dropped == 0 and matrix.loc[("t0", 5), "c"] > 3.0
    test = aggregate.rank_test(rows)
    assert dict(zip(test.ranks["method"], test.ranks["mean_rank"], strict=True))["c"] == pytest.approx((5 * 2 + 3) / 6)


def test_scores_are_normalised_by_the_source_generators_step_zero_kid():
    """KID / (the mean step-0 KID of finetune on that task): 0 is real data's expected KID, 1 the unadapted source.
    The IQM pools every method's runs over tasks and trims int(n / 4) from each end (1 of 6 here)."""
    rows = task_rows({"a": {"finetune": [1.0, 2.0, 3.0], "x": [4.0, 5.0, 6.0]}, "b": {"finetune": [10.0, 20.0, 30.0], "x": [40.0, 50.0, 60.0]}})
    tasks, methods = aggregate.task_runs(rows, source_curve({"a": [8.0, 8.0, 8.0], "b": [100.0, 80.0, 90.0]}))
    assert methods == ["finetune", "x"] and [task.task for task in tasks] == ["a", "b"]
    summary = aggregate.aggregate_scores(tasks, methods, resamples=200, seed=0).set_index("method")
    expected = stats.trim_mean(np.concatenate([np.array([4.0, 5.0, 6.0]) / 8.0, np.array([40.0, 50.0, 60.0]) / 90.0]), 0.25)
    assert summary.loc["x", "iqm"] == pytest.approx(expected)
    assert summary.loc["x", "runs"] == 6 and summary.loc["x", "trimmed_each_end"] == 1 and aggregate.trimmed_each_end(12) == 3
    assert aggregate.task_runs(rows, source_curve({"other": [1.0]}))[0] == []  # nothing to normalise by: no aggregate


def test_the_bootstrap_resamples_tasks_and_the_normaliser():
    """Each task's runs constant: a bootstrap within tasks only (the old stratified one) gives a point; resampling
    tasks spreads the interval over the tasks' levels. And with the runs fixed but the step-0 normaliser varying by
    seed, the interval still has width: the normaliser is estimated, so it is resampled too."""
    rows = task_rows({task: {"finetune": [level] * 4, "x": [level] * 4} for task, level in (("a", 1.0), ("b", 2.0), ("c", 9.0))})
    tasks, methods = aggregate.task_runs(rows, source_curve({task: [1.0] * 4 for task in "abc"}))
    summary = aggregate.aggregate_scores(tasks, methods, resamples=300, seed=1).set_index("method").loc["x"]
    assert summary["ci_low"] <= 1.0 + 1e-9 and summary["ci_high"] >= 9.0 - 1e-9
    rows = task_rows({"a": {"finetune": [1.0] * 4, "x": [1.0] * 4}})
    tasks, methods = aggregate.task_runs(rows, source_curve({"a": [0.5, 1.0, 1.5, 2.0]}))
    summary = aggregate.aggregate_scores(tasks, methods, resamples=300, seed=1).set_index("method").loc["x"]
    assert summary["ci_high"] - summary["ci_low"] > 0.3


def test_probability_of_improvement_counts_pairs_and_ties():
    x, y = [np.array([1.0, 2.0])], [np.array([1.5, 3.0])]
    assert aggregate.probability_lower(x, y) == pytest.approx(0.75)
    assert aggregate.probability_lower([np.array([1.0])], [np.array([1.0])]) == pytest.approx(0.5)
    two_tasks = aggregate.probability_lower([np.array([1.0]), np.array([5.0])], [np.array([2.0]), np.array([4.0])])
    assert two_tasks == pytest.approx(0.5)  # the mean over tasks, not over pooled runs
    task = aggregate.TaskRuns("t", 5, np.array([[1.0, 1.5, 1.0], [2.0, 3.0, 2.0]]), np.ones(2))
    matrix = aggregate.improvement_matrix([task])
    assert matrix[0, 1] == pytest.approx(0.75) and matrix[1, 0] == pytest.approx(0.25) and matrix[0, 2] == pytest.approx(0.5)


def test_improvement_is_shown_once_per_pair_with_stars_only_where_declared():
    """Six tasks where x beats everyone on every run: each unordered pair once; the interval excludes 0.5 for
    (finetune, x) and (x, y), but only the pair with finetune (pre-declared) is starred; below five tasks none."""
    rows = task_rows({f"t{t}": {"finetune": [2.0, 2.1], "x": [1.0, 1.1], "y": [3.0, 3.1]} for t in range(6)})
    tasks, methods = aggregate.task_runs(rows, source_curve({f"t{t}": [5.0, 5.0] for t in range(6)}))
    table = aggregate.improvement_probabilities(tasks, methods, resamples=200, seed=0).set_index(["method", "versus"])
    assert list(table.index) == [("finetune", "x"), ("finetune", "y"), ("x", "y")]
    assert table.loc[("finetune", "x"), "probability"] == 0.0 and table.loc[("finetune", "x"), "resolved"]
    assert table.loc[("x", "y"), "ci_high"] < 0.5 or table.loc[("x", "y"), "ci_low"] > 0.5
    assert not table.loc[("x", "y"), "resolved"] and table.loc[("finetune", "y"), "resolved"]
    quiet = aggregate.improvement_probabilities(tasks, methods, resamples=50, seed=0, verdicts=False)
    assert not quiet["resolved"].any()


def test_seeds_needed_matches_the_noncentral_t_power():
    """Checked against the power computed from the noncentral t distribution directly (two-sided, paired)."""
    for effect in (0.5, 1.0, 2.0):
        n = power.seeds_needed(effect, 0.05, 0.8)

        def achieved(pairs: int, effect: float = effect) -> float:
            critical = stats.t.ppf(0.975, pairs - 1)
            noncentrality = effect * np.sqrt(pairs)
            return stats.nct.sf(critical, pairs - 1, noncentrality) + stats.nct.cdf(-critical, pairs - 1, noncentrality)

        assert achieved(int(n)) >= 0.8 > achieved(int(n) - 1), effect
    assert power.seeds_needed(0.0, 0.05, 0.8) == float("inf")
    # Two pairs (df = 1): statsmodels' power is NaN here, and the normal limit would claim 2 suffice (its power
    # at 2 pairs is 0.67); the answer is 3.
    assert power.seeds_needed(8.77, 0.05, 0.8) == 3
    assert power.paired_power(8.77, 2, 0.05) == pytest.approx(stats.nct.sf(stats.t.isf(0.025, 1), 1, 8.77 * np.sqrt(2)), abs=1e-3)
    # Far beyond the noncentral t's range (scipy returns 0 there), the count follows the normal formula.
    assert power.seeds_needed(0.05, 0.05, 0.8) == pytest.approx(((stats.norm.isf(0.025) + stats.norm.isf(0.2)) / 0.05) ** 2, rel=0.01)


@pytest.mark.parametrize(
    ("folder", "tasks"),
    [("reports/reference", ("omniglot_malayalam", "fashion_to_mnist")), ("reports/reference/sweep", ("omniglot_kannada", "omniglot_to_mnist"))],
)
def test_paper_cli_on_the_committed_reference_results(tmp_path, folder, tasks):
    """The reference results regenerate every table and figure offline (no training, no scoring), and exactly the
    committed `paper.md`: a golden file on real results (the sweep's at each method's target-validation draw)."""
    output = tmp_path / "paper"
    result = run_cli("paper", "--input-dir", folder, "--output-dir", str(output), cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = {path.stem for path in (output / "figures").glob("*.png")}
    for task in tasks:
        assert {f"{kind}_{task}_k10" for kind in ("samples", "nearest", "training", "adaptation_curve")} <= figures
    assert not any(name.startswith("critical_difference") for name in figures)  # 2 and 4 tasks: fewer than 5
    assert (output / "paper.md").read_text() == (REPO / folder / "paper.md").read_text()


def test_comparison_with_reference_results():
    """The same results are identical cell by cell; a method whose KID is shifted far beyond the seed spread (+1.0
    against values of 0.01-0.1) is worse than the reference (the engine, Holm over the KID cells), while the
    others stay identical; with one seed a side no test runs."""
    frame = pd.read_csv(FIXTURE / "results.csv")
    same = compare_results(frame, frame, COMPARISON)
    assert len(same) > 50 and same["verdict"].eq("identical").all() and "adaptation curve" not in set(same["checkpoint"])
    changed = frame.copy()
    worse = changed["method"].eq("l2sp") & changed["metric"].eq("kid")
    changed.loc[worse, "value"] += 1.0
    compared = compare_results(changed, frame, COMPARISON)
    verdicts = compared.set_index(["task", "method", "checkpoint", "metric"])["verdict"]
    assert set(verdicts.xs(("l2sp", "kid"), level=("method", "metric"))) == {"worse"}
    assert verdicts.drop("kid", level="metric").eq("identical").all()
    assert set(compared.loc[compared["verdict"].eq("worse"), "tests"]) == {len(verdicts.xs(("l2sp", "kid"), level=("method", "metric")))}
    one_seed = changed[changed["seed"].eq(0)]
    assert set(compare_results(one_seed, frame[frame["seed"].eq(0)], COMPARISON)["verdict"]) == {"identical", "undetermined"}


def test_training_logs_gather_numbers_only(tmp_path):
    """A diverged run's log ends with its reason (text): gathered, it would make the value column text and every
    training curve fail; it is left out (the run's records say it diverged), the numbers before it are kept."""
    run = tmp_path / "run"
    run.mkdir()
    fields = {"task": "t", "task_kind": "few-shot", "shots": 5, "method": "m", "seed": 0, "split_draw": 0, "pretrain_seed": 0, "draw": 0}
    (run / "config.json").write_text(json.dumps(fields))
    log = [
        {"step": 0, "eval": {"kid_validation": 0.5, "n_real": 50}},
        {"step": 1, "loss_d": 1.2, "loss_g": 0.7},
        {"step": 2, "diverged": "non-finite loss_g"},
    ]
    (run / "train_log.jsonl").write_text("\n".join(json.dumps(entry) for entry in log))
    frame = collect_training([run / "train_log.jsonl"])
    assert frame[["step", "quantity", "value"]].values.tolist() == [[0, "kid_validation", 0.5], [1, "loss_d", 1.2], [1, "loss_g", 0.7]]
    assert frame["value"].dtype == float and (frame["method"] == "m").all()


def test_a_folder_without_results_is_one_clear_error_and_leaves_nothing(tmp_path):
    output, empty = tmp_path / "paper", tmp_path / "results"
    empty.mkdir()
    with pytest.raises(BenchmarkError, match="has no results.csv"):
        render_paper(empty, output, SETTINGS)
    assert not output.exists() and list(tmp_path.iterdir()) == [empty] and list(empty.iterdir()) == []
    result = run_cli("paper", "--input-dir", str(empty), "--output-dir", str(output))
    assert result.returncode == 2 and "reports/reference" in result.stderr and not output.exists()


def test_reported_draws_follow_target_validation(tmp_path):
    """With a sweep, each seed of each method is at its cross-fitted target-validation draw, as in the results report."""
    frame = pd.read_csv(FIXTURE / "results.csv")
    other = frame.assign(draw=1, value=frame["value"] * 2)  # draw 1: twice the KID everywhere (validation curve too)
    (tmp_path / "results.csv").write_text(pd.concat([frame.assign(draw=0), other]).to_csv(index=False))
    inputs = read_results_folder(tmp_path)
    assert inputs.rule == "target validation, cross-fitted" and set(inputs.results["draw"]) == {0}
    final = inputs.results[inputs.results["checkpoint"].eq("final") & inputs.results["metric"].eq("kid")]
    expected = frame[frame["checkpoint"].eq("final") & frame["metric"].eq("kid")]
    assert final.groupby(["task", "method"])["value"].mean().to_dict() == pytest.approx(
        expected.groupby(["task", "method"])["value"].mean().to_dict()
    )


# ---- known values for what the mutation tests found open (scripts/mutation_test.py) ----------------------------


def test_paired_power_where_scipy_noncentral_t_fails():
    """At 2 pairs and effect 12, scipy's noncentral t returns NaN; the integral over the variance gives the power,
    checked against a seeded Monte Carlo simulation of the paired t-test itself."""
    critical = stats.t.isf(0.025, 1)
    assert np.isnan(stats.nct.sf(critical, 1, 12 * np.sqrt(2)) + stats.nct.cdf(-critical, 1, 12 * np.sqrt(2)))
    rng = np.random.default_rng(0)
    differences = rng.normal(12.0, 1.0, size=(400_000, 2))
    t = differences.mean(axis=1) / (differences.std(axis=1, ddof=1) / np.sqrt(2))
    simulated = float((np.abs(t) > stats.t.isf(0.025, 1)).mean())
    assert power.paired_power(12.0, 2, 0.05) == pytest.approx(simulated, abs=0.003)
    assert power.paired_power(0.0, 2, 0.05) == pytest.approx(0.05, abs=1e-6)  # no effect: the level


@pytest.mark.parametrize("effect", [0.3, 0.8, 1.5, 3.0, 8.77, 30.0])
def test_seeds_needed_is_the_smallest_sufficient_count(effect):
    """Against a plain scan over the counts with the noncentral t (the search's doubling and bisection must agree)."""

    def achieved(pairs: int) -> float:
        critical = stats.t.isf(0.025, pairs - 1)
        upper, lower = stats.nct.sf(critical, pairs - 1, effect * np.sqrt(pairs)), stats.nct.cdf(-critical, pairs - 1, effect * np.sqrt(pairs))
        return upper + np.nan_to_num(lower)  # scipy's far lower tail can be NaN where it is ~0

    smallest = next(pairs for pairs in range(2, 200) if achieved(pairs) >= 0.8)
    assert power.seeds_needed(effect, 0.05, 0.8) == smallest
    assert power.seeds_needed(effect, 0.05, 0.9) >= smallest and power.seeds_needed(effect, 0.01, 0.8) >= smallest
    assert np.isnan(power.seeds_needed(float("nan"), 0.05, 0.8)) and power.seeds_needed(-1.0, 0.05, 0.8) == float("inf")


def test_resolvable_effect_reaches_the_power():
    for seeds in (2, 3, 5, 20):
        effect = power.resolvable_effect(seeds, 0.05, 0.8)
        assert power.paired_power(effect, seeds, 0.05) == pytest.approx(0.8, abs=1e-6)
    assert power.resolvable_effect(1, 0.05, 0.8) == float("inf")
    assert power.resolvable_effect(5, 0.05, 0.8) < power.resolvable_effect(3, 0.05, 0.8)


def test_power_table_needs_three_pairs_and_reads_the_paired_spread():
    """Two methods on four seeds (and a pair with two seeds on task u, below `MIN_PAIRS`: no seed verdict)."""
    a, b = [1.0, 2.0, 3.0, 4.0], [1.2, 2.1, 3.3, 4.2]
    rows = pd.DataFrame(
        [{"task": "t", "shots": 5, "seed": s, "method": m, "metric": metric, "value": v * (10 if metric == "fid" else 1)}
         for metric in ("fid", "kid") for m, values in (("a", a), ("b", b)) for s, v in enumerate(values)]
        + [{"task": "u", "shots": 5, "seed": s, "method": m, "metric": "kid", "value": v} for m, values in (("a", [0.2, 0.4]), ("b", [0.3, 0.4])) for s, v in enumerate(values)]
    )  # fmt: skip
    table = power.power_table(rows)
    assert list(zip(table["task"], table["pairs"], strict=True)) == [("t", 4)]
    row = table.iloc[0]
    differences, mean = np.subtract(a, b), np.mean(a + b)
    assert row["relative_sd"] == pytest.approx(differences.std(ddof=1) / mean)
    assert row["mde_at_pairs"] == pytest.approx(power.resolvable_effect(4, 0.05, 0.8) * row["relative_sd"])
    negative = rows.assign(value=rows["value"] - 10.0)  # a pair whose mean KID is not positive: nothing relative to plan
    assert np.isnan(power.power_table(negative).iloc[0]["relative_sd"])


def test_the_spread_is_pooled_and_its_upper_bound_is_planned_with():
    """rsd 0.1 on 3 seeds and 0.2 on 5 seeds pool to sqrt((2 x 0.01 + 4 x 0.04) / 6) on 6 degrees of freedom; the 80%
    upper bound multiplies it by sqrt(6 / chi2.ppf(0.2, 6)). Seeds for 10% at the bound are never fewer than at the
    estimate, and the MDE at n seeds is the resolvable standardised effect times the relative SD."""
    table = pd.DataFrame({"task": ["t", "u"], "method": ["a", "a"], "versus": ["b", "b"], "pairs": [3, 5], "relative_sd": [0.1, 0.2]})
    pooled = power.pooled_spread(table)
    expected = np.sqrt((2 * 0.01 + 4 * 0.04) / 6)
    assert pooled.relative_sd == pytest.approx(expected) and pooled.df == 6 and (pooled.pairs_of_methods, pooled.tasks) == (1, 2)
    assert pooled.upper == pytest.approx(expected * np.sqrt(6 / stats.chi2.ppf(0.2, 6)))
    found = power.family_power(table, 0.1, 0.05, 0.8, [5])
    assert found["seeds_needed"] == power.seeds_needed(0.1 / expected, 0.05, 0.8) <= found["seeds_needed_upper"]
    assert found["mde_5_seeds"] == pytest.approx(power.resolvable_effect(5, 0.05, 0.8) * expected)
    assert found["mde_5_seeds_upper"] > found["mde_5_seeds"]
    assert power.pooled_spread(table.assign(relative_sd=np.nan)) is None


def test_standardised_difference_edge_cases():
    assert power._standardised(0.1, 0.05) == pytest.approx(2.0)
    assert power._standardised(0.1, 0.0) == float("inf") and power._standardised(0.0, 0.0) == 0.0
    assert np.isnan(power._standardised(0.1, float("nan"))) and np.isnan(power._standardised(float("nan"), 0.1))


def test_comparison_numbers_and_tests():
    """Both means and their difference; a paired t-test over matching seeds, Welch's otherwise (the engine's)."""
    base = pd.DataFrame(
        [{"task": "t", "shots": 5, "method": "m", "checkpoint": "final", "metric": "kid", "seed": s, "value": v} for s, v in enumerate([1.0, 2.0, 3.0])]
    )  # fmt: skip
    mine = base.assign(value=base["value"] + [0.1, 0.3, 0.2])
    row = compare_results(mine, base, COMPARISON).iloc[0]
    assert (row["mean"], row["reference_mean"], row["difference"]) == pytest.approx((2.2, 2.0, 0.2))
    assert row["relative_difference"] == pytest.approx(0.1)
    two = compare_results(mine[mine["seed"] < 2], base[base["seed"] < 2], COMPARISON).iloc[0]  # two seeds are enough for a test
    assert two["p_value"] == pytest.approx(stats.ttest_rel([1.1, 2.3], [1.0, 2.0]).pvalue)
    assert row["p_value"] == pytest.approx(stats.ttest_rel(mine["value"], base["value"]).pvalue)
    other_seeds = mine.assign(seed=mine["seed"] + 10)
    row = compare_results(other_seeds, base, COMPARISON).iloc[0]
    assert row["p_value"] == pytest.approx(stats.ttest_ind(other_seeds["value"], base["value"], equal_var=False).pvalue)
    assert row["verdict"] == "undetermined" and row["seeds"] == row["reference_seeds"] == 3 and row["design"] == "Welch"
    shifted = base.assign(value=base["value"] + 1.0)
    assert compare_results(shifted, base, COMPARISON).iloc[0]["verdict"] == "worse"  # no spread in the differences: systematic
    assert compare_results(base.assign(value=base["value"] * (1 + 1e-12)), base, COMPARISON).iloc[0]["verdict"] == "identical"
    constant = base.assign(value=2.0)  # other seeds and no spread on either side: Welch's test has nothing to divide by
    assert compare_results(constant.assign(seed=constant["seed"] + 10, value=3.0), constant, COMPARISON).iloc[0]["verdict"] == "worse"
    assert compare_results(constant.assign(seed=constant["seed"] + 10), constant, COMPARISON).iloc[0]["verdict"] == "equivalent"


def test_seed_statistics_known_values():
    rows = pd.DataFrame(
        [{"method": "m", "metric": "kid", "seed": s, "value": v, "status": "completed"} for s, v in enumerate([1.0, 3.0])]
        + [{"method": "one", "metric": "kid", "seed": 0, "value": 2.0, "status": "completed"}]
        + [{"method": "one", "metric": "kid", "seed": 1, "value": np.nan, "status": "diverged"}]
    )  # fmt: skip
    table = seed_statistics(rows).set_index("method")
    half = stats.t.ppf(0.975, 1) * np.std([1.0, 3.0], ddof=1) / np.sqrt(2)
    assert (table.loc["m", "ci_low"], table.loc["m", "ci_high"]) == pytest.approx((2.0 - half, 2.0 + half))
    assert (table.loc["one", "n"], table.loc["one", "n_diverged"]) == (1, 1) and np.isnan(table.loc["one", "ci_low"])


def test_interval_cells():
    rows = pd.DataFrame(
        [{"method": m, "metric": "kid", "seed": s, "value": v / 1000, "status": "completed", "feature_space": "domain encoder 0123abcd"}
         for m, values in (("finetune", [1.0, 3.0]), ("scratch", [5.0, 9.0])) for s, v in enumerate(values)]
    )  # fmt: skip
    table = build_table(rows, "fidelity", "c", "n", COMPARISON, intervals=True)
    half = stats.t.ppf(0.975, 1) * np.std([1.0, 3.0], ddof=1) / np.sqrt(2)
    assert f"| 2.00 [{2 - half:.2f}, {2 + half:.2f}] " in table.markdown  # nothing found worse with 2 seeds: no bold
    assert "p_Holm" in table.markdown and "(reference)" in table.markdown


def test_the_html_page_leads_with_the_verdicts_and_embeds_its_figures(rendered):
    """The page opens with the navigation and the summary (the engine's verdicts against finetune and scratch per
    task, then the adaptation curves), before the detailed tables; every summary image is a PNG inside the page."""
    page = (rendered / "paper.html").read_text()
    summary, tables = page.index('<section id="summary">'), page.index("<h2 id='tables'>")
    assert page.index("<nav>") < summary < tables
    block = page[summary:tables]
    assert "against finetune" in block and "against scratch" in block and "xray_normal_to_pneumonia" in block
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', block)
    assert len(images) == 2  # one adaptation-curve figure per task (this fixture has no sample panels)
    for data in images:
        picture = Image.open(io.BytesIO(base64.b64decode(data)))
        assert picture.format == "PNG" and picture.size[0] > 500


BROWSER = shutil.which("chromium-headless-shell") or shutil.which("chromium")


@pytest.mark.skipif(BROWSER is None, reason="no headless Chromium (apt-get install chromium-headless-shell; .ci/run installs it)")
def test_the_html_page_renders_in_a_browser_with_no_broken_image(rendered, tmp_path):
    """Headless Chromium: a screenshot of the first screen is not blank, and a page that opens paper.html in a frame
    finds every image decoded (naturalWidth > 0). The structure is checked without a browser above."""
    shot = tmp_path / "first_screen.png"
    common = [BROWSER, "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=5000", "--allow-file-access-from-files"]
    result = subprocess.run(
        [*common, "--window-size=1280,1000", f"--screenshot={shot}", (rendered / "paper.html").as_uri()], capture_output=True, timeout=120
    )
    assert shot.is_file(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (1000, 1280) and pixels.std() > 20
    assert _browser_image_check(common, rendered / "paper.html", tmp_path) == (2, 0, True)
    # The probe can fail: one image's data spoilt, the browser counts it broken.
    spoilt = tmp_path / "spoilt.html"
    spoilt.write_text((rendered / "paper.html").read_text().replace("base64,iVBOR", "base64,XXXXX", 1))
    assert _browser_image_check(common, spoilt, tmp_path) == (2, 1, True)


def _browser_image_check(common: list[str], page: Path, folder: Path) -> tuple[int, int, bool]:
    """Images in `page`, how many the browser could not decode, and whether the summary is there."""
    probe = folder / f"probe_{page.stem}.html"
    probe.write_text(
        f"<html><body><iframe id='page' src='{page.as_uri()}' width='1280' height='800'></iframe><script>"
        "document.getElementById('page').onload = function () {"
        " const images = Array.from(this.contentDocument.images);"
        " const broken = images.filter(image => !(image.complete && image.naturalWidth > 0)).length;"
        " const summary = this.contentDocument.getElementById('summary') !== null;"
        " document.body.insertAdjacentHTML('beforeend', `<p id='result'>images=${images.length} broken=${broken} summary=${summary}</p>`); };"
        "</script></body></html>"
    )
    dom = subprocess.run([*common, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r"images=(\d+) broken=(\d+) summary=(\w+)", dom.stdout)
    assert found, dom.stderr[-2000:]
    return int(found.group(1)), int(found.group(2)), found.group(3) == "true"


def test_the_memorised_share_shows_its_thresholds_range():
    """Records that carry the share's range over the threshold's bootstrap show it beside the cell (mean over seeds);
    records without it (before issue 26) show the plain cell."""
    details = [json.dumps({"value_interval_threshold": [0.10, 0.30]}), json.dumps({"value_interval_threshold": [0.20, 0.40]})]
    rows = pd.DataFrame(
        [{"method": "a", "metric": "memorisation_share", "seed": s, "value": v, "status": "completed", "details": d}
         for s, (v, d) in enumerate(zip([0.2, 0.3], details, strict=True))]
        + [{"method": "b", "metric": "memorisation_share", "seed": s, "value": 0.1, "status": "completed", "details": "{}"} for s in range(2)]
    )  # fmt: skip
    table = build_table(rows, "diversity", "caption", "name", COMPARISON)
    assert "| 0.250 ± 0.071 (0.150-0.350) " in table.markdown
    assert "| 0.100 ± 0.000 " in table.markdown and "0.100 ± 0.000 (" not in table.markdown
