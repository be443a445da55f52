"""Paper tables: per task, K and checkpoint, methods as rows and metrics as columns, written as Markdown, LaTeX
(booktabs, `\\input`-ready) and CSV with pandas' own writers.

A cell is the mean +/- sample standard deviation over the seeds that completed (n beside it), or the 95%
t-interval when asked. Per column the best mean is in bold; a method whose 95% interval overlaps the best one's
is marked as tied with it (the seeds do not tell them apart). Methods with a diverged seed are never bold nor
tied: their mean leaves out their failures. The fidelity table also compares each method with `finetune` on the
same seeds (each seed: the same K shots and the same pretraining): wins and losses on the headline metric and a
paired t-test's two-sided p-value. A missing metric is "n/a", a method whose every seed diverged "diverged":
never a zero.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from benchmark.results import DIVERSITY, FIDELITY, HEADLINE, MetricColumn

BASELINE = "finetune"  # what the paired comparison is against: the plain transfer every method claims to improve on
CONFIDENCE = 0.95
TIE_MARK = "\u2020"  # dagger: tied with the best (95% intervals overlap)
GROUPS = {"fidelity": FIDELITY, "diversity": DIVERSITY}
ARROWS = {"lower": ("\u2193", r"$\downarrow$"), "higher": ("\u2191", r"$\uparrow$"), "~1": ("\u21921", r"$\to 1$")}


@dataclass(frozen=True)
class PaperTable:
    """One table: its caption, the tidy numbers (CSV rows) and the two renderings."""

    name: str  # file stem: task_kK_checkpoint_group
    caption: str
    numbers: pd.DataFrame
    markdown: str
    latex: str
    html: str


def seed_statistics(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (method, metric): mean, sample std, n completed, n diverged and the 95% t-interval of the mean."""
    rows = rows.assign(diverged=rows["status"].eq("diverged"))
    grouped = rows.groupby(["method", "metric"], sort=True)
    table = grouped["value"].agg(mean="mean", std="std", n="count")
    table["n_diverged"] = grouped["diverged"].sum().astype(int)
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, np.maximum(table["n"] - 1, 1)) * table["std"] / np.sqrt(table["n"])
    half = half.where(table["n"] >= 2)  # one seed: no interval
    table["ci_low"], table["ci_high"] = table["mean"] - half, table["mean"] + half
    return table.reset_index()


def mark_best(statistics: pd.DataFrame, column: MetricColumn) -> pd.DataFrame:
    """For one metric's rows: `best` (the best mean among methods without diverged seeds) and `tied` (another such
    method whose 95% interval overlaps the best one's; with one seed, only an equal mean ties)."""
    rows = statistics[statistics["metric"].eq(column.metric)].copy()
    rows["best"], rows["tied"] = False, False
    ranked = rows[rows["n_diverged"].eq(0) & rows["mean"].notna()]
    if ranked.empty:
        return rows
    badness = {"lower": ranked["mean"], "higher": -ranked["mean"], "~1": (ranked["mean"] - 1).abs()}[column.better]
    best = badness.idxmin()
    rows.loc[best, "best"] = True
    low, high = rows.loc[best, ["ci_low", "ci_high"]]
    for index in ranked.index.drop(best):
        other = rows.loc[index]
        if pd.isna(low) or pd.isna(other["ci_low"]):
            rows.loc[index, "tied"] = bool(other["mean"] == rows.loc[best, "mean"])
        else:
            rows.loc[index, "tied"] = bool(other["ci_low"] <= high and low <= other["ci_high"])
    return rows


def paired_comparison(rows: pd.DataFrame, metric: MetricColumn, baseline: str = BASELINE) -> pd.DataFrame:
    """Per method: wins and losses against `baseline` over the seeds both completed (a win: better on that seed),
    and the two-sided paired t-test p-value (None with fewer than 2 pairs or no spread in the differences)."""
    values = rows[rows["metric"].eq(metric.metric) & rows["value"].notna()].pivot_table(index="seed", columns="method", values="value")
    out = []
    if baseline not in values:
        return pd.DataFrame(columns=["method", "wins", "losses", "pairs", "p_value"])
    for method in values.columns:
        if method == baseline:
            continue
        pair = values[[method, baseline]].dropna()
        difference = pair[method] - pair[baseline]
        sign = {"lower": -1, "higher": 1, "~1": None}[metric.better]
        if sign is None:  # closeness to 1: compare distances to 1
            difference = (pair[baseline] - 1).abs() - (pair[method] - 1).abs()
            sign = 1
        wins, losses = int((sign * difference > 0).sum()), int((sign * difference < 0).sum())
        p_value = None
        if len(pair) >= 2 and difference.std() > 0:
            p_value = float(stats.ttest_rel(pair[method], pair[baseline]).pvalue)
        out.append({"method": method, "wins": wins, "losses": losses, "pairs": len(pair), "p_value": p_value})
    return pd.DataFrame(out, columns=["method", "wins", "losses", "pairs", "p_value"])


def _number(value: float) -> str:
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3g}"


