"""Hyperparameter sweeps (benchmark.sweep, the plan's draws) and the selection rules (benchmark.hparam_selection)."""

from __future__ import annotations

import copy
import itertools
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from test_workflow import snakemake

import benchmark.sweep
from benchmark.config import load_config, validate_config
from benchmark.errors import BenchmarkError
from benchmark.hparam_selection import (
    CELL,
    DEFAULTS,
    LEAVE_ONE_TASK_OUT,
    ORACLE_DRAW,
    TARGET_VALIDATION,
    TARGET_VALIDATION_CROSS_FIT,
    cross_fitted_draws,
    expected_best_of_n,
    select_draws,
)
from benchmark.methods import get_method
from benchmark.plan import Plan, distinct_draws, method_hparams
from benchmark.results import render_markdown
from benchmark.selection import CURVE, FINAL, SELECTED, reference_halves
from conftest import REPO


def smoke_config(**sweep) -> dict:
    config = yaml.safe_load((REPO / "tests" / "smoke_config.yaml").read_text())
    config["sweep"] = sweep
    return validate_config(config)


# ---- drawing ---------------------------------------------------------------------------------------------------


def test_draw_zero_is_the_configured_defaults_and_every_draw_is_the_same_on_every_task():
    config = smoke_config(n_hparams=3)
    plan = Plan(config)
    assert {run.draw for run in plan.runs} == {0, 1, 2, 3}
    runs_per_draw = len(config["tasks"]) * len(config["shots"]) * len(config["seeds"])
    assert len(plan.runs) == runs_per_draw * sum(len(distinct_draws(config, method)) for method in plan.methods)
    # Nothing to sweep: one draw. A two-valued setting: at most two. Continuous ranges: every draw.
    assert distinct_draws(config, "scratch") == distinct_draws(config, "finetune") == [0]
    assert len(distinct_draws(config, "freeze_d")) <= 2 and distinct_draws(config, "l2sp") == [0, 1, 2, 3]
    for method in ("l2sp", "ewc", "maml_gan", "freeze_d+diffaug"):
        settings = {}
        for run in (run for run in plan.runs if run.method == method):
            settings.setdefault(run.draw, set()).add(json.dumps(plan.adapt(run).method_hparams, sort_keys=True))
        assert all(len(values) == 1 for values in settings.values()), settings  # one setting per draw, on every task and seed
        assert json.loads(settings[0].pop()) == method_hparams(smoke_config(), method)  # draw 0: no sweep's settings
    l2sp = [method_hparams(config, "l2sp", draw) for draw in range(4)]
    assert len({json.dumps(draw, sort_keys=True) for draw in l2sp}) == 4
    # Draw i does not depend on how many draws there are; another sweep seed gives other settings.
    assert method_hparams(smoke_config(n_hparams=7), "l2sp", 2) == l2sp[2]
    assert method_hparams(smoke_config(n_hparams=3, seed=1), "l2sp", 2) != l2sp[2]
    # A variant draws its base method's settings, so the two are compared at equal settings.
    assert method_hparams(config, "freeze_d+diffaug", 2) == method_hparams(config, "freeze_d", 2)


def test_run_folders_and_meta_trainings_are_keyed_by_the_draw():
    plan = Plan(smoke_config(n_hparams=2))
    assert len({run.run_dir for run in plan.runs}) == len(plan.runs)
    run = plan.run("digits_to_mnist", 5, "maml_gan", 0, draw=2)
    assert run.run_dir == "results/runs/digits_to_mnist/k5/maml_gan/h2/seed0"
    assert plan.artefacts(run)["meta_checkpoint"] == "results/metatrain/digits_all/maml_gan/h2/seed0/checkpoint.pt"
    assert plan.meta_train("maml_gan", 0, 2).method_hparams == method_hparams(plan.config, "maml_gan", 2)
    with pytest.raises(BenchmarkError, match="draw 3 is not in the config's sweep"):
        plan.run("digits_to_mnist", 5, "l2sp", 0, draw=3)
    with pytest.raises(BenchmarkError, match="draw 2 of finetune repeats the settings of an earlier draw"):
        plan.run("digits_to_mnist", 5, "finetune", 0, draw=2)


