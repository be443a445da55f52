"""Results: run records gathered into one tidy frame, and the tables rendered from it, without retraining anything.

The `collect` and `table` stages write what these functions compute.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmark.comparison import EQUIVALENT, UNDETERMINED, WORSE, ComparisonSettings, against, difference_text, family_note, seed_values
from benchmark.completeness import check_complete
from benchmark.errors import BenchmarkError
from benchmark.hparam_selection import (
    CELL,
    DEFAULTS,
    LEAVE_ONE_TASK_OUT,
    ORACLE_DRAW,
    TARGET_VALIDATION,
    TARGET_VALIDATION_CROSS_FIT,
    cross_fitted_draws,
    draw_means,
    expected_best_of_n,
    oracle_report_rows,
    select_draws,
    validation_scores,
)
from benchmark.selection import CHECKPOINTS, CURVE, FINAL, SELECTED
from benchmark.settings import RUN_FIELDS

# What a summary row is about: a table cell is the seeds of one group.
GROUP = ["task", "task_kind", "shots", "method", "checkpoint", "metric"]
COLUMNS = [
    *GROUP[:-1], *(field for field in RUN_FIELDS if field not in GROUP), "status", "checkpoint_step", "metric", "value",
    "n_real", "n_fake", "feature_space", "feature_weights_sha256", "reference_sha256", "code_version", "method_hparams",
    "details", "run_dir", "torch_version", "torch_threads", "device",
]  # fmt: skip
# Record keys that are columns, or that every record repeats (they stay in metrics.json).
NOT_DETAILS = set(COLUMNS) | {"run_config", "evaluation", "environment", "feature_extractor", "reference_set"}


@dataclass(frozen=True)
class MetricColumn:
    metric: str
    label: str
    scale: float = 1.0
    better: str = "lower"


FIDELITY = [
    MetricColumn("kid", "KID x 10^3", 1e3),
    MetricColumn("fid", "FID"),
    MetricColumn("fid_inf", "FID_inf"),
    MetricColumn("precision", "precision", better="higher"),
    MetricColumn("recall", "recall", better="higher"),
    MetricColumn("density", "density", better="~1"),
    MetricColumn("coverage", "coverage", better="higher"),
]
DIVERSITY = [
    MetricColumn("intra_cluster_lpips", "intra-cluster encoder-LPIPS", better="higher"),
    MetricColumn("ndb_fraction", "NDB/K"),
    MetricColumn("ndb_jsd", "JSD (bins)"),
    MetricColumn("classes_covered", "classes covered", better="higher"),
    MetricColumn("class_kl", "class KL"),
    MetricColumn("memorisation_share", "memorised share"),
    MetricColumn("nn_ratio_share", "NN-ratio share"),
]
HEADLINE = FIDELITY[0]
METRIC_DIRECTIONS = {column.metric: column.better for column in (*FIDELITY, *DIVERSITY)}
# The two pre-declared comparisons: the method without transfer (negative transfer) and plain fine-tuning, the
# transfer every other method claims to improve on.
NO_TRANSFER = "scratch"
BASELINE = "finetune"


def collect_results(metrics_files: list[Path]) -> pd.DataFrame:
    rows = []
    for path in metrics_files:
        try:
            records = json.loads(Path(path).read_text())["records"]
        except (OSError, ValueError, KeyError) as error:
            raise BenchmarkError(f"{path} is not a readable metrics file ({error}). Rerun its evaluation.") from error
        for record in records:
            row = {column: record.get(column) for column in COLUMNS}
            row["code_version"] = record["environment"]["code_version"]
            row["torch_version"] = record["environment"].get("torch")
            row["torch_threads"] = record["environment"].get("torch_threads")
            row["device"] = record["environment"].get("device")
            row["method_hparams"] = json.dumps(record["run_config"]["method_hparams"], sort_keys=True)
            row["details"] = json.dumps({key: value for key, value in record.items() if key not in NOT_DETAILS}, sort_keys=True)
            row["run_dir"] = str(Path(path).parent)
            rows.append(row)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    check_complete(frame, "the metrics files")
    return frame.sort_values(["task", "shots", "method", "seed", "checkpoint", "metric"], kind="stable").reset_index(drop=True)


TRAINING_COLUMNS = [*GROUP[:4], *(field for field in RUN_FIELDS if field not in GROUP), "step", "quantity", "value"]


def collect_training(train_logs: list[Path]) -> pd.DataFrame:
    """Every run's training log as tidy rows: the run's fields, the step, and each logged quantity (losses,
    discriminator outputs, steps/s) or validation score (`kid_validation`, ...) at that step."""
    rows = []
    for path in train_logs:
        path = Path(path)
        config_path = path.parent / "config.json"
        try:
            run = json.loads(config_path.read_text())
            fields = {field: run[field] for field in RUN_FIELDS}
            entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except (OSError, ValueError, KeyError) as error:
            raise BenchmarkError(f"{path} or {config_path} is not readable ({error}). Delete the run folder {path.parent} and rerun it.") from error
        for entry in entries:
            values = entry.get("eval", {}) if "eval" in entry else {k: v for k, v in entry.items() if k != "step"}
            for quantity, value in values.items():
                # Numbers only: a divergence entry ("diverged": its reason) is in the run's records already.
                if quantity in ("n_real", "n_fake") or isinstance(value, bool) or not isinstance(value, int | float):
                    continue
                rows.append({**fields, "step": int(entry["step"]), "quantity": quantity, "value": float(value)})
    frame = pd.DataFrame(rows, columns=TRAINING_COLUMNS)
    return frame.sort_values(["task", "shots", "method", "draw", "seed", "quantity", "step"], kind="stable").reset_index(drop=True)


def summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (task, K, method, checkpoint, metric): mean and sample standard deviation over the seeds that completed,
    n of them, and how many seeds diverged (those have no value and never enter a mean)."""
    frame = frame.assign(diverged=frame["status"].eq("diverged"))
    grouped = frame.groupby(GROUP, sort=True)
    summary = grouped["value"].agg(mean="mean", std="std", n="count").reset_index()
    summary["n_diverged"] = grouped["diverged"].sum().astype(int).to_numpy()
    completed = frame[~frame["diverged"]]
    sizes = completed.groupby(GROUP, sort=True)[["n_real", "n_fake"]].agg(_size_text)
    return summary.merge(sizes.reset_index(), on=GROUP, how="left")