def _seeds_text(n: int, n_diverged: int) -> str:
    return f"{n} + {n_diverged} diverged" if n_diverged else str(n)


def _cell_text(row: pd.Series | None, column: MetricColumn, intervals: bool, plus_minus: str) -> str:
    if row is None or (row["n"] == 0 and not row["n_diverged"]):
        return "n/a"
    if row["n"] == 0:
        return "diverged"
    scale = column.scale
    mean = _number(row["mean"] * scale)
    if pd.isna(row["std"]):
        return mean
    if intervals:
        return f"{mean} [{_number(row['ci_low'] * scale)}, {_number(row['ci_high'] * scale)}]"
    return f"{mean} {plus_minus} {_number(row['std'] * scale)}"


def build_table(rows: pd.DataFrame, group: str, caption: str, name: str, intervals: bool = False, baseline: str = BASELINE) -> PaperTable | None:
    """The table of one task, K and checkpoint for one metric group (`GROUPS`); None when no metric is present."""
    columns = [column for column in GROUPS[group] if rows["metric"].eq(column.metric).any()]
    if not columns:
        return None
    statistics = seed_statistics(rows)
    marked = pd.concat([mark_best(statistics, column) for column in columns])
    methods = sorted(set(rows["method"]))
    comparison = paired_comparison(rows, HEADLINE, baseline) if group == "fidelity" and HEADLINE in columns else None
    if comparison is not None and comparison.empty:
        comparison = None  # the baseline did not run here
    spaces = {column.metric: short_space(rows, column.metric) for column in columns}
    labels = {column.metric: (_label(column, True, spaces[column.metric]), _label(column, False, spaces[column.metric])) for column in columns}
    md_cells, plain_cells, tex_cells, bold = [], [], [], []
    for method in methods:
        md_row, plain_row, tex_row, bold_row = {"method": method}, {}, {}, {}
        seeds = set()
        for column in columns:
            found = marked[marked["method"].eq(method) & marked["metric"].eq(column.metric)]
            row = found.iloc[0] if len(found) else None
            if row is not None:
                seeds.add(_seeds_text(int(row["n"]), int(row["n_diverged"])))
            text_md = _cell_text(row, column, intervals, "\u00b1")
            text_tex = _cell_text(row, column, intervals, r"$\pm$")
            is_best, is_tied = row is not None and bool(row["best"]), row is not None and bool(row["tied"])
            md_label, tex_label = labels[column.metric]
            plain_row[md_label] = text_md + (TIE_MARK if is_tied else "")
            md_row[md_label] = f"**{text_md}**" if is_best else plain_row[md_label]
            tex_row[tex_label] = text_tex + (r"$^\dagger$" if is_tied else "")
            bold_row[tex_label] = is_best
        md_row["n"] = plain_row["n"] = tex_row["n"] = "/".join(sorted(seeds)) or "0"
        bold_row["n"] = False
        if comparison is not None:
            versus = comparison.set_index("method")
            label = f"vs {baseline}: W/L, p"
            if method == baseline:
                text = "(baseline)"
            elif method in versus.index:
                entry = versus.loc[method]
                p_text = "n/a" if pd.isna(entry["p_value"]) else f"{entry['p_value']:.2g}"
                text = f"{int(entry['wins'])}/{int(entry['losses'])}, p {p_text}"
            else:
                text = "n/a"
            tex_label = label.replace("_", r"\_")
            md_row[label], plain_row[label], tex_row[tex_label], bold_row[tex_label] = text, text, text, False
        md_cells.append(md_row)
        plain_cells.append(plain_row)
        tex_cells.append(tex_row)
        bold.append(bold_row)
    markdown = pd.DataFrame(md_cells).to_markdown(index=False, disable_numparse=True)
    bold_frame = pd.DataFrame(bold, index=methods)
    latex = _latex(pd.DataFrame(tex_cells, index=methods), bold_frame, caption, name)
    plain = pd.DataFrame(plain_cells, index=pd.Index(methods, name="method"))
    html_bold = bold_frame.set_axis(plain.columns, axis=1).replace({True: "font-weight: bold", False: ""})
    html = plain.style.apply(lambda _: html_bold, axis=None).to_html()
    numbers = marked.merge(comparison, on="method", how="left") if comparison is not None else marked
    if comparison is not None:
        headline_only = numbers["metric"].ne(HEADLINE.metric)
        numbers.loc[headline_only, ["wins", "losses", "pairs", "p_value"]] = np.nan
    directions = {column.metric: column.better for column in columns}
    numbers = numbers.assign(direction=numbers["metric"].map(directions), table=name)
    return PaperTable(name, caption, numbers.reset_index(drop=True), markdown, latex, html)


def _label(column: MetricColumn, markdown: bool, space: str = "") -> str:
    """The column header: the metric, its direction, and the feature space it was computed in (short name)."""
    arrow = ARROWS[column.better][0 if markdown else 1]
    label = column.label.replace("x 10^3", "\u00d710\u00b3") if markdown else column.label.replace("x 10^3", r"$\times 10^3$")
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
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", TIE_MARK: r"$^\dagger$", "\u00b1": r"$\pm$",
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