def test_values_come_from_the_declared_ranges_on_the_declared_scale(monkeypatch):
    """l2sp's lambda_g is declared log-scale over (1e-5, 1): about half of the draws must fall below the geometric
    midpoint 10^-2.5. A sampler that ignored log_scale would put about 0.3% there, shown at the end."""
    spec = get_method("l2sp").hyperparameters["lambda_g"]
    values = [benchmark.sweep.sample(spec, np.random.default_rng(i)) for i in range(400)]
    assert all(1e-5 <= value <= 1.0 for value in values)
    assert 0.4 < np.mean(np.asarray(values) < 10**-2.5) < 0.6
    counts = [benchmark.sweep.sample(get_method("cdc").hyperparameters["anchor_every"], np.random.default_rng(i)) for i in range(200)]
    assert set(counts) == set(range(2, 9))  # whole numbers, both ends included
    choices = {benchmark.sweep.sample(get_method("ewc").hyperparameters["form"], np.random.default_rng(i)) for i in range(50)}
    assert choices == set(get_method("ewc").hyperparameters["form"].search)
    flags = [benchmark.sweep.sample(get_method("maml_gan").hyperparameters["first_order"], np.random.default_rng(i)) for i in range(50)]
    assert set(flags) == {False, True} and all(isinstance(flag, bool) for flag in flags)  # flags, not the numbers 0 and 1

    linear = spec.__class__(default=spec.default, search=spec.search, log_scale=False)
    wrong = [benchmark.sweep.sample(linear, np.random.default_rng(i)) for i in range(400)]
    assert np.mean(np.asarray(wrong) < 10**-2.5) < 0.05


def test_held_and_unswept_hyperparameters_keep_their_draw_zero_value():
    config = smoke_config(n_hparams=4, hold={"maml_gan": ["meta_iterations", "inner_steps"]})
    configured = config["adapt"]["method_hparams"]["maml_gan"]
    for draw in range(1, 5):
        drawn = method_hparams(config, "maml_gan", draw)
        assert drawn["meta_iterations"] == configured["meta_iterations"] and drawn["inner_steps"] == configured["inner_steps"]
        assert "loss" not in drawn  # swept=False: a meta-learner's loss must be the adaptation loss
    assert {method_hparams(config, "maml_gan", draw)["outer_lr"] for draw in range(1, 5)} != {1e-4}
    with pytest.raises(BenchmarkError, match="sweep.hold.maml_gan': maml_gan has no hyperparameter.*meta_iteration"):
        Plan(smoke_config(n_hparams=1, hold={"maml_gan": ["meta_iteration"]}))


# ---- selection rules on constructed results -------------------------------------------------------------------

# Validation scores (KID) per task and draw, the same for both seeds unless changed below; reference scores apart.
VALIDATION = {
    "A": {0: 0.30, 1: 0.10, 2: 0.20},  # target validation on A: draw 1
    "B": {0: 0.50, 1: 0.40, 2: 0.05},  # B and C prefer draw 2: leave-one-task-out on A picks 2
    "C": {0: 0.60, 1: 0.70, 2: 0.10},
    "D": {0: 0.20, 1: 0.10, 2: 0.30},  # the only cross-domain task: leave-one-task-out is not defined there
}
REFERENCE = {"A": {0: 0.01, 1: 0.50, 2: 0.40}}  # the oracle on A picks draw 0: three rules, three answers


