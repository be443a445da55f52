"""Paper tables: per task, K and checkpoint, methods as rows and metrics as columns, written as Markdown, LaTeX
(booktabs, `\\input`-ready) and CSV with pandas' own writers.

A cell is the mean +/- sample standard deviation over the seeds that completed (n beside it), or the 95%
t-interval when asked, every cell of a column to the same decimals. In the fidelity table the best mean of a
column is in bold and a method that the comparison engine (`benchmark.comparison`: paired by seed, Holm over the
column) does not find worse than the best carries a dagger; where the engine finds no method worse than the best,
the column has neither. Methods with a diverged seed are never bold nor marked: their mean leaves out their
failures. Diversity and memorisation columns mark nothing (their best is only meaningful among generators of
comparable fidelity). The fidelity table ends with the engine's verdicts on the headline metric against finetune
and against scratch: the paired difference with its 95% CI, the Holm-adjusted p and better / worse / equivalent /
undetermined. The memorised share carries, in parentheses, its range over the 95% bootstrap interval of its own
threshold (the held-out images that set it resampled; mean over seeds) where the records hold it. A missing metric
is "n/a", a method whose every seed diverged "diverged": never a zero.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from benchmark.comparison import EQUIVALENT, UNDETERMINED, WORSE, ComparisonSettings, against, difference_text, diverged, mean_interval, seed_values
from benchmark.results import BASELINE, DIVERSITY, FIDELITY, HEADLINE, NO_TRANSFER, MetricColumn

CONFIDENCE = 0.95
TIE_MARK = "\u2020"  # dagger: not shown worse than the best by the comparison engine
GROUPS = {"fidelity": FIDELITY, "diversity": DIVERSITY}
# Groups whose columns name a best method. Diversity and memorisation are not: noise is diverse and copies
# nothing, so their best is only meaningful among generators of comparable fidelity, which a column cannot see.
MARKED_GROUPS = ("fidelity",)
ARROWS = {"lower": ("\u2193", r"$\downarrow$"), "higher": ("\u2191", r"$\uparrow$"), "~1": ("\u21921", r"$\to 1$")}


@dataclass(frozen=True)
class PaperTable:
    """One table: its caption, the tidy numbers (CSV rows) and its three renderings."""

    name: str  # file stem: task_kK_checkpoint_group
    caption: str
    numbers: pd.DataFrame
    markdown: str
    latex: str
    html: str


def seed_statistics(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (method, metric): mean, sample std, n completed, n diverged and the 95% t-interval of the mean."""
    rows = rows.assign(diverged=diverged(rows))
    grouped = rows.groupby(["method", "metric"], sort=True)
    table = grouped["value"].agg(mean="mean", std="std", n="count")
    table["n_diverged"] = grouped["diverged"].sum().astype(int)
    table["ci_low"], table["ci_high"] = mean_interval(table["mean"], table["std"], table["n"], CONFIDENCE)
    # The memorised share's range over its threshold's bootstrap (records since issue 26), averaged over seeds.
    bounds = rows["details"].map(_threshold_range) if "details" in rows else pd.Series(None, index=rows.index, dtype=object)
    low, high = (bounds.map(lambda b, side=side: b[side] if isinstance(b, tuple) else np.nan) for side in (0, 1))
    ranges = rows.assign(threshold_low=low.astype(float), threshold_high=high.astype(float))
    table[["threshold_low", "threshold_high"]] = ranges.groupby(["method", "metric"], sort=True)[["threshold_low", "threshold_high"]].mean()
    return table.reset_index()


def _threshold_range(details: object) -> tuple[float, float] | None:
    if not isinstance(details, str) or "value_interval_threshold" not in details:
        return None
    low, high = json.loads(details)["value_interval_threshold"]
    return float(low), float(high)


def mark_best(statistics: pd.DataFrame, column: MetricColumn, rows: pd.DataFrame, settings: ComparisonSettings) -> pd.DataFrame:
    """For one metric's rows: `best` (every method with the best mean, among methods without diverged seeds) and
    `tied` (another method that the comparison engine does not find worse than the best: equivalent or
    undetermined, Holm over the column's comparisons). Where no method is found worse than the best, the column
    singles out nobody: no bold and no daggers (a best mean that the seeds cannot tell from the rest is noise)."""
    own = statistics[statistics["metric"].eq(column.metric)].copy()
    own["best"], own["tied"] = False, False
    ranked = own[own["n_diverged"].eq(0) & own["mean"].notna()]
    if ranked.empty:
        return own
    badness = {"lower": ranked["mean"], "higher": -ranked["mean"], "~1": (ranked["mean"] - 1).abs()}[column.better]
    best_rows = badness.index[badness == badness.min()]
    best_method = min(own.loc[best_rows, "method"])
    family = against(seed_values(rows, column.metric), best_method, settings, column.better).set_index("method")
    others = [index for index in own.index if index not in best_rows]
    verdicts = {
        index: family.loc[own.loc[index, "method"], "verdict"] if own.loc[index, "method"] in family.index else UNDETERMINED for index in others
    }
    if not any(verdict == WORSE for verdict in verdicts.values()):
        return own  # every method tied with the best: nothing to single out
    own.loc[best_rows, "best"] = True
    for index, verdict in verdicts.items():
        own.loc[index, "tied"] = index in ranked.index and verdict in (EQUIVALENT, UNDETERMINED)
    return own


