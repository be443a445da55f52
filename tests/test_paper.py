"""Paper outputs (benchmark/paper/): the renderer on a committed fixture gives exactly the expected Markdown and
LaTeX, the statistics agree with independent computations, and the figures are made and not empty.

The fixture (`tests/fixtures/paper/results.csv`) is a slice of a real medical-preset run (4 methods, 2 tasks,
3 seeds), with three defects put in on purpose: freeze_d's seed 2 on the rare-class task diverged, l2sp has no
precision on fashion_to_xray, and scratch's seed 1 has no final-checkpoint metrics at all on fashion_to_xray.
Regenerate the expected files after an intended change with GANBENCH_WRITE_GOLDEN=1 and review their diff.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from benchmark.errors import BenchmarkError
from benchmark.paper import aggregate, power
from benchmark.paper.compare import compare_results
from benchmark.paper.inputs import read_results_folder
from benchmark.paper.render import render_paper
from benchmark.paper.tables import build_table, mark_best, paired_comparison, seed_statistics, tied_by_paired_test
from benchmark.results import HEADLINE, MetricColumn, collect_training
from benchmark.settings import PaperSettings
from conftest import REPO, run_cli

FIXTURE = REPO / "tests" / "fixtures" / "paper"
EXPECTED = FIXTURE / "expected"
WRITE = os.environ.get("GANBENCH_WRITE_GOLDEN") == "1"
SETTINGS = PaperSettings.from_json('{"bootstrap_resamples": 500}')


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
    assert scratch.split("|")[-3].strip() == "2"  # the seed without metrics is missing, not a zero
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
    # At the final checkpoint the seed without metrics leaves out its block, while the diverged seed ranks last in its own.
    assert {"critical_difference_validation_selected", "critical_difference_final"} <= names
    assert "Friedman test over 5 blocks (1 left out for missing scores)" in (rendered / "paper.md").read_text()
    assert {f"adaptation_curve_{task}_k10" for task in ("fashion_to_xray", "xray_normal_to_pneumonia")} <= names
    assert {f"kid_vs_k_{task}_final" for task in ("fashion_to_xray", "xray_normal_to_pneumonia")} <= names
    for png in figures.glob("*.png"):
        pixels = np.asarray(Image.open(png).convert("L"))
        assert pixels.shape[0] > 100 and pixels.std() > 5, png.name  # not blank
        assert png.with_suffix(".pdf").stat().st_size > 1000


def test_bold_follows_each_metric_direction_and_ties_by_interval():
    """A wrong direction (e.g. bolding the lowest precision) or ties without overlapping intervals fail here."""
    values = {
        "kid": {"a": [1.0, 1.1, 1.2], "b": [1.05, 1.15, 1.25], "c": [3.0, 3.1, 3.2]},
        "precision": {"a": [1.0, 1.1, 1.2], "b": [1.05, 1.15, 1.25], "c": [3.0, 3.1, 3.2]},
        "density": {"a": [0.4, 0.5, 0.6], "b": [1.2, 1.3, 1.4], "c": [3.0, 3.1, 3.2]},  # closest to 1: b, neither end
    }
    rows = pd.DataFrame(
        [{"method": m, "metric": metric, "seed": s, "value": v, "status": "completed"}
         for metric, by_method in values.items() for m, seeds in by_method.items() for s, v in enumerate(seeds)]
    )  # fmt: skip
    statistics = seed_statistics(rows)
    kid = mark_best(statistics, MetricColumn("kid", "KID")).set_index("method")
    assert kid.loc["a", "best"] and kid.loc["b", "tied"] and not kid.loc["c", "tied"]
    precision = mark_best(statistics, MetricColumn("precision", "p", better="higher")).set_index("method")
    assert precision.loc["c", "best"] and not precision.loc["a", "best"]
    density = mark_best(statistics, MetricColumn("density", "d", better="~1")).set_index("method")
    assert density.loc["b", "best"] and not density["best"].drop("b").any()
    interval = stats.t.ppf(0.975, 2) * 0.1 / np.sqrt(3)
    assert kid.loc["a", "ci_high"] == pytest.approx(1.1 + interval)


def test_ties_follow_the_paired_test_on_shared_seeds():
    """Seed-to-seed spread that both methods share cancels in a paired test: b is worse than a by exactly 0.1 on
    every seed, so it is not tied although their 95% intervals overlap widely (an unpaired rule would tie them);
    c's differences scatter around 0 and it is tied. Methods with the same best mean are all bold."""
    values = {"a": [1.0, 2.0, 3.0], "b": [1.1, 2.1, 3.1], "c": [1.2, 1.8, 3.1], "d": [1.0, 2.0, 3.0]}
    rows = pd.DataFrame(
        [{"method": m, "metric": "kid", "seed": s, "value": v, "status": "completed"} for m, seeds in values.items() for s, v in enumerate(seeds)]
    )
    marked = mark_best(seed_statistics(rows), MetricColumn("kid", "KID"), rows).set_index("method")
    assert marked.loc["a", "best"] and marked.loc["d", "best"]
    assert not marked.loc["b", "tied"] and marked.loc["c", "tied"]
    unpaired = mark_best(seed_statistics(rows), MetricColumn("kid", "KID")).set_index("method")
    assert unpaired.loc["b", "tied"]  # what overlapping intervals alone would say