def constructed_results(validation=VALIDATION, reference=REFERENCE) -> pd.DataFrame:
    rows = []
    for task, draws in validation.items():
        kind = "cross-domain" if task == "D" else "few-shot"
        for draw, score in draws.items():
            for seed in (0, 1):
                base = {"task": task, "task_kind": kind, "shots": 5, "method": "m", "seed": seed, "draw": draw, "metric": "kid",
                        "status": "completed", "method_hparams": json.dumps({"x": draw}), "n_real": 100, "n_fake": 200,
                        "feature_space": "f", "details": "{}", "split_draw": seed, "pretrain_seed": 0}  # fmt: skip
                # The validation curve: worse at step 0, the draw's score at the last step (100).
                rows.append({**base, "checkpoint": CURVE, "checkpoint_step": 0, "value": 1.0})
                rows.append({**base, "checkpoint": CURVE, "checkpoint_step": 100, "value": score})
                ref = reference.get(task, {}).get(draw, 0.3)
                for checkpoint in (FINAL, SELECTED):
                    rows.append({**base, "checkpoint": checkpoint, "checkpoint_step": 100, "value": ref})
                    # The reference set's halves (sweep.oracle): the oracle chooses on the first, reports the second.
                    rows.append({**base, "metric": "kid_choosing_half", "checkpoint": checkpoint, "checkpoint_step": 100, "value": ref})
                    rows.append({**base, "metric": "kid_reporting_half", "checkpoint": checkpoint, "checkpoint_step": 100, "value": ref + 0.002})
                # FID rows that rank the draws the other way round: selection on KID must not read them.
                fid = {**base, "metric": "fid"}
                rows.append({**fid, "checkpoint": CURVE, "checkpoint_step": 100, "value": 100 - 100 * score})
                rows.append({**fid, "checkpoint": FINAL, "checkpoint_step": 100, "value": 100 - 100 * ref})
    return pd.DataFrame(rows)


def chosen(selection: pd.DataFrame) -> dict[tuple[str, str], int]:
    return {(row["task"], row["rule"]): int(row["draw"]) for _, row in selection.iterrows()}


def test_the_three_rules_pick_what_they_should_and_can_disagree():
    picks = chosen(select_draws(constructed_results(), FINAL, "kid", oracle=True))
    assert picks[("A", DEFAULTS)] == 0
    assert picks[("A", TARGET_VALIDATION)] == 1
    assert picks[("A", LEAVE_ONE_TASK_OUT)] == 2  # B and C both rank draw 2 first
    assert picks[("A", ORACLE_DRAW)] == 0
    assert picks[("B", LEAVE_ONE_TASK_OUT)] == 2  # mean ranks over A and C: draw 0 2.5, draw 1 2.0, draw 2 1.5
    assert picks[("C", LEAVE_ONE_TASK_OUT)] == 1  # over A and B: draws 1 and 2 tie at 1.5; the lower draw wins
    assert ("D", LEAVE_ONE_TASK_OUT) not in picks and picks[("D", TARGET_VALIDATION)] == 1
    assert not any(rule == ORACLE_DRAW for _, rule in chosen(select_draws(constructed_results(), FINAL, "kid")))


def test_no_rule_but_the_oracle_reads_the_reference_set():
    """Reversing every reference-set score changes only the oracle's pick. A target-validation rule that read the
    checkpoint rows (the reference set) instead of the validation curve would follow the reversal and fail."""
    honest = chosen(select_draws(constructed_results(), FINAL, "kid", oracle=True))
    poisoned = constructed_results()
    reference_rows = ~poisoned["checkpoint"].eq(CURVE)
    poisoned.loc[reference_rows, "value"] = 1.0 - poisoned.loc[reference_rows, "value"]
    after = chosen(select_draws(poisoned, FINAL, "kid", oracle=True))
    assert {key: value for key, value in after.items() if key[1] != ORACLE_DRAW} == {
        key: value for key, value in honest.items() if key[1] != ORACLE_DRAW
    }
    assert after[("A", ORACLE_DRAW)] != honest[("A", ORACLE_DRAW)]