def _count_text(value: float | int | str | None) -> str:
    return "" if pd.isna(value) or value == "" else str(int(float(value)))


def _size_text(values: pd.Series) -> str:
    """The distinct sample sizes of some records, in numeric order: "2000", or "1000/2000" when they differ."""
    return "/".join(sorted({_count_text(value) for value in values} - {""}, key=int))


def _number(value: float) -> str:
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3g}"


def _cell(row: pd.Series | None, column: MetricColumn) -> str:
    if row is None:
        return "n/a"
    if row["n"] == 0:
        return "diverged" if row["n_diverged"] else "n/a"
    mean = _number(row["mean"] * column.scale)
    return mean if pd.isna(row["std"]) else f"{mean} +/- {_number(row['std'] * column.scale)}"


def _seed_count(rows: list[pd.Series]) -> str:
    """Seeds behind a table row: "3", or "2 + 1 diverged" when some diverged."""
    completed = sorted({int(row["n"]) for row in rows})
    diverged = max((int(row["n_diverged"]) for row in rows), default=0)
    text = "/".join(map(str, completed))
    return f"{text} + {diverged} diverged" if diverged else text


def _metric_table(block: pd.DataFrame, columns: list[MetricColumn]) -> list[str]:
    present = [column for column in columns if (block["metric"] == column.metric).any()]
    if not present:
        return []
    header = "| K | method | " + " | ".join(f"{c.label} ({c.better})" for c in present) + " | n |"
    lines = [header, "|" + "---|" * (len(present) + 3)]
    for (shots, method), rows in block.groupby(["shots", "method"], sort=True):
        by_metric = {row["metric"]: row for _, row in rows.iterrows()}
        if not any(column.metric in by_metric for column in present):
            continue  # a method with none of this table's metrics has no row here, rather than a row of n/a
        cells = [_cell(by_metric.get(column.metric), column) for column in present]
        count = _seed_count([by_metric[c.metric] for c in present if c.metric in by_metric])
        lines.append(f"| {shots} | {method} | " + " | ".join(cells) + f" | {count} |")
    return lines + [""]


