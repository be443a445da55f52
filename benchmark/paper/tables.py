"""Paper tables: per task, K and checkpoint, methods as rows and metrics as columns, written as Markdown, LaTeX
(booktabs, `\\input`-ready) and CSV with pandas' own writers.

A cell is the mean +/- sample standard deviation over the seeds that completed (n beside it), or the 95%
t-interval when asked. Per column the best mean is in bold; a method the seeds do not tell apart from the best is
marked with a dagger: a two-sided paired t-test over their shared seeds (each seed: the same K shots and the same
pretraining for every method) has p >= 0.05. Methods with a diverged seed are never bold nor marked: their mean
leaves out their failures. The fidelity table also compares each method with `finetune` on the same seeds: wins
and losses on the headline metric (a diverged seed loses) and the paired t-test's two-sided p-value. A missing
metric is "n/a", a method whose every seed diverged "diverged": never a zero.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from benchmark.results import DIVERSITY, FIDELITY, HEADLINE, MetricColumn

BASELINE = "finetune"  # what the paired comparison is against: the plain transfer every method claims to improve on
CONFIDENCE = 0.95
ALPHA = 0.05  # level of the paired test that decides a tie with the best
TIE_MARK = "\u2020"  # dagger: not told apart from the best (paired t-test on shared seeds)
GROUPS = {"fidelity": FIDELITY, "diversity": DIVERSITY}
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
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, np.maximum(table["n"] - 1, 1)) * table["std"] / np.sqrt(table["n"])
    half = half.where(table["n"] >= 2)  # one seed: no interval
    table["ci_low"], table["ci_high"] = table["mean"] - half, table["mean"] + half
    return table.reset_index()


def diverged(rows: pd.DataFrame) -> pd.Series:
    """Which rows record a diverged run (rows without a status column: none)."""
    return rows["status"].eq("diverged") if "status" in rows else pd.Series(False, index=rows.index)


def _goodness(values: pd.Series, column: MetricColumn) -> pd.Series:
    """Values turned so that higher is better (closeness to 1 for the `~1` metrics)."""
    return {"lower": -values, "higher": values, "~1": -(values - 1).abs()}[column.better]


def _per_seed(rows: pd.DataFrame, column: MetricColumn) -> pd.DataFrame:
    """Seeds x methods of one metric's goodness (higher is better); a diverged seed is the worst possible (-inf)."""
    own = rows[rows["metric"].eq(column.metric)]
    goodness = _goodness(own["value"], column).where(~diverged(own), -np.inf)
    return own.assign(goodness=goodness).pivot_table(index="seed", columns="method", values="goodness", aggfunc="first")


def tied_by_paired_test(best: pd.Series, other: pd.Series, alpha: float = ALPHA) -> bool | None:
    """Whether two methods' per-seed goodness is not told apart: the two-sided paired t-test over the seeds both
    completed has p >= alpha (no spread in the differences: tied only when they are all 0). None with fewer than
    two shared seeds, where no paired test exists."""
    pair = pd.concat([best, other], axis=1).dropna()
    pair = pair[np.isfinite(pair).all(axis=1)]
    if len(pair) < 2:
        return None
    difference = pair.iloc[:, 0] - pair.iloc[:, 1]
    if difference.std() == 0:
        return bool((difference == 0).all())
    return bool(paired_p_value(pair.iloc[:, 0], pair.iloc[:, 1]) >= alpha)


def paired_p_value(first: pd.Series, second: pd.Series) -> float:
    """The two-sided paired t-test's p-value (scipy's warning about nearly equal values silenced: p is then ~1)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Precision loss", category=RuntimeWarning)
        return float(stats.ttest_rel(first, second).pvalue)


def mark_best(statistics: pd.DataFrame, column: MetricColumn, rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """For one metric's rows: `best` (every method with the best mean, among methods without diverged seeds) and
    `tied` (another such method that the seeds do not tell apart from the best: a paired t-test over their shared
    seeds, p >= 0.05, given the per-seed `rows`; without two shared seeds, overlapping 95% intervals, or with one
    seed an equal mean)."""
    own = statistics[statistics["metric"].eq(column.metric)].copy()
    own["best"], own["tied"] = False, False
    ranked = own[own["n_diverged"].eq(0) & own["mean"].notna()]
    if ranked.empty:
        return own
    badness = -_goodness(ranked["mean"], column)
    own.loc[badness.index[badness == badness.min()], "best"] = True
    first = badness.idxmin()
    per_seed = _per_seed(rows, column) if rows is not None else None
    low, high = own.loc[first, ["ci_low", "ci_high"]]
    for index in ranked.index[~own.loc[ranked.index, "best"]]:
        other = own.loc[index]
        tied = None
        if per_seed is not None:
            tied = tied_by_paired_test(per_seed[own.loc[first, "method"]], per_seed[other["method"]])
        if tied is None:
            if pd.isna(low) or pd.isna(other["ci_low"]):
                tied = bool(other["mean"] == own.loc[first, "mean"])
            else:
                tied = bool(other["ci_low"] <= high and low <= other["ci_high"])
        own.loc[index, "tied"] = tied
    return own


def paired_comparison(rows: pd.DataFrame, metric: MetricColumn, baseline: str = BASELINE) -> pd.DataFrame:
    """Per method: wins and losses against `baseline` over the seeds both ran (a win: better on that seed; a
    diverged seed loses to a completed one), and the two-sided paired t-test p-value over the seeds both
    completed (None with fewer than 2 such pairs or no spread in the differences)."""
    goodness = _per_seed(rows, metric)
    out = []
    if baseline not in goodness:
        return pd.DataFrame(columns=["method", "wins", "losses", "pairs", "p_value"])
    for method in goodness.columns:
        if method == baseline:
            continue
        pair = goodness[[method, baseline]].dropna()
        with np.errstate(invalid="ignore"):
            difference = pair[method] - pair[baseline]  # -inf - -inf (both diverged) is NaN: neither a win nor a loss
        wins, losses = int((difference > 0).sum()), int((difference < 0).sum())
        completed = pair[np.isfinite(pair).all(axis=1)]
        p_value = None
        if len(completed) >= 2 and (completed[method] - completed[baseline]).std() > 0:
            p_value = paired_p_value(completed[method], completed[baseline])
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
    marked = pd.concat([mark_best(statistics, column, rows) for column in columns])
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
        md_row["n"] = plain_row["n"] = tex_row["n"] = "/".join(sorted(seeds, key=lambda text: int(text.split()[0]))) or "0"
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
    html = plain.style.set_uuid(name).apply(lambda _: html_bold, axis=None).to_html()  # a fixed id: reruns give the same page
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