def versus_comparisons(rows: pd.DataFrame, settings: ComparisonSettings) -> dict[str, pd.DataFrame]:
    """The pre-declared comparisons of the headline metric: every method against `BASELINE` (finetune) and against
    `NO_TRANSFER` (scratch), each one family of the comparison engine; only those whose reference ran here."""
    seeds = seed_values(rows, HEADLINE.metric)
    out = {}
    for versus in (BASELINE, NO_TRANSFER):
        family = against(seeds, versus, settings)
        if not family.empty:
            out[versus] = family
    return out


def _seeds_text(n: int, n_diverged: int) -> str:
    return f"{n} + {n_diverged} diverged" if n_diverged else str(n)


def _cell_text(row: pd.Series | None, column: MetricColumn, intervals: bool, plus_minus: str, decimals: int) -> str:
    if row is None or (row["n"] == 0 and not row["n_diverged"]):
        return "n/a"
    if row["n"] == 0:
        return "diverged"
    scale = column.scale

    def number(value: float) -> str:
        return f"{value * scale:.{decimals}f}"

    if pd.isna(row["std"]):
        return number(row["mean"])
    threshold = f" ({number(row['threshold_low'])}-{number(row['threshold_high'])})" if pd.notna(row.get("threshold_low")) else ""
    if intervals:
        return f"{number(row['mean'])} [{number(row['ci_low'])}, {number(row['ci_high'])}]{threshold}"
    return f"{number(row['mean'])} {plus_minus} {number(row['std'])}{threshold}"


def build_table(rows: pd.DataFrame, group: str, caption: str, name: str, settings: ComparisonSettings, intervals: bool = False) -> PaperTable | None:
    """The table of one task, K and checkpoint for one metric group (`GROUPS`); None when no metric is present.
    The fidelity table ends with the engine's verdicts against finetune and scratch on the headline metric."""
    columns = [column for column in GROUPS[group] if rows["metric"].eq(column.metric).any()]
    if not columns:
        return None
    statistics = seed_statistics(rows)
    if group in MARKED_GROUPS:
        marked = pd.concat([mark_best(statistics, column, rows, settings) for column in columns])
    else:
        marked = statistics[statistics["metric"].isin([column.metric for column in columns])].assign(best=False, tied=False)
    methods = sorted(set(rows["method"]))
    comparisons = versus_comparisons(rows, settings) if group == "fidelity" and HEADLINE in columns else {}
    spaces = {column.metric: short_space(rows, column.metric) for column in columns}
    labels = {column.metric: (_label(column, True, spaces[column.metric]), _label(column, False, spaces[column.metric])) for column in columns}
    decimals = {column.metric: column_decimals(marked.loc[marked["metric"].eq(column.metric), "mean"] * column.scale) for column in columns}
    md_cells, plain_cells, tex_cells, bold = [], [], [], []
    for method in methods:
        md_row, plain_row, tex_row, bold_row = {"method": method}, {}, {}, {}
        seeds = set()
        for column in columns:
            found = marked[marked["method"].eq(method) & marked["metric"].eq(column.metric)]
            row = found.iloc[0] if len(found) else None
            if row is not None:
                seeds.add(_seeds_text(int(row["n"]), int(row["n_diverged"])))
            text_md = _cell_text(row, column, intervals, "\u00b1", decimals[column.metric])
            text_tex = _cell_text(row, column, intervals, r"$\pm$", decimals[column.metric])
            is_best, is_tied = row is not None and bool(row["best"]), row is not None and bool(row["tied"])
            md_label, tex_label = labels[column.metric]
            plain_row[md_label] = text_md + (TIE_MARK if is_tied else "")
            md_row[md_label] = f"**{text_md}**" if is_best else plain_row[md_label]
            tex_row[tex_label] = text_tex + (r"$^\dagger$" if is_tied else "")
            bold_row[tex_label] = is_best
        md_row["n"] = plain_row["n"] = tex_row["n"] = "/".join(sorted(seeds, key=lambda text: int(text.split()[0]))) or "0"
        bold_row["n"] = False
        for versus, family in comparisons.items():
            label = f"vs {versus}: \u0394{HEADLINE.label.split()[0]} [95% CI], p_Holm"
            found = family[family["method"].eq(method)]
            text = "(reference)" if method == versus else difference_text(found.iloc[0], HEADLINE.scale) if len(found) else "n/a"
            tex_label = latex_text(label.replace("\u0394", "delta "))
            md_row[label], plain_row[label], tex_row[tex_label], bold_row[tex_label] = text, text, latex_text(text), False
        md_cells.append(md_row)
        plain_cells.append(plain_row)
        tex_cells.append(tex_row)
        bold.append(bold_row)
    markdown = pd.DataFrame(md_cells).to_markdown(index=False, disable_numparse=True)
    bold_frame = pd.DataFrame(bold, index=methods)
    latex = _latex(pd.DataFrame(tex_cells, index=methods), bold_frame, caption, name)
    plain = pd.DataFrame(plain_cells, index=pd.Index(methods, name="method"))
    html_bold = bold_frame.set_axis(plain.columns, axis=1).replace({True: "font-weight: bold", False: ""})
    html = plain.style.set_uuid(name).apply(lambda _: html_bold, axis=None).to_html()  # a fixed id: reruns give the same page
    numbers = marked
    for versus, family in comparisons.items():
        kept = family[["method", "difference", "ci_low", "ci_high", "design", "pairs", "p_value", "p_holm", "equivalence_p_holm", "tests", "verdict"]]
        kept = kept.rename(columns={column: f"vs_{versus}_{column}" for column in kept.columns if column != "method"})
        numbers = numbers.merge(kept.assign(metric=HEADLINE.metric), on=["method", "metric"], how="left")
    directions = {column.metric: column.better for column in columns}
    numbers = numbers.assign(direction=numbers["metric"].map(directions), table=name)
    return PaperTable(name, caption, numbers.reset_index(drop=True), markdown, latex, html)