def _sample_sizes(block: pd.DataFrame) -> str:
    sizes = []
    for column in (HEADLINE, DIVERSITY[0], DIVERSITY[-2]):
        rows = block[(block["metric"] == column.metric) & block["value"].notna()]
        if not rows.empty:
            sizes.append(f"{column.label}: n_real {_size_text(rows['n_real'])}, n_fake {_size_text(rows['n_fake'])}")
    return "; ".join(sizes)


def _heldout_levels(frame: pd.DataFrame) -> str:
    """What held-out real images score on the memorisation metrics: the level of a generator that copies nothing."""
    parts = []
    for column in DIVERSITY[-2:]:
        rows = frame[frame["metric"] == column.metric]
        values = [json.loads(details).get("heldout_value") for details in rows["details"]]
        values = [value for value in values if value is not None]
        if values:
            parts.append(f"{column.label} {sum(values) / len(values):.3g}")
    return ", ".join(parts)


def _divergences(frame: pd.DataFrame) -> list[str]:
    diverged = frame[frame["status"].eq("diverged")].drop_duplicates(["shots", "method", "seed"])
    if diverged.empty:
        return []
    runs = []
    for _, row in diverged.sort_values(["shots", "method", "seed"]).iterrows():
        details = json.loads(row["details"])
        runs.append(f"K = {row['shots']} {row['method']} seed {row['seed']} at step {details['diverged_at_step']} ({details['divergence_reason']})")
    return [f'Diverged runs (no scores; shown as "diverged", left out of means and ranking): {"; ".join(runs)}.', ""]


