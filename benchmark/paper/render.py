"""All paper outputs of one results folder, written together into one output folder (or not at all).

Layout of the output folder:
- `paper.md` and `paper.html`: every table with its caption, the statistics across tasks and the power analysis,
  with what each number means;
- `tables/<task>_k<K>_<checkpoint>_<group>.md` and `.tex` (booktabs, for `\\input`), and `tables.csv` (every
  table's numbers, tidy); `ranks.csv`, `aggregate.csv`, `improvement.csv`, `power.csv` (per pair of methods) and
  `power_families.csv` (pooled per family);
- `figures/<name>.png` and `.pdf`.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmark.comparison import VERDICTS
from benchmark.errors import BenchmarkError
from benchmark.io import check_apart, replace_folder
from benchmark.paper import aggregate, compare, figures, power
from benchmark.paper.compare import compare_results
from benchmark.paper.inputs import PaperInputs, checkpoints_present, read_results_folder
from benchmark.paper.tables import GROUPS, PaperTable, build_table, versus_comparisons
from benchmark.results import BASELINE, HEADLINE, NO_TRANSFER
from benchmark.selection import CURVE, ORACLE, SELECTED
from benchmark.settings import PaperSettings

log = logging.getLogger(__name__)

FINETUNE_FAMILY = ("finetune", "freeze_d", "l2sp")  # the near-tied methods the power question is about


def render_paper(input_dir: Path, output_dir: Path, settings: PaperSettings, reference_dir: Path | None = None) -> list[Path]:
    """Read `input_dir` (a results folder), render everything into `output_dir`, replacing only the files an earlier
    rendering wrote there (`benchmark.io.replace_folder`); with `reference_dir` (e.g. reports/reference), also
    compare the results with those (`compare.csv`). An output folder that is, holds or lies inside an input is
    refused before anything is read."""
    started = time.perf_counter()
    output_dir = Path(output_dir)
    check_apart(output_dir, "--output-dir", [("--input-dir", input_dir), ("--reference", reference_dir)])
    inputs = read_results_folder(input_dir)
    reference = read_results_folder(reference_dir) if reference_dir is not None else None
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        _render_into(inputs, staging, settings, reference)
        written = replace_folder(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("paper outputs of %s: %d files in %s (%.1f s)", input_dir, len(written), output_dir, time.perf_counter() - started)
    return written


def _render_into(inputs: PaperInputs, folder: Path, settings: PaperSettings, reference: PaperInputs | None = None) -> list[Path]:
    results = inputs.results
    written: list[Path] = []
    summary = summary_verdicts(results, settings)
    lines = _preamble(inputs, settings) + _summary_lines(summary, settings)
    html_parts: list[str] = []
    tables: list[PaperTable] = []
    table_folder = folder / "tables"
    table_folder.mkdir(parents=True)
    for checkpoint in checkpoints_present(results):
        if checkpoint == ORACLE:
            continue  # tables report honest selections only; the oracle stays in results.md, labelled
        for (task, kind, shots), rows in results[results["checkpoint"].eq(checkpoint)].groupby(["task", "task_kind", "shots"], sort=True):
            for group, columns in GROUPS.items():
                name = f"{task}_k{shots}_{figures.slug(checkpoint)}_{group}"
                in_group = rows[rows["metric"].isin([column.metric for column in columns])]
                spaces = ", ".join(sorted(set(in_group["feature_space"].dropna()))) if "feature_space" in rows else "n/a"
                cells = "mean [95% t-interval]" if settings.intervals else "mean +/- std"
                caption = (
                    f"{task} ({kind}), K = {shots}: {group}. Checkpoint: {checkpoint}; hyperparameters: {inputs.rule}. "
                    f"{cells.capitalize()} over seeds (n); {MARKS_TEXT[group]}. Feature space: {spaces or 'n/a'}."
                )
                table = build_table(rows, group, caption, name, settings.comparison(), intervals=settings.intervals)
                if table is None:
                    continue
                tables.append(table)
                written += _write(table_folder / f"{name}.md", f"{caption}\n\n{table.markdown}\n")
                written += _write(table_folder / f"{name}.tex", table.latex)
                lines += [f"### {caption}", "", table.markdown, ""]
                html_parts += [f"<h3>{html.escape(caption)}</h3>", table.html]
    if not tables:
        raise BenchmarkError("No results to tabulate: every run lacks metrics at the final and validation-selected checkpoints.")
    numbers = pd.concat([table.numbers for table in tables], ignore_index=True)
    written += _write(folder / "tables.csv", numbers.to_csv(index=False))
    figure_folder = folder / "figures"
    across, across_frames = _across_tasks(results, settings, figure_folder, written)
    lines += across
    power_lines, power_frames = _power(results, settings)
    lines += power_lines
    for name, frame in {**across_frames, **power_frames}.items():
        written += _write(folder / f"{name}.csv", frame.to_csv(index=False))
    if reference is not None:
        comparison = compare_results(results, reference.results, settings.comparison())
        written += _write(folder / "compare.csv", comparison.to_csv(index=False))
        lines += _comparison_lines(comparison, reference)
    written += _figures(inputs, figure_folder)
    lines += ["## Figures", "", *[f"- `figures/{path.name}`" for path in sorted(written) if path.suffix == ".png"], ""]
    markdown = "\n".join(lines)
    written += _write(folder / "paper.md", markdown)
    written += _write(folder / "paper.html", _html_page(markdown, html_parts, _summary_html(summary, settings, figure_folder)))
    return written


MARKS_TEXT = {
    "fidelity": "bold: the best mean, \u2020: not found worse than it by the comparison engine (paired by seed, Holm over the "
    "column; neither where no method is found worse)",
    "diversity": "no best marked (diversity and memorisation rank only among generators of comparable fidelity); memorised share "
    "(a-b): its range over its threshold's 95% bootstrap interval, where recorded",
}


def _preamble(inputs: PaperInputs, settings: PaperSettings) -> list[str]:
    results = inputs.results
    versions = ", ".join(sorted(set(results["code_version"].dropna()))) if "code_version" in results else "n/a"
    draws = f", up to {inputs.draws} hyperparameter draws per method" if inputs.draws > 1 else ""
    return [
        "# Paper outputs",
        "",
        f"Rendered from `{inputs.folder}`: {inputs.runs} runs ({results['task'].nunique()} tasks, {results['method'].nunique()} methods, "
        f"{results['seed'].nunique()} seeds{draws}), code version(s) {versions}. Hyperparameters: {inputs.rule}"
        + (" (each method at the draw this rule selects, per checkpoint)." if inputs.draws > 1 else "."),
        "",
        f"Tables: {'mean [95% t-interval]' if settings.intervals else 'mean +/- sample std (95% t-intervals with paper.intervals: true)'} over seeds, n seeds;"
        f" fidelity tables: {MARKS_TEXT['fidelity']}; bold never goes to a method with diverged seeds. Arrows give each"
        " metric's direction (->1: closest to 1 is best). A diverged seed is counted beside n and never enters a mean;"
        ' "n/a": the metric was not computed for this run. The fidelity tables end with the comparison engine\'s verdicts'
        f" on {HEADLINE.label} against `{BASELINE}` and against `{NO_TRANSFER}` (pre-declared): the difference paired by seed"
        " (same K shots, same pretraining, same evaluation latents) with its 95% CI, Holm-adjusted p over the table's"
        f" comparisons at alpha = {settings.alpha:g}, and better / worse / equivalent (TOST within"
        f" +/- {settings.equivalence_margin:.0%} of the compared-against mean) / undetermined.",
        "",
        "Checkpoints: *final* is the last step, *validation-selected* the evaluation step with the best validation-split"
        " score (held out from the reference set). Oracle selections are never tabulated here.",
        "",
    ]


def _across_tasks(
    results: pd.DataFrame, settings: PaperSettings, figure_folder: Path, written: list[Path]
) -> tuple[list[str], dict[str, pd.DataFrame]]:
    lines = ["## Across tasks", "", *_docstring_paragraphs(aggregate.__doc__), ""]
    frames: dict[str, list[pd.DataFrame]] = {"ranks": [], "aggregate": [], "improvement": []}
    curve = results[results["checkpoint"].eq(CURVE)]
    for checkpoint in checkpoints_present(results):
        if checkpoint == ORACLE:
            continue
        rows = results[results["checkpoint"].eq(checkpoint)]
        lines += [f"### Checkpoint: {checkpoint}", ""]
        too_few = aggregate.too_few_tasks(rows)
        test = aggregate.rank_test(rows, settings.alpha)
        if too_few is not None:
            lines += [too_few, ""]
        elif test is None:
            complete, dropped = aggregate.score_matrix(rows)
            lines += [
                f"No rank test: {len(complete)} complete (task, K) blocks ({dropped} left out for missing scores) and "
                f"{complete.shape[1]} methods; the test needs {aggregate.MIN_TASKS} tasks and {aggregate.MIN_METHODS} methods.",
                "",
            ]
        else:
            verdict = "the methods' ranks differ" if test.p_value < settings.alpha else "no difference in ranks is resolved"
            cd = "n/a" if test.critical_difference is None else f"{test.critical_difference:.2f}"
            lines += [
                f"Over {test.blocks} (task, K) blocks from {test.tasks} tasks, seeds averaged ({test.dropped_blocks} left out for missing "
                f"scores): Iman-Davenport F({test.df[0]}, {test.df[1]}) = {test.iman_davenport:.3g}, p = {test.p_value:.2g} (Friedman "
                f"chi-square p = {test.friedman_p:.2g}): {verdict} at alpha = {settings.alpha:g}. Nemenyi's critical difference: {cd}.",
                "",
                test.ranks.to_markdown(index=False, floatfmt=".2f"),
                "",
            ]
            frames["ranks"].append(
                test.ranks.assign(
                    checkpoint=checkpoint, iman_davenport=test.iman_davenport, p_value=test.p_value, friedman_p=test.friedman_p,
                    critical_difference=test.critical_difference, blocks=test.blocks, tasks=test.tasks,
                )
            )  # fmt: skip
            name = f"critical_difference_{figures.slug(checkpoint)}"
            title = (
                f"Mean rank of {HEADLINE.label} over {test.blocks} (task, K) blocks of {test.tasks} tasks, {checkpoint} checkpoint; "
                f"Iman-Davenport p = {test.p_value:.2g}"
            )
            written += figures.save(figures.critical_difference(test.result, title), figure_folder, name)
        tasks, methods = aggregate.task_runs(rows, curve)
        if not tasks:
            lines += [f"No task has a step-0 adaptation-curve score of `{BASELINE}` (the source generator) to normalise by: no aggregate score.", ""]
            continue
        summary = aggregate.aggregate_scores(tasks, methods, settings.bootstrap_resamples, settings.bootstrap_seed)
        runs, trimmed = int(summary["runs"].iloc[0]), int(summary["trimmed_each_end"].iloc[0])
        lines += [
            f"IQM of KID / the source generator's step-0 KID (0: as close as real data, 1: no closer than the unadapted source; "
            f"lower is better) over {runs} runs per method from {len(tasks)} (task, K) blocks: trims {trimmed} run{'s' if trimmed != 1 else ''} "
            f"from each end ({runs - 2 * trimmed} of {runs} kept); 95% hierarchical-bootstrap interval (tasks, then seeds)"
            + ("." if too_few is None else ", descriptive only (too few tasks to resample)."),
            "",
            summary.drop(columns=["runs", "trimmed_each_end", "tasks"]).to_markdown(index=False, floatfmt=".3g"),
            "",
        ]
        improvement = aggregate.improvement_probabilities(
            tasks, methods, settings.bootstrap_resamples, settings.bootstrap_seed, verdicts=too_few is None
        )
        if not improvement.empty:
            matrix = improvement.assign(text=[_probability_text(row) for _, row in improvement.iterrows()]).pivot(
                index="method", columns="versus", values="text"
            )
            stars = (
                f"* where the interval excludes 0.5, on the pre-declared comparisons with {' and '.join(aggregate.DECLARED)} only"
                if too_few is None
                else "no stars: too few tasks for a verdict"
            )
            lines += [
                f"P(row method has a lower KID than column method), each pair once, 95% interval; {stars}:",
                "",
                matrix.fillna("").to_markdown(),
                "",
            ]
        frames["aggregate"].append(summary.assign(checkpoint=checkpoint))
        frames["improvement"].append(improvement.assign(checkpoint=checkpoint))
    return lines, {name: pd.concat(parts, ignore_index=True) if parts else pd.DataFrame() for name, parts in frames.items()}


def _comparison_lines(comparison: pd.DataFrame, reference: PaperInputs) -> list[str]:
    lines = ["## Against the reference results", "", *_docstring_paragraphs(compare.__doc__), ""]
    if comparison.empty:
        return [*lines, f"No task, K, method and metric is shared with `{reference.folder}`: nothing to compare.", ""]
    counts = comparison["verdict"].value_counts()
    lines += [
        f"Compared with `{reference.folder}` on {len(comparison)} (task, K, method, checkpoint, metric) cells: "
        + ", ".join(f"{counts.get(verdict, 0)} {verdict}" for verdict in (compare.IDENTICAL, *VERDICTS))
        + " (better/worse: this run against the reference). Headline metric:",
        "",
    ]
    headline = comparison[comparison["metric"].eq(HEADLINE.metric)]
    columns = ["task", "shots", "method", "checkpoint", "mean", "reference_mean", "relative_difference", "p_holm", "verdict"]
    lines += [headline[columns].to_markdown(index=False, floatfmt=".3g"), ""]
    causes = comparison["differs_in"].fillna("") if "differs_in" in comparison else pd.Series(dtype=str)
    for cause, count in causes[causes.ne("")].value_counts().sort_index().items():
        lines.append(f"- {count} cells that are not identical differ in: {cause}.")
    return [*lines, ""] if causes.ne("").any() else lines


def _probability_text(row: pd.Series) -> str:
    if pd.isna(row["ci_low"]):
        return f"{row['probability']:.2f}"
    resolved = "*" if row["resolved"] else ""
    return f"{row['probability']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}]{resolved}"


def _power(results: pd.DataFrame, settings: PaperSettings) -> tuple[list[str], dict[str, pd.DataFrame]]:
    checkpoint = SELECTED if results["checkpoint"].eq(SELECTED).any() else checkpoints_present(results)[0]
    rows = results[results["checkpoint"].eq(checkpoint)]
    table = power.power_table(rows, settings.effect, settings.alpha, settings.power)
    lines = ["## Power: how many seeds resolve a difference", "", *_docstring_paragraphs(power.__doc__), ""]
    seeds = int(rows.groupby(["task", "shots", "method"])["seed"].nunique().max())
    if table.empty:
        return [
            *lines,
            f"No seed verdict: no pair of methods completed {power.MIN_PAIRS} or more seeds on the same task (these results have {seeds}).",
            "",
        ], {"power": table, "power_families": pd.DataFrame()}
    effect = f"{settings.effect:.0%}"
    counts = sorted({seeds, settings.planned_seeds})
    families = {f"fine-tuning family ({', '.join(FINETUNE_FAMILY)})": table["method"].isin(FINETUNE_FAMILY) & table["versus"].isin(FINETUNE_FAMILY)}
    families["every pair of methods"] = pd.Series(True, index=table.index)
    out = []
    for name, members in families.items():
        found = power.family_power(table[members], settings.effect, settings.alpha, settings.power, counts)
        if found is not None:
            out.append({"family": name, **found})
    summary = pd.DataFrame(out)
    lines += [
        f"Checkpoint: {checkpoint}. Paired differences of {HEADLINE.label} pooled per family of methods over its pairs and tasks "
        f"(alpha = {settings.alpha:g}, power = {settings.power:g}); each count at the pooled relative SD and at its "
        f"{power.UPPER_CONFIDENCE:.0%} upper confidence bound.",
        "",
    ]
    for _, row in summary.iterrows():
        mde = "; ".join(
            f"{count} seeds resolve {_percent(row[f'mde_{count}_seeds'])} ({_percent(row[f'mde_{count}_seeds_upper'])} at the bound)"
            for count in counts
        )
        lines += [
            f"- {row['family']}: relative SD {row['relative_sd']:.3g} (upper bound {row['relative_sd_upper']:.3g}; {row['df']} degrees of "
            f"freedom from {row['pairs_of_methods']} pairs on {row['tasks']} task(s)). A {effect} difference needs "
            f"{_count(row['seeds_needed'])} seeds at the estimate and {_count(row['seeds_needed_upper'])} at the bound. Minimum "
            f"detectable difference: {mde}.",
        ]
    lines += [
        "",
        "Methods whose seeds share shots and pretraining move together, so closely related methods (the fine-tuning family) "
        "resolve smaller relative differences than the average pair. Per pair (relative SD and the minimum detectable "
        "difference at its own seeds): `power.csv`.",
        "",
    ]
    return lines, {"power": table, "power_families": summary}


def _percent(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:.0%}" if value >= 0.1 else f"{value:.1%}"


def _count(value: float) -> str:
    """A seed count: whole seeds, rounded up; inf: beyond `power.MAX_SEEDS`; NaN: undefined."""
    if pd.isna(value):
        return "n/a"
    return f"more than {power.MAX_SEEDS:,}" if math.isinf(value) else f"{math.ceil(value)}"


def _figures(inputs: PaperInputs, folder: Path) -> list[Path]:
    results, rule = inputs.results, inputs.rule
    made: dict = {}
    for checkpoint in checkpoints_present(results):
        if checkpoint != ORACLE:
            made |= figures.metric_vs_shots(results, checkpoint, rule)
    made |= figures.adaptation_curves(results, rule)
    if inputs.training is not None and not inputs.training.empty:
        made |= figures.training_curves(inputs.training, results)
    else:
        log.warning("no training logs in %s: training curves left out (run the collect_training rule)", inputs.folder)
    if inputs.panels is not None:
        made |= figures.sample_grids(inputs.panels, results)
        made |= figures.nearest_shot_panels(inputs.panels, results)
    else:
        log.warning("no sample panels in %s: sample grids and nearest-shot panels left out (run the panels rule)", inputs.folder)
    paths: list[Path] = []
    for name, figure in made.items():
        paths += figures.save(figure, folder, name)
    return paths


def _write(path: Path, text: str) -> list[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return [path]


def _docstring_paragraphs(doc: str | None) -> list[str]:
    """A module docstring's body (after its first paragraph) as report text."""
    parts = (doc or "").strip().split("\n\n", 1)
    return [line.strip() if not line.startswith("  ") else "  " + line.strip() for line in parts[-1].splitlines()] if len(parts) > 1 else []