def test_latex_headers_escape_metric_names():
    rows = pd.DataFrame(
        [{"method": m, "metric": "fid_inf", "seed": s, "value": 1.0 + s + i, "status": "completed", "feature_space": "domain encoder 0123abcd"}
         for i, m in enumerate(("finetune", "l2sp")) for s in range(2)]
    )  # fmt: skip
    table = build_table(rows, "fidelity", "caption", "name")
    assert r"FID\_inf $\downarrow$ [domain encoder]" in table.latex and "FID_inf" not in table.latex


def test_paired_comparison_is_the_paired_t_test():
    """Paired by seed: an unpaired test (ttest_ind) on the same numbers gives p = 0.4, the paired one about 0.0002."""
    finetune = [10.0, 20.0, 30.0, 40.0]
    method = [9.0, 19.1, 28.9, 39.0]
    rows = pd.DataFrame(
        [{"method": name, "metric": "kid", "seed": seed, "value": value}
         for name, values in (("finetune", finetune), ("x", method)) for seed, value in enumerate(values)]
    )  # fmt: skip
    result = paired_comparison(rows, HEADLINE).set_index("method").loc["x"]
    assert (result["wins"], result["losses"], result["pairs"]) == (4, 0, 4)
    assert result["p_value"] == pytest.approx(stats.ttest_rel(method, finetune).pvalue)
    assert result["p_value"] < 0.001 < stats.ttest_ind(method, finetune).pvalue


def test_rank_test_agrees_with_scipy_friedman():
    rng = np.random.default_rng(0)
    rows = pd.DataFrame(
        [{"task": f"t{block % 3}", "shots": 5, "seed": block, "method": m, "metric": "kid", "value": rng.normal(shift, 1.0)}
         for block in range(9) for m, shift in (("a", 0.0), ("b", 0.5), ("c", 2.0))]
    )  # fmt: skip
    test = aggregate.rank_test(rows)
    matrix = rows.pivot_table(index=["task", "shots", "seed"], columns="method", values="value")
    assert test.p_value == pytest.approx(stats.friedmanchisquare(*(matrix[m] for m in matrix)).pvalue)
    ranks = matrix.rank(axis=1).mean()
    assert dict(zip(test.ranks["method"], test.ranks["mean_rank"], strict=True)) == pytest.approx(ranks.to_dict())
    assert test.omnibus == "friedman" and test.posthoc == "nemenyi" and test.blocks == 9
    # Nemenyi's critical difference: q(0.05, 3 methods) = 2.343 (Demsar 2006, table 5) x sqrt(k (k + 1) / (6 N))
    assert test.critical_difference == pytest.approx(2.343 * np.sqrt(3 * 4 / (6 * 9)), rel=1e-3)


def test_a_diverged_run_ranks_last_in_its_block():
    """Dropping the block of a diverged run would flatter the method that diverged; it ranks last there instead."""
    rows = pd.DataFrame(
        [{"task": "t", "shots": 5, "seed": block, "method": m, "metric": "kid", "value": value, "status": "completed"}
         for block in range(6) for m, value in (("a", 3.0), ("b", 2.0), ("c", 1.0))]
    )  # fmt: skip
    failed = rows["method"].eq("c") & rows["seed"].eq(0)
    rows.loc[failed, ["value", "status"]] = [np.nan, "diverged"]
    test = aggregate.rank_test(rows)
    assert test.blocks == 6 and test.dropped_blocks == 0
    assert dict(zip(test.ranks["method"], test.ranks["mean_rank"], strict=True))["c"] == pytest.approx((5 * 1 + 3) / 6)
    scores = aggregate.normalised_scores(rows.assign(method=rows["method"].replace({"a": "scratch"})))
    assert np.isinf(scores.loc[scores["method"].eq("c") & scores["seed"].eq(0), "score"]).all()