def render_markdown(frame: pd.DataFrame, oracle_draws: bool = False, settings: ComparisonSettings | None = None) -> str:
    """The results report. With a sweep (more than one hyperparameter draw), a section per task compares the
    methods under every selection rule (`benchmark.hparam_selection`), and the detailed tables show each method at
    its target-validation draw; `oracle_draws` adds the oracle rule. Every verdict comes from the comparison
    engine at `settings` (level and equivalence margin)."""
    settings = settings or ComparisonSettings()
    if frame.empty:
        raise BenchmarkError("No results to tabulate: the results CSV has no rows. Run the benchmark first.")
    frame = frame.assign(draw=frame["draw"].fillna(0).astype(int) if "draw" in frame else 0)  # CSVs from before sweeps
    check_complete(frame, "the results")
    sweep = frame["draw"].nunique() > 1
    sweep_lines = []
    if sweep:
        # The draws every rule picks, per checkpoint, worked out once for the sweep section and the detailed tables.
        selections = {checkpoint: select_draws(frame, checkpoint, HEADLINE.metric, oracle=oracle_draws) for checkpoint in CHECKPOINTS}
        sweep_lines = sweep_report(frame, selections, oracle_draws)
        frame = at_cross_fitted_draws(frame)
    # Sample sizes are text ("5000", or "5000/4000" when seeds differ). Read back from the CSV, a column with a
    # diverged run (no sizes) is float: "5000.0" would be printed without the int().
    frame = frame.assign(**{column: frame[column].map(_count_text) for column in ("n_real", "n_fake")})
    curve, frame = frame[frame["checkpoint"].eq(CURVE)], frame[~frame["checkpoint"].eq(CURVE)]
    if frame.empty:
        raise BenchmarkError("No results to tabulate: the results CSV holds only adaptation curves. Rerun the evaluations.")
    summary = summary_table(frame)
    hyperparameters = (
        f"*{TARGET_VALIDATION_CROSS_FIT}*: each seed of each method at the draw the target-validation rule selects for the "
        "table's checkpoint on the other seeds' validation scores (see the sweep section)"
        if sweep
        else "each method's defaults (draw 0, with the config's adapt.method_hparams); no sweep"
    )
    lines = [
        "# Results",
        "",
        f"Hyperparameters: {hyperparameters}.",
        "",
        "Mean +/- sample standard deviation over seeds (each seed: its own split draw of the K shots and its own",
        "training seed); n = number of seeds that completed (a diverged seed is counted apart and never enters a",
        "mean). Each column says which direction is better.",
        "",
        "- KID is the headline distance: it is unbiased, while FID is biased upwards when the reference set is",
        "  small (few-shot targets have a few hundred reference images). KID, FID, precision, recall, density,",
        "  coverage, NDB and the class metrics are computed on the feature space each task names, not on",
        "  Inception-v3 unless it says so. Precision/recall/density/coverage use k-NN balls (k in the CSV).",
        "- Diversity and memorisation compare generated images with the run's K training shots in encoder-LPIPS",
        "  (an LPIPS-style distance on the domain encoder's conv layers, unlearned weights). Intra-cluster",
        "  diversity is higher-is-better only among generators of similar fidelity: noise is diverse too.",
        "- Checkpoints: *final* is the last step; *validation-selected* is the evaluation step with the lowest",
        "  validation-split score. An *oracle* selection, when shown, chose the checkpoint on one half of the",
        "  reference (test) set and is scored on the other half: test-distribution images chose it, so do not",
        "  compare it with other papers' numbers as if it were held out.",
        "- The *adaptation curve* is KID on the validation split (not the reference set) after each number of",
        "  adaptation steps, scored during training (step 0: the starting point): which method is best after a",
        "  short budget, not only after the full one.",
        "",
    ]
    lines += sweep_lines
    for (task, kind), block in summary.groupby(["task", "task_kind"], sort=True):
        task_rows = frame[frame["task"] == task]
        spaces = ", ".join(sorted(set(task_rows["feature_space"].dropna())))
        lines += [f"## {task} ({kind})", "", f"Feature spaces: {spaces}. Sample sizes: {_sample_sizes(task_rows)}.", ""]
        levels = _heldout_levels(task_rows)
        if levels:
            lines += [f"Held-out real images score {levels} (the level of a generator that copies nothing).", ""]
        lines += _divergences(task_rows)
        checkpoints = sorted(set(block["checkpoint"]), key=lambda name: ([*CHECKPOINTS, name]).index(name))
        for checkpoint in checkpoints:
            rows = block[block["checkpoint"] == checkpoint]
            title = f"### Checkpoint: {checkpoint}"
            if checkpoint.startswith("oracle"):
                title += " (ORACLE: chosen on one half of the test set, scored on the other)"
            title += f", hyperparameters: {TARGET_VALIDATION_CROSS_FIT if sweep else DEFAULTS}"
            lines += [title, "", "Fidelity and coverage:", ""] + _metric_table(rows, FIDELITY)
            lines += ["Diversity, mode collapse and memorisation:", ""] + _metric_table(rows, DIVERSITY)
            seed_rows = frame[frame["task"].eq(task) & frame["checkpoint"].eq(checkpoint)]
            for shots, headline in seed_rows[seed_rows["metric"].eq(HEADLINE.metric)].groupby("shots", sort=True):
                lines += [f"K = {shots}, {checkpoint}: {headline_comparison(headline, settings)}", ""]
            lines += versus_table(seed_rows, NO_TRANSFER, checkpoint, settings, f"Transfer vs {NO_TRANSFER} (a 'worse' is negative transfer)")
            lines += versus_table(seed_rows, BASELINE, checkpoint, settings, f"Against plain fine-tuning ({BASELINE})")
        lines += curve_table(curve[curve["task"] == task], f"{TARGET_VALIDATION_CROSS_FIT} (chosen on these curves)" if sweep else DEFAULTS)
    return "\n".join(lines)