@dataclass(frozen=True)
class TaskVerdicts:
    """The summary's answer for one task and K: the engine's verdicts against finetune and scratch."""

    task: str
    kind: str
    shots: int
    checkpoint: str
    families: dict[str, pd.DataFrame]  # versus -> the engine's family


def summary_verdicts(results: pd.DataFrame, settings: PaperSettings) -> list[TaskVerdicts]:
    """Per task and K (task kinds together), at the validation-selected checkpoint where there is one (else the
    first present): the pre-declared comparisons of the headline metric, from the comparison engine."""
    present = checkpoints_present(results)
    checkpoint = SELECTED if SELECTED in present else present[0]
    rows = results[results["checkpoint"].eq(checkpoint)]
    out = []
    for (kind, task, shots), block in rows.groupby(["task_kind", "task", "shots"], sort=True):
        out.append(TaskVerdicts(task, kind, int(shots), checkpoint, versus_comparisons(block, settings.comparison())))
    return out


def _verdict_groups(family: pd.DataFrame) -> str:
    """ "better: a, b; worse: c; equivalent: d; undetermined: e" with the verdicts that occur, in that order."""
    parts = []
    for verdict in VERDICTS:
        methods = sorted(family.loc[family["verdict"].eq(verdict), "method"])
        if methods:
            parts.append(f"{verdict}: {', '.join(methods)}")
    return "; ".join(parts) or "no comparison"