def test_bootstrap_is_stratified():
    """Runs are resampled within each task: with every task's runs constant the interval is a point. A bootstrap
    that pooled the runs before resampling (rliable's unstratified one) would mix the tasks and give a wide one."""
    scores = pd.DataFrame(
        [{"task": task, "shots": 5, "seed": seed, "method": "m", "score": value}
         for task, value in (("a", 1.0), ("b", 2.0), ("c", 9.0)) for seed in range(4)]
    )  # fmt: skip
    summary = aggregate.aggregate_scores(scores, resamples=500).iloc[0]
    pooled = np.repeat([1.0, 2.0, 9.0], 4)
    assert summary["iqm"] == pytest.approx(stats.trim_mean(pooled, 0.25))
    assert summary["ci_low"] == pytest.approx(summary["iqm"]) and summary["ci_high"] == pytest.approx(summary["iqm"])
    unstratified = stats.bootstrap((pooled,), lambda x, axis: stats.trim_mean(x, 0.25, axis=axis), n_resamples=500, rng=0, method="percentile")
    assert unstratified.confidence_interval.high - unstratified.confidence_interval.low > 1.0


def test_probability_of_improvement_counts_pairs_and_ties():
    x, y = [np.array([1.0, 2.0])], [np.array([1.5, 3.0])]
    assert aggregate.probability_lower(x, y) == pytest.approx(0.75)
    assert aggregate.probability_lower([np.array([1.0])], [np.array([1.0])]) == pytest.approx(0.5)
    two_tasks = aggregate.probability_lower([np.array([1.0]), np.array([5.0])], [np.array([2.0]), np.array([4.0])])
    assert two_tasks == pytest.approx(0.5)  # the mean over tasks, not over pooled runs


def test_improvement_pairs_the_same_task_of_both_methods():
    """Strata are matched by task even when the methods' rows come in different orders."""
    scores = pd.DataFrame(
        [{"task": t, "shots": 5, "seed": s, "method": "x", "score": v} for t, v in (("b", 10.0), ("a", 1.0)) for s in range(2)]
        + [{"task": t, "shots": 5, "seed": s, "method": "y", "score": v} for t, v in (("a", 2.0), ("b", 20.0)) for s in range(2)]
    )  # fmt: skip
    table = aggregate.improvement_probabilities(scores, resamples=100).set_index(["method", "versus"])
    assert table.loc[("x", "y"), "probability"] == pytest.approx(1.0)


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


def test_power_summary_keeps_unresolvable_pairs():
    """A pair that no affordable seed count resolves (inf) stays in the quartiles instead of turning them into NaN
    or being dropped, which would understate the seeds needed."""
    table = pd.DataFrame({"task": "t", "shots": 5, "seeds_needed": [5.0, float("inf"), float("inf")], "relative_sd": [0.1, 0.5, 0.6]})
    summary = power.power_summary(table).iloc[0]
    assert (summary["seeds_q25"], summary["seeds_median"], summary["seeds_q75"]) == (float("inf"),) * 3
    table["seeds_needed"] = [5.0, 7.0, float("inf")]
    assert power.power_summary(table).iloc[0]["seeds_median"] == 7.0  # a count of one pair, never a fraction


def test_power_table_reads_paired_spread():
    rows = pd.DataFrame(
        [{"task": "t", "shots": 5, "seed": seed, "method": m, "metric": "kid", "value": base + offset}
         for seed, base in enumerate([1.0, 2.0, 3.0, 4.0]) for m, offset in (("a", 0.0), ("b", 0.1 + 0.01 * seed))]
    )  # fmt: skip
    table = power.power_table(rows, effect=0.1).iloc[0]
    # The seed-to-seed spread (1..4) cancels in the pairs: only the differences' sd (0.0129) counts.
    assert table["sd_difference"] == pytest.approx(np.std([0.1, 0.11, 0.12, 0.13], ddof=1))
    assert table["seeds_needed"] <= 3


@pytest.mark.slow
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
    assert {"critical_difference_final", "critical_difference_validation_selected"} <= figures
    assert (output / "paper.md").read_text() == (REPO / folder / "paper.md").read_text()