def versus_table(rows: pd.DataFrame, versus: str, checkpoint: str, settings: ComparisonSettings, purpose: str) -> list[str]:
    """Per K, every method's headline difference to `versus` from the comparison engine (`benchmark.comparison`):
    the paired difference with its 95% CI, the Holm-adjusted p over the K's comparisons, and the verdict."""
    headline = rows[rows["metric"].eq(HEADLINE.metric)]
    if not headline["method"].eq(versus).any() or headline["method"].nunique() < 2:
        return []
    families = {shots: against(seed_values(block, HEADLINE.metric), versus, settings) for shots, block in headline.groupby("shots", sort=True)}
    families = {shots: family for shots, family in families.items() if not family.empty}
    if not families:
        return []
    lines = [
        f"{purpose}, {checkpoint} checkpoint: {HEADLINE.label} of the method minus {versus}'s, paired by seed, with its 95% CI; "
        f"negative is better. Per K: {family_note(next(iter(families.values())), settings)}.",
        "",
        "| method | " + " | ".join(f"K = {k}" for k in families) + " |",
        "|" + "---|" * (len(families) + 1),
    ]
    methods = sorted({method for family in families.values() for method in family["method"]})
    for method in methods:
        cells = []
        for family in families.values():
            found = family[family["method"].eq(method)]
            cells.append(difference_text(found.iloc[0], HEADLINE.scale) if len(found) else "n/a")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def curve_table(curve: pd.DataFrame, rule: str = DEFAULTS) -> list[str]:
    """Per K: validation KID x 10^3 after each evaluated number of steps, mean +/- std over seeds (n per row);
    the lowest mean of each column in bold. `rule` names how each method's hyperparameter draw was chosen."""
    rows = curve[curve["metric"].eq(HEADLINE.metric) & curve["value"].notna()]
    if rows.empty:
        return []
    lines = [f"### Adaptation curve: validation KID x 10^3 (lower) by adaptation step, hyperparameters: {rule}", ""]
    for shots, block in rows.groupby("shots", sort=True):
        stats = block.groupby(["method", "checkpoint_step"])["value"].agg(["mean", "std", "count"])
        steps = sorted({int(step) for step in block["checkpoint_step"]})
        best = {step: stats.xs(step, level="checkpoint_step")["mean"].min() for step in steps}
        sizes = f"n_real {_size_text(block['n_real'])}, n_fake {_size_text(block['n_fake'])}"
        lines += [f"K = {shots} ({sizes}):", "", "| method | " + " | ".join(f"step {s}" for s in steps) + " | n |", "|" + "---|" * (len(steps) + 2)]
        for method, by_step in stats.groupby(level="method", sort=True):
            by_step = by_step.droplevel("method")
            cells = []
            for step in steps:
                if step not in by_step.index:
                    cells.append("n/a")
                    continue
                entry = by_step.loc[step]
                text = _number(entry["mean"] * HEADLINE.scale)
                text = f"**{text}**" if entry["mean"] == best[step] else text
                cells.append(text if pd.isna(entry["std"]) else f"{text} +/- {_number(entry['std'] * HEADLINE.scale)}")
            counts = "/".join(str(c) for c in sorted({int(c) for c in by_step["count"]}))
            lines.append(f"| {method} | " + " | ".join(cells) + f" | {counts} |")
        lines.append("")
    return lines