def test_the_oracle_chooses_on_one_half_of_the_reference_set_and_reports_on_the_other():
    """The oracle's pick follows the choosing half alone: reversing the whole-set KID and the reporting half changes
    nothing (an oracle that chose on the whole reference set, the rule before, follows that reversal and fails).
    The sweep report shows the reporting half at the pick: 12 (0.012) for m's draw 0 on A; an oracle reporting the
    half it chose on would show the choosing half's 10. Results scored without the halves are refused by name."""
    frame = constructed_results()
    honest = chosen(select_draws(frame, FINAL, "kid", oracle=True))
    poisoned = frame.copy()
    rows = poisoned["checkpoint"].ne(CURVE) & poisoned["metric"].isin(["kid", "kid_reporting_half"])
    poisoned.loc[rows, "value"] = 1.0 - poisoned.loc[rows, "value"]
    assert chosen(select_draws(poisoned, FINAL, "kid", oracle=True)) == honest
    report = render_markdown(frame, oracle_draws=True)
    row = next(line for line in report.split("### A (few-shot), K = 5, checkpoint: final")[1].splitlines() if line.startswith("| m |"))
    assert row.endswith("| d0: 12 +/- 0 (#1) |"), row
    without_halves = frame[~frame["metric"].str.endswith("_half")]
    with pytest.raises(BenchmarkError, match="kid_choosing_half.*evaluated without sweep.oracle. Set sweep.oracle: true"):
        select_draws(without_halves, FINAL, "kid", oracle=True)
    assert chosen(select_draws(without_halves, FINAL, "kid")) == {key: value for key, value in honest.items() if key[1] != ORACLE_DRAW}


def test_reference_halves_split_the_set_evenly_into_disjoint_halves():
    for count in (1, 2, 7, 300):
        choosing, reporting = reference_halves(count)
        assert sorted([*choosing, *reporting]) == list(range(count)) and not set(choosing) & set(reporting)
        assert len(choosing) - len(reporting) in (0, 1)
    labels = np.repeat(np.arange(10), 30)  # a reference set stored class by class: each half gets every class evenly
    choosing, reporting = reference_halves(len(labels))
    assert np.bincount(labels[choosing]).tolist() == np.bincount(labels[reporting]).tolist() == [15] * 10


def test_a_draw_with_a_diverged_seed_is_never_selected():
    frame = constructed_results()
    diverged = frame["task"].eq("A") & frame["draw"].eq(1) & frame["seed"].eq(1)
    frame.loc[diverged, "value"] = math.nan
    frame.loc[diverged, "status"] = "diverged"
    picks = chosen(select_draws(frame, FINAL, "kid", oracle=True))
    assert picks[("A", TARGET_VALIDATION)] == 2  # draw 1's other seed is best, but one seed failed
    assert picks[("C", LEAVE_ONE_TASK_OUT)] == 2  # draw 1 failed on A, so it cannot be carried over to C


def test_checkpoint_selection_scores_a_run_by_its_best_validation_step():
    frame = constructed_results()
    step50 = frame[frame["checkpoint"].eq(CURVE) & frame["checkpoint_step"].eq(100)].assign(checkpoint_step=50)
    step50.loc[step50["task"].eq("A") & step50["draw"].eq(0), "value"] = 0.0  # draw 0 on A is best at step 50
    frame = pd.concat([frame, step50.assign(value=step50["value"].where(step50["value"].eq(0.0), 0.9))], ignore_index=True)
    assert chosen(select_draws(frame, SELECTED, "kid"))[("A", TARGET_VALIDATION)] == 0
    assert chosen(select_draws(frame, FINAL, "kid"))[("A", TARGET_VALIDATION)] == 1  # final: the last step's score