def test_comparison_with_reference_results():
    """The same results are identical cell by cell; a method whose KID is shifted far beyond the seed spread (+1.0
    against values of 0.01-0.1) is DIFFERENT, while the others stay identical."""
    frame = pd.read_csv(FIXTURE / "results.csv")
    same = compare_results(frame, frame)
    assert len(same) > 50 and same["verdict"].eq("identical").all() and "adaptation curve" not in set(same["checkpoint"])
    changed = frame.copy()
    worse = changed["method"].eq("l2sp") & changed["metric"].eq("kid")
    changed.loc[worse, "value"] += 1.0
    verdicts = compare_results(changed, frame).set_index(["task", "method", "checkpoint", "metric"])["verdict"]
    assert set(verdicts.xs(("l2sp", "kid"), level=("method", "metric"))) == {"DIFFERENT"}
    assert verdicts.drop("kid", level="metric").eq("identical").all()
    one_seed = changed[changed["seed"].eq(0)]
    assert set(compare_results(one_seed, frame[frame["seed"].eq(0)])["verdict"]) == {"identical", "undetermined"}


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
    output = tmp_path / "paper"
    with pytest.raises(BenchmarkError, match="has no results.csv"):
        render_paper(tmp_path, output, SETTINGS)
    assert not output.exists() and list(tmp_path.iterdir()) == []
    result = run_cli("paper", "--input-dir", str(tmp_path), "--output-dir", str(output))
    assert result.returncode == 2 and "reports/reference" in result.stderr and not output.exists()


def test_reported_draws_follow_target_validation(tmp_path):
    """With a sweep, each method's row is its target-validation draw, as in the results report."""
    frame = pd.read_csv(FIXTURE / "results.csv")
    other = frame.assign(draw=1, value=frame["value"] * 2)  # draw 1: twice the KID everywhere (validation curve too)
    (tmp_path / "results.csv").write_text(pd.concat([frame.assign(draw=0), other]).to_csv(index=False))
    inputs = read_results_folder(tmp_path)
    assert inputs.rule == "target validation" and set(inputs.results["draw"]) == {0}
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


def test_power_table_known_values():
    """Two methods on four seeds, other metrics and a pair with a single shared seed in the rows too."""
    a, b = [1.0, 2.0, 3.0, 4.0], [1.2, 2.1, 3.3, 4.2]
    rows = pd.DataFrame(
        [{"task": "t", "shots": 5, "seed": s, "method": m, "metric": metric, "value": v * (10 if metric == "fid" else 1)}
         for metric in ("fid", "kid") for m, values in (("a", a), ("b", b)) for s, v in enumerate(values)]
        + [{"task": "t", "shots": 5, "seed": 0, "method": "lonely", "metric": "kid", "value": 9.0}]
        + [{"task": "u", "shots": 5, "seed": s, "method": m, "metric": "kid", "value": v} for m, values in (("a", [0.2, 0.4]), ("b", [0.3, 0.4])) for s, v in enumerate(values)]
    )  # fmt: skip
    table = power.power_table(rows, planned_seeds=5)
    # `lonely` shares one seed with each method: no spread to plan from; on task u, two seeds are enough.
    assert list(zip(table["task"], table["method"], table["versus"], table["pairs"], strict=True)) == [("t", "a", "b", 4), ("u", "a", "b", 2)]
    small = table.iloc[1]  # a pair whose mean KID is below 1 but positive still has a relative spread
    assert small["relative_sd"] == pytest.approx(np.std([-0.1, 0.0], ddof=1) / 0.325)
    row = table.iloc[0]
    differences = np.subtract(a, b)
    mean = np.mean(a + b)
    assert (row["method"], row["versus"], row["pairs"]) == ("a", "b", 4)
    assert row["mean"] == pytest.approx(mean) and row["difference"] == pytest.approx(differences.mean())
    assert row["relative_sd"] == pytest.approx(differences.std(ddof=1) / mean)
    assert row["observed_relative_difference"] == pytest.approx(abs(differences.mean()) / mean)
    assert row["seeds_needed"] == power.seeds_needed(0.1 / row["relative_sd"], 0.05, 0.8)
    assert row["seeds_for_observed"] == power.seeds_needed(row["observed_relative_difference"] / row["relative_sd"], 0.05, 0.8)
    assert row["resolvable_relative_difference"] == pytest.approx(power.resolvable_effect(5, 0.05, 0.8) * row["relative_sd"])
    negative = rows.assign(value=rows["value"] - 10.0)  # a pair whose mean KID is not positive: nothing relative to plan
    assert np.isnan(power.power_table(negative).iloc[0]["seeds_needed"])