def headline_comparison(rows: pd.DataFrame, settings: ComparisonSettings) -> str:
    """Which method has the lowest mean headline metric (among methods without diverged seeds: their mean would
    leave out their failures), and the engine's verdict on every other method against it, Holm-adjusted."""
    seeds = seed_values(rows, HEADLINE.metric)
    failed = seeds.diverged.any()
    means = seeds.values.mean().where(~failed).dropna()
    unranked = sorted(failed[failed].index)
    note = f" Not ranked, because of diverged seeds: {', '.join(unranked)}." if unranked else ""
    if means.empty:
        return "every method had diverged seeds." + note
    if len(seeds.methods()) < 2:
        return f"only {means.index[0]} ran." + note
    best = min(means.index, key=lambda method: (means[method], method))
    family = against(seeds, best, settings)
    groups = {verdict: sorted(family.loc[family["verdict"].eq(verdict), "method"]) for verdict in (WORSE, EQUIVALENT, UNDETERMINED)}
    found = "; ".join(f"{verdict} than it: {', '.join(methods)}" if verdict == WORSE else f"{verdict}: {', '.join(methods)}"
                      for verdict, methods in groups.items() if methods)  # fmt: skip
    return (
        f"lowest mean {HEADLINE.label}: {best} ({means[best] * HEADLINE.scale:.1f}). Against {best}, paired by seed "
        f"({family_note(family, settings)}): {found}." + note
    )


# ---- sweeps: methods at the draws each selection rule picks --------------------------------------------------


def at_selected_draws(frame: pd.DataFrame, selections: dict[str, pd.DataFrame], rule: str) -> pd.DataFrame:
    """The rows of the draw `rule` selects per (task, K, method) in `selections` (checkpoint -> `select_draws`),
    separately for each checkpoint; the adaptation curve follows the validation-selected checkpoint's choice."""
    parts = []
    for checkpoint in sorted(set(frame["checkpoint"])):
        chosen = selections[SELECTED if checkpoint == CURVE else checkpoint]
        chosen = chosen[chosen["rule"].eq(rule)][[*CELL, "draw"]]
        parts.append(frame[frame["checkpoint"].eq(checkpoint)].merge(chosen, on=[*CELL, "draw"], how="inner"))
    return pd.concat(parts, ignore_index=True)[list(frame.columns)] if parts else frame.iloc[0:0]


def at_cross_fitted_draws(frame: pd.DataFrame) -> pd.DataFrame:
    """Each run's rows at the draw the target-validation rule chose for its seed on the other seeds
    (`hparam_selection.cross_fitted_draws`), per checkpoint; the adaptation curve follows the validation-selected
    checkpoint's choice. What the detailed tables and the paper report in a sweep."""
    parts, choices = [], {}
    for checkpoint in sorted(set(frame["checkpoint"])):
        chooser = SELECTED if checkpoint == CURVE else checkpoint  # each checkpoint's choice worked out once
        if chooser not in choices:
            choices[chooser] = cross_fitted_draws(frame, chooser, HEADLINE.metric)
        parts.append(frame[frame["checkpoint"].eq(checkpoint)].merge(choices[chooser], on=[*CELL, "seed", "draw"], how="inner"))
    return pd.concat(parts, ignore_index=True)[list(frame.columns)] if parts else frame.iloc[0:0]