def test_the_sweep_report_names_every_rule_and_the_settings_chosen():
    frame = constructed_results()
    frame = pd.concat([frame, frame.assign(method="scratch", value=frame["value"] + 0.05)], ignore_index=True)
    report = render_markdown(frame, oracle_draws=True)
    assert "Hyperparameters: *target validation, cross-fitted*: each seed of each method at the draw the target-validation rule" in report
    section = report.split("### A (few-shot), K = 5, checkpoint: final")[1].split("###")[0]
    header = section.strip().splitlines()[0]
    assert all(rule in header for rule in (DEFAULTS, TARGET_VALIDATION, TARGET_VALIDATION_CROSS_FIT, LEAVE_ONE_TASK_OUT, ORACLE_DRAW))
    row = next(line for line in section.splitlines() if line.startswith("| m |"))
    assert row == "| m | d0: 10 +/- 0 (#1) | d1: 500.0 +/- 0 (#1) | d1: 500.0 +/- 0 (#1) | d2: 400.0 +/- 0 (#1) | d0: 12 +/- 0 (#1) |"
    assert '| m | target validation | 1 | `{"x": 1}` | A K=5 final; A K=5 validation-selected; D K=5 final; D K=5 validation-selected |' in report
    assert '| m | target validation | 2 | `{"x": 2}` | B K=5 final; B K=5 validation-selected; C K=5 final; C' in report
    # On A, scratch (0.05 worse on every draw) ranks second under every rule: the ranking never changes.
    assert "Lowest mean under each rule: defaults (draw 0): m; target validation: m; target validation, cross-fitted: m; leave-one" in section
    assert "Kendall's tau of each rule's order of means with the defaults' (1: unchanged): target validation 1.00;" in section
    # The detailed tables show m at its target-validation draw (1 on A): reference KID 0.5 -> 500.
    detailed = report.split("\n## A (few-shot)\n")[1].split("\n## ")[0]
    assert "### Checkpoint: final, hyperparameters: target validation" in detailed
    assert re.search(r"\| 5 \| m \| 500\.0 \+/- 0 \|", detailed)


def test_the_report_shows_when_a_rule_changes_the_ranking():
    """ "swap" is second to m at the defaults but first at its target-validation draw: the best method and the
    rank correlation under that rule must say so (a report that always ranked at the defaults would not)."""
    frame = constructed_results()
    swap = frame.assign(method="swap")
    on_a = swap["task"].eq("A") & ~swap["checkpoint"].eq(CURVE)
    swap.loc[on_a, "value"] = swap.loc[on_a, "draw"].map({0: 0.02, 1: 0.0, 2: 0.42})
    frame = pd.concat([frame, swap, frame.assign(method="scratch", value=frame["value"] + 0.05)], ignore_index=True)
    section = render_markdown(frame).split("### A (few-shot), K = 5, checkpoint: final")[1].split("###")[0]
    assert "Lowest mean under each rule: defaults (draw 0): m; target validation: swap; target validation, cross-fitted: swap; leave" in section
    assert "target validation 0.33; target validation, cross-fitted 0.33; leave-one-task-out 1.00." in section  # 1 of 3 pairs flips


def test_a_draw_with_a_diverged_seed_shows_as_diverged_not_as_the_other_seeds_mean():
    frame = constructed_results()
    diverged = frame["task"].eq("A") & frame["draw"].eq(0) & frame["seed"].eq(1)
    frame.loc[diverged, "value"], frame.loc[diverged, "status"] = math.nan, "diverged"
    section = render_markdown(frame).split("### A (few-shot), K = 5, checkpoint: final")[1].split("###")[0]
    assert next(line for line in section.splitlines() if line.startswith("| m |")).startswith("| m | d0: diverged | d1: 500.0 +/- 0 (#1) | d1: 500.0")