def test_standardised_difference_edge_cases():
    assert power._standardised(0.1, 0.05) == pytest.approx(2.0)
    assert power._standardised(0.1, 0.0) == float("inf") and power._standardised(0.0, 0.0) == 0.0
    assert np.isnan(power._standardised(0.1, float("nan"))) and np.isnan(power._standardised(float("nan"), 0.1))


def test_rank_test_needs_five_blocks_and_three_methods():
    rows = pd.DataFrame(
        [{"task": "t", "shots": 5, "seed": b, "method": m, "metric": "kid", "value": float(i + b), "status": "completed"}
         for b in range(5) for i, m in enumerate("abc")]
    )  # fmt: skip
    assert aggregate.rank_test(rows) is not None
    assert aggregate.rank_test(rows[rows["seed"] < 4]) is None
    assert aggregate.rank_test(rows[rows["method"] != "c"]) is None
    assert "c" not in aggregate.score_matrix(rows.assign(value=rows["value"].where(rows["method"] != "c")))[0]


def test_a_diverged_run_ranks_below_negative_scores():
    """Last place must exceed every score of its block, also when the scores are negative (unbiased KID can be)."""
    rows = pd.DataFrame(
        [{"task": "t", "shots": 5, "seed": 0, "method": m, "metric": "kid", "value": v, "status": "completed"} for m, v in (("a", 5.0), ("b", -10.0))]
        + [{"task": "t", "shots": 5, "seed": 0, "method": "c", "metric": "kid", "value": np.nan, "status": "diverged"}]
    )  # fmt: skip
    small = rows.assign(seed=1, value=rows["value"].map({5.0: 0.3, -10.0: 0.2}))  # and when they are small and positive
    matrix, dropped = aggregate.score_matrix(pd.concat([rows, small]))
    assert dropped == 0 and matrix.loc[("t", 5, 0), "c"] > 5.0 and matrix.loc[("t", 5, 1), "c"] > 0.3


def test_normalised_scores_and_their_bootstrap_match_scipy():
    """KID over scratch's mean on the same task; the IQM interval is scipy's stratified percentile bootstrap with
    the same generator and 95% confidence; a non-positive scratch mean leaves its task out."""
    rng = np.random.default_rng(1)
    rows = pd.DataFrame(
        [{"task": task, "shots": 5, "seed": s, "method": m, "metric": "kid", "value": float(rng.uniform(1, 2) * scale), "status": "completed"}
         for task, scale in (("a", 0.5), ("b", 10.0)) for m in ("scratch", "x") for s in range(4)]
    )  # fmt: skip
    scores = aggregate.normalised_scores(rows)
    scratch_a = rows[(rows["task"] == "a") & (rows["method"] == "scratch")]["value"].mean()
    first = rows[(rows["task"] == "a") & (rows["method"] == "x") & (rows["seed"] == 0)]["value"].iloc[0]
    assert scores[(scores["task"] == "a") & (scores["method"] == "x") & (scores["seed"] == 0)]["score"].iloc[0] == pytest.approx(first / scratch_a)
    summary = aggregate.aggregate_scores(scores, resamples=300, seed=7).set_index("method").loc["x"]
    samples = [group["score"].to_numpy() for _, group in scores[scores["method"] == "x"].groupby("task")]
    expected = stats.bootstrap(
        samples, lambda *s, axis: stats.trim_mean(np.concatenate(s, axis=axis), 0.25, axis=axis), n_resamples=300,
        confidence_level=0.95, method="percentile", paired=False, rng=np.random.default_rng(7),
    ).confidence_interval  # fmt: skip
    assert (summary["ci_low"], summary["ci_high"]) == pytest.approx((expected.low, expected.high))
    assert summary["iqm"] == pytest.approx(stats.trim_mean(np.concatenate(samples), 0.25)) and summary["strata"] == 2
    single = scores[~((scores["method"] == "x") & (scores["task"] == "a") & (scores["seed"] > 0))]
    lonely = aggregate.aggregate_scores(single, resamples=300, seed=7).set_index("method").loc["x"]
    assert lonely["runs"] == 5 and np.isnan(lonely["ci_low"]) and np.isnan(lonely["ci_high"])  # one run in a stratum: no interval
    shifted = rows.assign(value=np.where((rows["task"] == "b") & (rows["method"] == "scratch"), -1.0, rows["value"]))
    assert set(aggregate.normalised_scores(shifted)["task"]) == {"a"}
    improvement = aggregate.improvement_probabilities(scores, resamples=300, seed=7).set_index(["method", "versus"])
    forward, backward = improvement.loc[("x", "scratch"), "probability"], improvement.loc[("scratch", "x"), "probability"]
    assert forward + backward == pytest.approx(1.0)
    assert forward == pytest.approx(
        aggregate.probability_lower([s for s in samples], [g["score"].to_numpy() for _, g in scores[scores["method"] == "scratch"].groupby("task")])
    )