def sweep_report(frame: pd.DataFrame, selections: dict[str, pd.DataFrame], oracle_draws: bool) -> list[str]:
    """Per task, K and checkpoint (final, validation-selected): each method's reference-set headline score at the
    draw(s) of every rule, with its rank among the methods; the expected best validation score of n draws; then
    the settings each rule chose."""
    rules = [DEFAULTS, TARGET_VALIDATION, TARGET_VALIDATION_CROSS_FIT, LEAVE_ONE_TASK_OUT] + ([ORACLE_DRAW] if oracle_draws else [])
    last_draw = int(frame["draw"].max())
    lines = [
        "## Hyperparameter sweep",
        "",
        f"Draws 0-{last_draw} per method (draw 0: the defaults; a method runs only draws whose settings differ). Reference-set",
        f"{HEADLINE.label} (lower) at the draw each rule selects, mean +/- std over seeds, with the method's rank under that",
        "rule (#1 best); `d` is the draw (several where seeds report different draws).",
        f"- *{DEFAULTS}*: no selection.",
        f"- *{TARGET_VALIDATION}*: the draw with the best mean validation-split score on this task, chosen and scored on",
        "  the same seeds: optimistic twice (it spends extra target images, and the best of several noisy means is low",
        "  by chance). Shown to measure that optimism; no table reports it.",
        f"- *{TARGET_VALIDATION_CROSS_FIT}*: each seed at the draw chosen on the other seeds' validation scores (the",
        "  seed that reports a draw never chose it): what the detailed tables and the paper report.",
        f"- *{LEAVE_ONE_TASK_OUT}*: the draw with the best mean rank on the other tasks of the same kind, applied",
        "  unchanged here (what a few-shot user can do); n/a where the task has no other task of its kind.",
    ]
    if oracle_draws:
        lines.append(
            f"- *{ORACLE_DRAW}*: the draw with the best mean score on one half of the reference (test) set, shown on the other"
            " half (a KID on half the images: the same expectation, a wider spread). ORACLE: test images chose it."
        )
    lines.append("")
    settings: list[dict] = []
    for checkpoint in (FINAL, SELECTED):
        rows = frame[frame["checkpoint"].eq(checkpoint)]
        if rows.empty:
            continue
        chosen = selections[checkpoint]
        headline = rows[rows["metric"].eq(HEADLINE.metric)]
        at_rule = {
            rule: (oracle_report_rows(rows, HEADLINE.metric) if rule == ORACLE_DRAW else headline).merge(
                chosen[chosen["rule"].eq(rule)][[*CELL, "draw"]], on=[*CELL, "draw"]
            )
            for rule in rules
            if rule != TARGET_VALIDATION_CROSS_FIT
        }
        at_rule[TARGET_VALIDATION_CROSS_FIT] = headline.merge(cross_fitted_draws(frame, checkpoint, HEADLINE.metric), on=[*CELL, "seed", "draw"])
        expected_seeds = frame[[*CELL, "draw", "seed"]].drop_duplicates()
        means = draw_means(validation_scores(frame[frame["checkpoint"].eq(CURVE)], checkpoint, HEADLINE.metric), expected_seeds)
        budgets = list(range(1, int(means.groupby(CELL)["draw"].nunique().max()) + 1)) if len(means) else []
        expected = expected_best_of_n(means, budgets)
        for (task, kind, shots), cell_rows in chosen.groupby(["task", "task_kind", "shots"], sort=True):
            lines += [f"### {task} ({kind}), K = {shots}, checkpoint: {checkpoint}", ""]
            in_cell = {rule: block[block["task"].eq(task) & block["shots"].eq(shots)] for rule, block in at_rule.items()}
            lines += _rule_table(sorted(set(cell_rows["method"])), in_cell, rules)
            lines += _expected_best_table(expected[expected["task"].eq(task) & expected["shots"].eq(shots)], checkpoint)
            for _, row in cell_rows[~cell_rows["rule"].eq(DEFAULTS)].iterrows():
                hparams = rows.loc[rows["method"].eq(row["method"]) & rows["draw"].eq(row["draw"]), "method_hparams"]
                settings.append({**row.to_dict(), "checkpoint": checkpoint, "settings": hparams.iloc[0] if len(hparams) else "n/a"})
    lines += _top_hyperparameters(settings)
    return lines