def column_decimals(values: pd.Series) -> int:
    """Decimals that give a column's largest mean three significant figures (at most 6): every cell of the column
    is then printed to the same precision."""
    finite = values[np.isfinite(values.astype(float))].abs()
    if finite.empty or finite.max() == 0:
        return 2
    return int(min(6, max(0, 2 - math.floor(math.log10(finite.max())))))


def _label(column: MetricColumn, markdown: bool, space: str = "") -> str:
    """The column header: the metric, its direction, and the feature space it was computed in (short name)."""
    arrow = ARROWS[column.better][0 if markdown else 1]
    label = (
        column.label.replace("x 10^3", "\u00d710\u00b3")
        if markdown
        else latex_text(column.label).replace("x 10\\textasciicircum{}3", r"$\times 10^3$")
    )
    if space:
        label += f" {arrow} [{space}]" if markdown else f" {arrow} [{latex_text(space)}]"
        return label
    return f"{label} {arrow}"


def short_space(rows: pd.DataFrame, metric: str) -> str:
    """The feature space(s) of a metric's rows without the weights' hash: "domain encoder", "encoder-LPIPS"."""
    if "feature_space" not in rows:
        return ""
    return "/".join(sorted({_without_hash(str(name)) for name in rows.loc[rows["metric"].eq(metric), "feature_space"].dropna()}))


def _without_hash(name: str) -> str:
    words = name.split(" (")[0].split(" ")  # "encoder-LPIPS (domain encoder c0c51a5a)" -> "encoder-LPIPS"
    if len(words) > 1 and re.fullmatch(r"[0-9a-f]{8}", words[-1]):  # "domain encoder c0c51a5a" -> "domain encoder"
        words = words[:-1]
    return " ".join(words)


LATEX_SPECIALS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}", TIE_MARK: r"$^\dagger$", "\u00b1": r"$\pm$",
}  # fmt: skip


def latex_text(text: str) -> str:
    """Plain text (a caption) as LaTeX: its special characters escaped, the dagger and +/- as math."""
    return "".join(LATEX_SPECIALS.get(character, character) for character in text)


def _latex(cells: pd.DataFrame, bold: pd.DataFrame, caption: str, name: str) -> str:
    """booktabs table via `Styler.to_latex`; the method names are escaped, the cells are LaTeX already."""
    styler = cells.style.format_index(escape="latex", axis=0)  # the column labels are LaTeX already (their arrows)
    styler = styler.apply(lambda _: bold.replace({True: "textbf:--rwrap;", False: ""}), axis=None)
    return styler.to_latex(
        hrules=True,
        column_format="l" + "r" * len(cells.columns),
        caption=latex_text(caption),
        label=f"tab:{name}",
        position_float="centering",
    )