def test_comparison_numbers_and_tests():
    """Both means and their difference; a paired t-test over matching seeds, Welch's otherwise."""
    base = pd.DataFrame(
        [{"task": "t", "shots": 5, "method": "m", "checkpoint": "final", "metric": "kid", "seed": s, "value": v} for s, v in enumerate([1.0, 2.0, 3.0])]
    )  # fmt: skip
    mine = base.assign(value=base["value"] + [0.1, 0.3, 0.2])
    row = compare_results(mine, base).iloc[0]
    assert (row["mean"], row["reference_mean"], row["difference"]) == pytest.approx((2.2, 2.0, 0.2)) and row["relative_difference"] == pytest.approx(
        0.1
    )
    two = compare_results(mine[mine["seed"] < 2], base[base["seed"] < 2]).iloc[0]  # two seeds are enough for a test
    assert two["p_value"] == pytest.approx(stats.ttest_rel([1.1, 2.3], [1.0, 2.0]).pvalue)
    assert row["p_value"] == pytest.approx(stats.ttest_rel(mine["value"], base["value"]).pvalue)
    other_seeds = mine.assign(seed=mine["seed"] + 10)
    row = compare_results(other_seeds, base).iloc[0]
    assert row["p_value"] == pytest.approx(stats.ttest_ind(other_seeds["value"], base["value"], equal_var=False).pvalue)
    assert row["verdict"] == "within seed spread" and row["seeds"] == row["reference_seeds"] == 3
    shifted = base.assign(value=base["value"] + 1.0)
    assert compare_results(shifted, base).iloc[0]["verdict"] == "DIFFERENT"  # no spread in the differences: systematic
    assert compare_results(base.assign(value=base["value"] * (1 + 1e-12)), base).iloc[0]["verdict"] == "identical"
    constant = base.assign(value=2.0)  # other seeds and no spread on either side: Welch's test has nothing to divide by
    assert compare_results(constant.assign(seed=constant["seed"] + 10, value=3.0), constant).iloc[0]["verdict"] == "DIFFERENT"
    assert compare_results(constant.assign(seed=constant["seed"] + 10), constant).iloc[0]["verdict"] == "within seed spread"


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


def test_tie_test_edge_cases():
    """Fewer than two shared completed seeds: no paired test (None); no spread: tied only if equal on every seed."""
    best = pd.Series([1.0, 2.0, 3.0], index=[0, 1, 2])
    assert tied_by_paired_test(best, pd.Series([1.0, -np.inf, np.nan], index=[0, 1, 2])) is None
    assert tied_by_paired_test(best, best.copy()) is True
    assert tied_by_paired_test(best, best + 0.5) is False
    noisy = pd.Series([1.3, 1.8, 3.1], index=[0, 1, 2])
    assert tied_by_paired_test(best, noisy) is bool(stats.ttest_rel(best, noisy).pvalue >= 0.05)
    assert tied_by_paired_test(best, noisy, alpha=0.99) is False


def test_interval_cells():
    rows = pd.DataFrame(
        [{"method": m, "metric": "kid", "seed": s, "value": v / 1000, "status": "completed", "feature_space": "domain encoder 0123abcd"}
         for m, values in (("finetune", [1.0, 3.0]), ("scratch", [5.0, 9.0])) for s, v in enumerate(values)]
    )  # fmt: skip
    table = build_table(rows, "fidelity", "c", "n", intervals=True)
    half = stats.t.ppf(0.975, 1) * np.std([1.0, 3.0], ddof=1) / np.sqrt(2)
    assert f"**2 [{2 - half:.3g}, {2 + half:.3g}]**" in table.markdown
    assert "0/2, p" in table.markdown and "(baseline)" in table.markdown