def _summary_lines(summary: list[TaskVerdicts], settings: PaperSettings) -> list[str]:
    lines = [
        "## Summary: the verdicts against finetune and scratch",
        "",
        f"{HEADLINE.label} of every method against `{BASELINE}` (plain transfer) and against `{NO_TRANSFER}` (no transfer), "
        f"paired by seed, Holm over each list, alpha = {settings.alpha:g}, equivalent within {settings.equivalence_margin:.0%}. "
        "Differences and intervals: the fidelity tables.",
        "",
    ]
    for entry in summary:
        lines.append(f"- {entry.task} ({entry.kind}), K = {entry.shots}, {entry.checkpoint}:")
        for versus, family in entry.families.items():
            lines.append(f"  - against {versus} ({int(family['tests'].iloc[0])} tests): {_verdict_groups(family)}")
    return [*lines, ""]


def _embedded_image(path: Path, alt: str) -> str:
    """An <img> whose PNG is in the page itself (a data URI): the page opens anywhere, the Snakemake report included."""
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def _summary_html(summary: list[TaskVerdicts], settings: PaperSettings, figure_folder: Path) -> str:
    """The page's first screen: per task family, each task's verdicts, its adaptation curves and sample grid."""
    parts = [
        '<section id="summary"><h2>Summary</h2>',
        f"<p>{html.escape(HEADLINE.label)} of every method against <b>{BASELINE}</b> and <b>{NO_TRANSFER}</b>: the comparison engine's "
        f"verdicts, paired by seed, Holm over each list, alpha = {settings.alpha:g}, equivalent within {settings.equivalence_margin:.0%}.</p>",
    ]
    versus_names = [BASELINE, NO_TRANSFER]
    header = "".join(f"<th>against {html.escape(name)}</th>" for name in versus_names)
    rows = []
    for entry in sorted(summary, key=lambda entry: (entry.kind, entry.task, entry.shots)):
        cells = "".join(
            f"<td>{html.escape(_verdict_groups(entry.families[name])) if name in entry.families else 'n/a'}</td>" for name in versus_names
        )
        rows.append(
            f"<tr><th>{html.escape(entry.task)} ({html.escape(entry.kind)}), K = {entry.shots}, {html.escape(entry.checkpoint)}</th>{cells}</tr>"
        )
    parts.append(f"<table class='verdicts'><tr><th>task</th>{header}</tr>{''.join(rows)}</table>")
    for kind in sorted({entry.kind for entry in summary}):
        parts.append(f"<h3>{html.escape(kind)}</h3><div class='figures'>")
        for entry in (entry for entry in summary if entry.kind == kind):
            parts += [
                _embedded_image(figure_folder / f"{name}_{entry.task}_k{entry.shots}.png", f"{caption}: {entry.task}, K = {entry.shots}")
                for name, caption in (("adaptation_curve", "adaptation curves"), ("samples", "samples"))
            ]
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)


def _html_page(markdown: str, tables_html: list[str], summary_html: str) -> str:
    """A standalone page: a navigation list, the summary (verdicts and figures), the tables as HTML, then the rest of
    the text as preformatted Markdown."""
    body = "\n".join(tables_html)
    navigation = (
        "<nav><ul><li><a href='#summary'>Summary</a></li><li><a href='#tables'>Tables</a></li>"
        "<li><a href='#full-text'>Full text: statistics across tasks, power, figures</a></li></ul></nav>"
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Paper outputs</title>"
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto} table{border-collapse:collapse;font-size:12px}"
        "td,th{border-bottom:1px solid #ccc;padding:2px 6px;text-align:right} pre{white-space:pre-wrap;font-size:12px}"
        " table.verdicts th,table.verdicts td{text-align:left} .figures{display:flex;flex-wrap:wrap;gap:8px}"
        " figure{margin:0} figure img{max-width:100%;max-height:300px} figcaption{font-size:11px;color:#555}</style>"
        f"</head><body><h1>Paper outputs</h1>{navigation}{summary_html}<h2 id='tables'>Tables</h2>{body}"
        f"<h2 id='full-text'>Full text</h2><pre>{html.escape(markdown)}</pre></body></html>"
    )
