"""The results table's numbers: means, sample standard deviations, scales, rankings and verdicts, checked against
values worked out by hand, and a golden rendering of a committed results fixture.

Each hand-worked case names the wrong implementation it catches; `scripts/mutation_test.py` checks that they do.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmark import results
from benchmark.comparison import ComparisonSettings
from benchmark.errors import BenchmarkError
from benchmark.hparam_selection import DEFAULTS
from benchmark.results import COLUMNS, collect_results, headline_comparison, render_markdown, summary_table
from benchmark.selection import CURVE, FINAL, ORACLE, SELECTED
from benchmark.stages.evaluate import curve_records

FIXTURES = Path(__file__).parent / "fixtures"


def record(method: str, seed: int, metric: str, value: float | None, status: str = "completed", **changes) -> dict:
    """One results-CSV row of a task 'toy', K = 5, final checkpoint."""
    row = dict.fromkeys(COLUMNS)
    row.update(task="toy", task_kind="few-shot", shots=5, method=method, checkpoint="final", seed=seed, split_draw=seed, pretrain_seed=0)
    row.update(status=status, metric=metric, value=value, n_real=500, n_fake=200, feature_space="encoder", details="{}")
    if status == "diverged":
        row.update(value=None, n_real=None, n_fake=None, details=json.dumps({"diverged_at_step": 40, "divergence_reason": "non-finite loss"}))
    row.update(changes)
    return row


def table_row(markdown: str, method: str, section: str = "Fidelity and coverage:") -> list[str]:
    """The cells of `method`'s row in the first table after `section`."""
    block = markdown.split(section, 1)[1]
    line = next(line for line in block.splitlines() if line.startswith(f"| 5 | {method} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


def test_cells_are_the_mean_and_sample_std_scaled_as_their_header_says():
    """KID 1, 2, 3 (x 10^-3) is "2 +/- 1" under "KID x 10^3": a population std (ddof = 0) prints 0.816, a dropped or
    inverted scale prints 0.002 or 2e-06, a mean over the wrong seeds prints another number."""
    rows = [record("good", seed, "kid", value) for seed, value in enumerate([1e-3, 2e-3, 3e-3])]
    rows += [record("good", seed, "fid", value) for seed, value in enumerate([100.0, 100.0, 100.0])]
    rows += [record("good", seed, "precision", value) for seed, value in enumerate([0.25, 0.5, 0.75])]
    cells = table_row(render_markdown(frame(rows)), "good")
    assert cells[2:] == ["2 +/- 1", "100.0 +/- 0", "0.5 +/- 0.25", "3"]


def test_a_single_seed_has_no_spread_and_values_from_100_get_one_decimal():
    """One seed: the mean alone. 99.5 keeps three significant digits, 100 and above get one decimal (a threshold of
    101, or > instead of >=, prints "100" for the 100)."""
    rows = [record("one", 0, "fid", 100.0), record("one", 0, "kid", 0.0995), record("one", 0, "density", 1234.56)]
    assert table_row(render_markdown(frame(rows)), "one")[2:] == ["99.5", "100.0", "1234.6", "1"]


def test_diverged_seeds_are_counted_apart_and_never_enter_a_mean():
    rows = [record("shaky", 0, "kid", 1e-3), record("shaky", 1, "kid", 3e-3), record("shaky", 2, "kid", None, status="diverged")]
    rows += [record("broken", seed, "kid", None, status="diverged") for seed in range(3)]
    # FID_inf is not recorded for the diverged seed: the row still counts the seed that diverged (the most of any metric).
    rows += [record("shaky", seed, "fid_inf", 5.0) for seed in range(2)]
    markdown = render_markdown(frame(rows))
    assert table_row(markdown, "shaky")[2:] == ["2 +/- 1.41", "5 +/- 0", "2 + 1 diverged"]
    assert table_row(markdown, "broken")[2:] == ["diverged", "n/a", "0 + 3 diverged"]
    assert "K = 5 broken seed 0 at step 40 (non-finite loss); K = 5 broken seed 1 at step 40" in markdown
    assert "only shaky ran without diverging" not in markdown  # shaky has a diverged seed too: nobody is ranked
    assert "every method had diverged seeds. Not ranked, because of diverged seeds: broken, shaky." in markdown


def test_summary_is_per_group_over_completed_seeds():
    rows = [record("a", seed, "kid", value) for seed, value in enumerate([1.0, 2.0, 6.0])] + [record("a", 3, "kid", None, status="diverged")]
    rows += [record("a", seed, "fid", value) for seed, value in enumerate([10.0, 30.0])]
    summary = summary_table(frame(rows)).set_index("metric")
    assert summary.loc["kid", ["mean", "std", "n", "n_diverged"]].tolist() == pytest.approx([3.0, 7**0.5, 3, 1])
    assert summary.loc["fid", ["mean", "std", "n", "n_diverged"]].tolist() == pytest.approx([20.0, 200**0.5, 2, 0])
    assert summary.loc["kid", "n_real"] == "500"


def seed_rows(values: dict[str, list[float]]) -> pd.DataFrame:
    """Per-seed KID rows (x 10^-3 as given) of the 'toy' task, one method per key."""
    return frame([record(method, seed, "kid", value * 1e-3) for method, numbers in values.items() for seed, value in enumerate(numbers)])


BEST = [10.0, 12.0, 11.0, 13.0]


def test_headline_names_the_lowest_mean_and_the_engines_verdicts_against_it():
    """Against `best` (mean 11.5): `worse` is 3 higher on every seed (paired: resolved, though its own seed spread
    is as large as the gap); `twin` moves by +/-0.1 around it (equivalent within 10%); `noisy` scatters by +/-5
    (undetermined). Wrong implementations: sorting descending names `noisy` best; an unpaired standard error
    leaves `worse` undetermined after Holm (p 0.016 x 3); calling every untested or unresolved method "tied"
    would put `noisy` with `twin`."""
    rows = seed_rows({
        "best": BEST, "worse": [b + d for b, d in zip(BEST, [3.0, 3.2, 2.9, 3.1])],
        "twin": [b + d for b, d in zip(BEST, [0.1, -0.1, 0.05, -0.04])], "noisy": [b + d for b, d in zip(BEST, [5.0, -4.0, 6.0, -5.0])],
    })  # fmt: skip
    assert headline_comparison(rows, ComparisonSettings()) == (
        "lowest mean KID x 10^3: best (11.5). Against best, paired by seed (Holm over the 3 tests of this table at alpha = 0.05; "
        "equivalent: TOST within +/- 10% of the compared-against mean): worse than it: worse; equivalent: twin; undetermined: noisy."
    )


def test_the_headline_leaves_diverged_methods_unranked_and_says_so():
    rows = frame(
        [record("a", seed, "kid", 0.01 + 0.001 * seed) for seed in range(3)]
        + [record("b", 0, "kid", 0.001)]
        + [record("b", 1, "kid", None, "diverged")]
    )
    text = headline_comparison(rows, ComparisonSettings())
    assert text.startswith("lowest mean KID x 10^3: a (11.0).") and text.endswith("Not ranked, because of diverged seeds: b.")
    assert "undetermined: b" in text  # one completed seed shared with a: no test
    only = headline_comparison(frame([record("a", 0, "kid", 0.01)]), ComparisonSettings())
    assert only == "only a ran."


def test_heldout_levels_and_sample_sizes_are_what_the_records_say():
    """The held-out level is the mean of the records' held-out values (0.1 and 0.3 give 0.2), and each sample size
    is the set of sizes the completed records report."""
    rows = [
        record("a", 0, "memorisation_share", 0.5, details=json.dumps({"heldout_value": 0.1}), n_real=10),
        record("a", 1, "memorisation_share", 0.7, details=json.dumps({"heldout_value": 0.3}), n_real=10),
        record("a", 0, "kid", 0.001, n_fake=2000),
        record("a", 1, "kid", 0.002, n_fake=1000),
    ]
    markdown = render_markdown(frame(rows))
    assert "Held-out real images score memorised share 0.2 (the level" in markdown
    assert "Sample sizes: KID x 10^3: n_real 500, n_fake 1000/2000; memorised share: n_real 10, n_fake 200." in markdown
    rows[3]["n_fake"] = 10000  # numeric order, not text order ("10000" < "2000")
    assert "n_fake 2000/10000;" in render_markdown(frame(rows))


def test_collect_gathers_every_record_sorted_with_its_hparams_and_details(tmp_path):
    def metrics_file(run: str, seed: int, values: dict[str, float]) -> Path:
        path = tmp_path / run / "metrics.json"
        path.parent.mkdir()
        records = [
            {
                **record("m", seed, metric, value),
                "run_config": {"method_hparams": {"b": 2, "a": 1}},
                "environment": {"code_version": "v1"},
                "subset_size": 100,
                "alpha": 0.05,
            }
            for metric, value in values.items()
        ]
        path.write_text(json.dumps({"records": records}))
        return path

    collected = collect_results([metrics_file("second", 1, {"kid": 0.2}), metrics_file("first", 0, {"kid": 0.1, "fid": 3.0})])
    assert collected[["seed", "metric", "value"]].values.tolist() == [[0, "fid", 3.0], [0, "kid", 0.1], [1, "kid", 0.2]]
    assert set(collected["method_hparams"]) == {'{"a": 1, "b": 2}'}
    assert list(collected.columns) == COLUMNS
    assert set(collected["details"]) == {'{"alpha": 0.05, "subset_size": 100}'}
    assert set(collected["code_version"]) == {"v1"}
    assert collected["run_dir"].tolist() == [str(tmp_path / "first")] * 2 + [str(tmp_path / "second")]

    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(BenchmarkError, match="broken.json is not a readable metrics file"):
        collect_results([tmp_path / "broken.json"])


def test_committed_results_render_to_the_golden_table():
    """A real results CSV (Fashion-MNIST -> MNIST, K = 10, four methods, three seeds, one diverged) renders exactly to
    the committed table. After a deliberate change of the table, check the new numbers by hand, then regenerate:
    `ganbench table --input tests/fixtures/results_small.csv --output tests/fixtures/results_small.md`."""
    rendered = render_markdown(pd.read_csv(FIXTURES / "results_small.csv"))
    assert rendered == (FIXTURES / "results_small.md").read_text()


def test_the_golden_table_agrees_with_its_csv():
    """Independent of the golden file: finetune's KID cell is the fixture's three KID values, averaged and scaled."""
    fixture = pd.read_csv(FIXTURES / "results_small.csv")
    kid = fixture[(fixture["method"] == "finetune") & (fixture["metric"] == "kid")]["value"].tolist()
    mean = sum(kid) / 3
    std = (sum((value - mean) ** 2 for value in kid) / 2) ** 0.5
    block = render_markdown(fixture).split("Fidelity and coverage:", 1)[1]
    line = next(line for line in block.splitlines() if line.startswith("| 10 | finetune |"))
    assert line.split("|")[3].strip() == f"{mean * 1e3:.1f} +/- {std * 1e3:.1f}"


def test_a_method_without_any_of_a_tables_metrics_has_no_row_in_it():
    rows = [record("fid_only", 0, "kid", 0.001), record("diverse_only", 0, "intra_cluster_lpips", 0.4)]
    markdown = render_markdown(frame(rows))
    fidelity, diversity = markdown.split("Fidelity and coverage:", 1)[1].split("Diversity, mode collapse and memorisation:", 1)
    assert "| 5 | diverse_only |" not in fidelity and "| 5 | fid_only |" not in diversity.split("K = 5")[0]
    assert table_row(markdown, "diverse_only", "Diversity, mode collapse and memorisation:")[2:] == ["0.4", "1"]


def test_checkpoints_appear_in_order_and_the_oracle_is_flagged():
    rows = [record("a", 0, "kid", 0.001, checkpoint=checkpoint) for checkpoint in (ORACLE, FINAL, SELECTED)]
    titles = [line for line in render_markdown(frame(rows)).splitlines() if line.startswith("### ")]
    assert titles == [
        f"### Checkpoint: {FINAL}, hyperparameters: {DEFAULTS}",
        f"### Checkpoint: {SELECTED}, hyperparameters: {DEFAULTS}",
        f"### Checkpoint: {ORACLE} (ORACLE: chosen on one half of the test set, scored on the other), hyperparameters: {DEFAULTS}",
    ]


def test_an_empty_frame_is_one_clear_error():
    with pytest.raises(BenchmarkError, match="no rows"):
        render_markdown(frame([]))


def test_broken_summary_is_caught(monkeypatch):
    """The hand-worked cases catch a wrong standard deviation: here a population std (ddof = 0)."""

    def population_std(frame: pd.DataFrame) -> pd.DataFrame:
        grouped = frame.assign(diverged=frame["status"].eq("diverged")).groupby(results.GROUP, sort=True)
        summary = grouped["value"].agg(mean="mean", std=lambda values: values.std(ddof=0), n="count").reset_index()
        summary["n_diverged"] = grouped["diverged"].sum().astype(int).to_numpy()
        summary["n_real"] = summary["n_fake"] = "500"
        return summary

    monkeypatch.setattr(results, "summary_table", population_std)
    with pytest.raises(AssertionError):
        test_cells_are_the_mean_and_sample_std_scaled_as_their_header_says()


def curve_rows(method: str, values_by_step: dict[int, list[float]]) -> list[dict]:
    """Adaptation-curve rows: validation KID at each step, one value per seed."""
    return [
        record(method, seed, "kid", value, checkpoint=CURVE, checkpoint_step=step, n_real=100, n_fake=500)
        for step, values in values_by_step.items()
        for seed, value in enumerate(values)
    ]


def test_the_curve_table_layout_orders_and_gaps():
    """K in numeric order, methods in name order whatever the row order; FID rows and missing values stay out of the
    KID table; a step a method was not scored at (here a meta-learner's inner step 2) is "n/a" for the others; each
    table has its header rule of one cell per step plus two, and ends with a blank line."""
    rows = [record(name, 0, "kid", 2e-3) for name in ("b", "a")]
    rows += curve_rows("b", {0: [4e-3], 5: [3e-3]}) + curve_rows("a", {0: [5e-3], 2: [1e-3], 5: [2e-3]})
    rows += [record("a", 0, "fid", 77.0, checkpoint=CURVE, checkpoint_step=0, n_real=100, n_fake=500)]
    rows += [record(name, 1, "kid", None, checkpoint=CURVE, checkpoint_step=0, n_real=100, n_fake=500) for name in ("a", "b")]
    rows += [{**row, "shots": 10} for row in curve_rows("a", {0: [6e-3]})] + [record("a", 0, "kid", 2e-3, shots=10)]
    curve = render_markdown(frame(rows[::-1])).split("### Adaptation curve", 1)[1]
    assert curve.index("K = 5 (") < curve.index("K = 10 (")
    k5 = curve.split("K = 5 (", 1)[1].split("K = 10 (", 1)[0]
    assert "| method | step 0 | step 2 | step 5 | n |\n|---|---|---|---|---|\n| a | 5 | **1** | **2** | 1 |\n| b | **4** | n/a | 3 | 1 |\n\n" in k5


def test_the_adaptation_curve_is_a_table_of_its_own_by_step():
    """Curve rows never enter the checkpoint tables (KID 1 and 9 at two steps would print a mean of 5 there); the
    curve table has one column per step, mean +/- std over seeds (KID x 10^3), the lowest mean per column in bold,
    so that a method best after 5 steps and another best at the end are both visible."""
    rows = [record(name, seed, "kid", 2e-3) for name in ("fast", "slow") for seed in (0, 1)]
    rows += curve_rows("fast", {0: [9e-3, 9e-3], 5: [1e-3, 3e-3], 300: [4e-3, 4e-3]})
    rows += curve_rows("slow", {0: [9e-3, 9e-3], 5: [6e-3, 8e-3], 300: [1e-3, 1e-3]})
    markdown = render_markdown(frame(rows))
    assert table_row(markdown, "fast")[2:] == ["2 +/- 0", "2"]  # the final checkpoint alone
    curve = markdown.split("### Adaptation curve: validation KID x 10^3 (lower) by adaptation step", 1)[1]
    assert "K = 5 (n_real 100, n_fake 500):" in curve
    assert "| method | step 0 | step 5 | step 300 | n |" in curve
    assert "| fast | **9** +/- 0 | **2** +/- 1.41 | 4 +/- 0 | 2 |" in curve
    assert "| slow | **9** +/- 0 | 7 +/- 1.41 | **1** +/- 0 | 2 |" in curve
    with pytest.raises(BenchmarkError, match="only adaptation curves"):
        render_markdown(frame(curve_rows("fast", {0: [1e-3]})))


def test_evaluation_passes_the_logged_validation_scores_on_as_curve_records():
    """One record per step and metric, with the validation split's sample sizes and the run's feature space."""
    logged = {10: {"kid_validation": 0.5, "fid_validation": 7.0, "n_real": 100, "n_fake": 500}, 0: {"kid_validation": 0.9}}
    records = curve_records(logged, {"feature_space": "encoder"})
    assert [(r["checkpoint_step"], r["metric"], r["value"]) for r in records] == [(0, "kid", 0.9), (10, "kid", 0.5), (10, "fid", 7.0)]
    assert all(r["checkpoint"] == CURVE and r["reference_set"] == "validation" and r["feature_space"] == "encoder" for r in records)
    assert (records[1]["n_real"], records[1]["n_fake"], records[0]["n_real"]) == (100, 500, None)


def test_negative_transfer_is_the_engines_verdict_against_scratch():
    """Against scratch (20, 22, 19, 21 x 10^-3): `hurts` is 5 higher on every seed (worse: negative transfer),
    `helps` 5 lower (better), `close` scatters around +1 (undetermined), `single` has one seed (no test). The
    cell of `hurts` is the paired difference with its t(3) 95% interval, checked against scipy. Wrong
    implementations: reading "lower is better" backwards swaps `helps` and `hurts`; an unpaired rule misses both
    (the seed spread of 1.3 is large against their Holm-adjusted p)."""
    scratch = [20.0, 22.0, 19.0, 21.0]
    rows = seed_rows({
        "scratch": scratch, "hurts": [s + d for s, d in zip(scratch, [5.1, 4.9, 5.2, 4.8])],
        "helps": [s - d for s, d in zip(scratch, [5.1, 4.9, 5.2, 4.8])], "close": [s + d for s, d in zip(scratch, [3.0, -1.0, 2.5, -0.5])],
    })  # fmt: skip
    rows = pd.concat([rows, frame([record("single", 0, "kid", 0.030)])], ignore_index=True)
    lines = results.versus_table(rows, "scratch", "final", ComparisonSettings(), "Transfer vs scratch")
    cells = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in lines if line.startswith("| ") and "K = " not in line}
    assert {method: cell.rsplit(": ", 1)[1] for method, cell in cells.items()} == {
        "close": "undetermined", "helps": "better", "hurts": "worse", "single": "undetermined",
    }  # fmt: skip
    differences = np.array([5.1, 4.9, 5.2, 4.8])
    low, high = stats.t.interval(0.95, 3, loc=differences.mean(), scale=stats.sem(differences))
    assert cells["hurts"].startswith(f"+5 [+{low:.3g}, +{high:.3g}], p_Holm ")
    assert "Holm over the 3 tests of this table at alpha = 0.05" in lines[0]  # `single` is no test
    assert "scratch" not in cells
    assert results.versus_table(rows[rows["method"] != "scratch"], "scratch", "final", ComparisonSettings(), "x") == []  # no baseline


def test_the_rendered_table_flags_negative_transfer_per_task_and_checkpoint():
    rows = [record("scratch", seed, "kid", 0.020 + 0.001 * seed) for seed in range(3)]
    rows += [record("finetune", seed, "kid", 0.040 + 0.001 * seed) for seed in range(3)]
    markdown = render_markdown(frame(rows))
    assert "Transfer vs scratch (a 'worse' is negative transfer), final checkpoint" in markdown
    assert "| finetune | +20 [+20, +20], p_Holm <0.001: worse |" in markdown