def _expected_best_table(expected: pd.DataFrame, checkpoint: str) -> list[str]:
    """Expected best validation score of n draws per method (Dodge et al. 2019): methods compared at equal budgets."""
    if expected.empty or expected["draws"].max() < 2:
        return []
    budgets = sorted(set(expected["n"]))
    lines = [
        f"Expected best validation {HEADLINE.label} of n random draws ({checkpoint} step's score; Dodge et al. 2019): compare "
        "methods along a column, at the same tuning budget, whatever number of draws each ran (beyond its own count a "
        "method's curve repeats its draws).",
        "",
        "| method | draws run | " + " | ".join(f"n = {n}" for n in budgets) + " |",
        "|" + "---|" * (len(budgets) + 2),
    ]
    for method, block in expected.groupby("method", sort=True):
        by_n = block.set_index("n")["expected"]
        cells = [_number(by_n[n] * HEADLINE.scale) if n in by_n.index else "n/a" for n in budgets]
        lines.append(f"| {method} | {int(block['draws'].iloc[0])} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _rule_table(methods: list[str], at_rule: dict[str, pd.DataFrame], rules: list[str]) -> list[str]:
    """The methods' scores and ranks under each rule (from each rule's per-seed headline rows), then whether the
    rules change the ranking: each rule's top method, and Kendall's tau between its ranking and the defaults' (over
    the methods ranked under both)."""
    cells: dict[tuple[str, str], str] = {}
    ranks: dict[str, dict[str, int]] = {}
    for rule in rules:
        rows = at_rule.get(rule, pd.DataFrame(columns=["method", "value", "draw"]))
        stats = {}
        for method, block in rows.groupby("method", sort=True):
            draws = "/".join(f"d{draw}" for draw in sorted({int(draw) for draw in block["draw"]}))
            stats[method] = (draws, block["value"].mean(), block["value"].std(), bool(block["value"].isna().any()))
        ranked = sorted((m for m, (_, mean, _, failed) in stats.items() if not failed and not pd.isna(mean)), key=lambda m: stats[m][1])
        rank = ranks[rule] = {method: position + 1 for position, method in enumerate(ranked)}
        for method, (draws, mean, std, failed) in stats.items():
            if failed or pd.isna(mean):  # a draw with a diverged seed shows no mean
                text = "diverged"
            else:
                text = _number(mean * HEADLINE.scale) + ("" if pd.isna(std) else f" +/- {_number(std * HEADLINE.scale)}") + f" (#{rank[method]})"
            cells[(method, rule)] = f"{draws}: {text}"
    lines = ["| method | " + " | ".join(rules) + " |", "|" + "---|" * (len(rules) + 1)]
    for method in methods:
        lines.append(f"| {method} | " + " | ".join(cells.get((method, rule), "n/a") for rule in rules) + " |")
    tops = [f"{rule}: {min(ranks[rule], key=ranks[rule].get)}" for rule in rules if ranks[rule]]
    taus = []
    for rule in rules[1:]:
        shared = sorted(set(ranks[rule]) & set(ranks[DEFAULTS]))
        if len(shared) >= 2:
            tau = pd.Series([ranks[DEFAULTS][m] for m in shared]).corr(pd.Series([ranks[rule][m] for m in shared]), method="kendall")
            taus.append(f"{rule} {tau:.2f}")
    lines += ["", f"Lowest mean under each rule: {'; '.join(tops)} (a changed order of means, not a resolved difference)."]
    if taus:
        lines.append(f"Kendall's tau of each rule's order of means with the defaults' (1: unchanged): {'; '.join(taus)}.")
    return [*lines, ""]


def _top_hyperparameters(settings: list[dict]) -> list[str]:
    """Per method and rule, each draw chosen with its settings and where it was chosen (task, K, checkpoint).
    Methods that ran one draw only (nothing to sweep) are named in one line instead."""
    if not settings:
        return []
    table = pd.DataFrame(settings)
    single = sorted(method for method, draws in table.groupby("method")["draw"] if draws.nunique() == 1 and draws.iloc[0] == 0)
    table = table[~table["method"].isin(single)]
    lines = ["### Top hyperparameters: the settings each rule chose", ""]
    if not table.empty:
        lines += ["| method | rule | draw | settings | chosen for (task, K, checkpoint) |", "|---|---|---|---|---|"]
        for (method, rule, draw), rows in table.groupby(["method", "rule", "draw"], sort=True):
            where = "; ".join(
                f"{row['task']} K={row['shots']} {row['checkpoint']}" for _, row in rows.sort_values(["task", "shots", "checkpoint"]).iterrows()
            )
            lines.append(f"| {method} | {rule} | {int(draw)} | `{rows['settings'].iloc[0]}` | {where} |")
        lines.append("")
    if single:
        lines += [f"Always draw 0 (nothing they declare is swept, or every draw repeated the defaults): {', '.join(single)}.", ""]
    return lines