def test_a_seed_reports_the_draw_the_other_seeds_chose():
    """On A, seed 0's validation scores favour draw 1 and seed 1's favour draw 2: cross-fitted, seed 0 reports draw 2
    and seed 1 draw 1, so no seed is scored at a draw it chose. The detailed table's mean is over those runs; an
    in-sample choice (every seed at the draw the mean of both prefers) would report draw 1 on both seeds."""
    frame = constructed_results()
    curve = frame["checkpoint"].eq(CURVE) & frame["task"].eq("A") & frame["checkpoint_step"].eq(100) & frame["metric"].eq("kid")
    frame.loc[curve & frame["seed"].eq(0), "value"] = frame.loc[curve & frame["seed"].eq(0), "draw"].map({0: 0.3, 1: 0.05, 2: 0.2})
    frame.loc[curve & frame["seed"].eq(1), "value"] = frame.loc[curve & frame["seed"].eq(1), "draw"].map({0: 0.3, 1: 0.2, 2: 0.1})
    picks = cross_fitted_draws(frame, FINAL, "kid").set_index(["task", "seed"])["draw"]
    assert (picks[("A", 0)], picks[("A", 1)]) == (2, 1)
    assert chosen(select_draws(frame, FINAL, "kid"))[("A", TARGET_VALIDATION)] == 1  # in-sample: mean 0.125 against 0.15
    reference = frame["task"].eq("A") & frame["checkpoint"].eq(FINAL) & frame["metric"].eq("kid")
    frame.loc[reference, "value"] = frame.loc[reference, "draw"].map({0: 0.01, 1: 0.50, 2: 0.40}) + frame.loc[reference, "seed"] * 0.02
    detailed = render_markdown(frame).split("\n## A (few-shot)\n")[1].split("### Checkpoint: validation")[0]
    # seed 0 at draw 2 (0.40), seed 1 at draw 1 (0.52): mean 460 +/- 85
    assert re.search(r"\| 5 \| m \| 460\.0 \+/- 84\.9 \|", detailed), detailed
    single = frame[frame["seed"].eq(0)]  # one seed: no other seed to choose on, so it chooses on itself
    assert cross_fitted_draws(single, FINAL, "kid").set_index("task").loc["A", "draw"] == 1


def test_expected_best_of_n_draws_is_the_expected_minimum():
    """Scores 1, 2, 3: one draw expects their mean, 2; two draws (with replacement) 14/9, checked by enumerating every
    pair; many draws approach the best, 1. One draw run: flat at its score."""
    means = pd.DataFrame({"task": "t", "task_kind": "k", "shots": 5, "method": "a", "draw": [0, 1, 2], "mean": [2.0, 3.0, 1.0]})
    means = pd.concat([means, pd.DataFrame({"task": "t", "task_kind": "k", "shots": 5, "method": "b", "draw": [0], "mean": [5.0]})])
    table = expected_best_of_n(means, [1, 2, 30]).set_index(["method", "n"])["expected"]
    enumerated = np.mean([min(x, y) for x, y in itertools.product([1.0, 2.0, 3.0], repeat=2)])
    assert table[("a", 1)] == pytest.approx(2.0) and table[("a", 2)] == pytest.approx(enumerated) == pytest.approx(14 / 9)
    assert table[("a", 30)] == pytest.approx(1.0, abs=1e-4) and table[("b", 1)] == table[("b", 30)] == 5.0
    assert set(CELL) < set(expected_best_of_n(means, [1]).columns)


def test_without_a_sweep_the_tables_name_the_defaults():
    frame = constructed_results()
    report = render_markdown(frame[frame["draw"].eq(0)])
    assert "Hyperparameters: each method's defaults (draw 0" in report and "## Hyperparameter sweep" not in report


def test_the_workflow_plans_every_draw_and_passes_the_oracle_switch(tmp_path):
    config = yaml.safe_load((REPO / "tests" / "smoke_config.yaml").read_text())
    config["sweep"] = {"n_hparams": 2, "oracle": True}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(copy.deepcopy(config)))
    result = snakemake(tmp_path, path, "-n", "-p")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.MULTILINE))
    plan = Plan(validate_config(config))
    assert int(counts["adapt"]) == len(plan.runs) > 2 * len(Plan(smoke_config()).runs)
    assert int(counts["meta_train"]) == 2 * 3 * 2  # maml_gan and reptile, 3 draws, 2 sources
    assert "--oracle-draws" in result.stdout


def test_the_cpu_sweep_preset_can_compute_every_rule():
    """config/sweep.yaml: two tasks of each kind (leave-one-task-out needs another task of the same kind), every
    draw of the swept methods, the oracle shown."""
    config = load_config(REPO / "config" / "sweep.yaml")
    kinds = [task["kind"] for task in config["tasks"].values()]
    assert kinds.count("few-shot") >= 2 and kinds.count("cross-domain") >= 2 and config["sweep"]["oracle"]
    plan = Plan(config)
    assert {(run.method, run.draw) for run in plan.runs} >= {("l2sp", 3), ("ewc", 3)} and len(plan.runs) == 96
