"""Collect run records into one tidy CSV and render tables from it, without retraining anything."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from benchmark.errors import BenchmarkError
from benchmark.io import atomic_write_text

GROUP = ["task", "task_kind", "shots", "method", "checkpoint", "metric", "feature_space"]
COLUMNS = [
    *GROUP[:5], "seed", "split_draw", "pretrain_seed", "checkpoint_step", "metric", "value", "n_real", "n_fake",
    "feature_space", "feature_weights_sha256", "kid_std_over_subsets", "kid_subset_size", "reference_sha256",
    "code_version", "method_hparams", "run_dir",
]  # fmt: skip
HEADLINE = [("kid", "KID x 10^3", 1e3), ("fid", "FID", 1.0)]


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
            row["method_hparams"] = json.dumps(record["run_config"]["method_hparams"], sort_keys=True)
            row["run_dir"] = str(Path(path).parent)
            rows.append(row)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.sort_values(["task", "shots", "method", "seed", "metric"], kind="stable").reset_index(drop=True)


def write_results_csv(metrics_files: list[Path], output: Path) -> pd.DataFrame:
    frame = collect_results(metrics_files)
    atomic_write_text(output, frame.to_csv(index=False))
    return frame


def summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample standard deviation over seeds per (task, K, method, checkpoint, metric)."""
    grouped = frame.groupby(GROUP, sort=True)["value"]
    summary = grouped.agg(mean="mean", std="std", n="count").reset_index()
    sizes = frame.groupby(GROUP, sort=True)[["n_real", "n_fake"]].agg(lambda values: "/".join(str(v) for v in sorted(set(values))))
    return summary.merge(sizes.reset_index(), on=GROUP)


def render_markdown(frame: pd.DataFrame) -> str:
    if frame.empty:
        raise BenchmarkError("No results to tabulate: the results CSV has no rows. Run the benchmark first.")
    summary = summary_table(frame)
    lines = [
        "# Results",
        "",
        "Mean +/- sample standard deviation over seeds (each seed: its own split draw of the K shots and its own",
        "training seed); n = number of seeds. Lower is better for both metrics. KID is the headline distance: it",
        "is unbiased, while FID is biased upwards when the reference set is small. Both are computed on the",
        "feature space named below, not on Inception-v3 unless it says so; n_real / n_fake give the sample sizes.",
        "Checkpoint: the final one of each run.",
        "",
    ]
    for (task, kind, space), block in summary.groupby(["task", "task_kind", "feature_space"], sort=True):
        lines += [f"## {task} ({kind})", "", f"Feature space: {space}", ""]
        header = "| K | method | " + " | ".join(label for _, label, _ in HEADLINE) + " | n | n_real / n_fake |"
        lines += [header, "|" + "---|" * (header.count("|") - 1)]
        for (shots, method), rows in block.groupby(["shots", "method"], sort=True):
            cells, counts, sizes = [], set(), set()
            for metric, _, scale in HEADLINE:
                row = rows[rows["metric"] == metric]
                if row.empty:
                    cells.append("n/a")
                    continue
                row = row.iloc[0]
                std = "n/a" if pd.isna(row["std"]) else f"{row['std'] * scale:.2f}"
                cells.append(f"{row['mean'] * scale:.2f} +/- {std}")
                counts.add(int(row["n"]))
                sizes.add(f"{row['n_real']} / {row['n_fake']}")
            lines.append(f"| {shots} | {method} | " + " | ".join(cells) + f" | {'/'.join(map(str, sorted(counts)))} | {'; '.join(sorted(sizes))} |")
        lines.append("")
        for shots, rows in block[block["metric"] == HEADLINE[0][0]].groupby("shots", sort=True):
            lines += [f"K = {shots}: {headline_comparison(rows)}", ""]
    return "\n".join(lines)


def headline_comparison(rows: pd.DataFrame) -> str:
    """Which method has the lowest mean headline metric, and whether the seeds resolve it from the runner-up."""
    _, label, scale = HEADLINE[0]
    ranked = rows.sort_values("mean", kind="stable")
    if len(ranked) < 2:
        return f"only {ranked.iloc[0]['method']} was run."
    best, second = ranked.iloc[0], ranked.iloc[1]
    text = (
        f"lowest mean {label}: {best['method']} ({best['mean'] * scale:.2f}), runner-up {second['method']} "
        f"({second['mean'] * scale:.2f}); difference {(second['mean'] - best['mean']) * scale:.2f}"
    )
    if min(best["n"], second["n"]) < 2:
        return text + " (one seed each: no spread to compare with)."
    standard_error = (best["std"] ** 2 / best["n"] + second["std"] ** 2 / second["n"]) ** 0.5
    ratio = (second["mean"] - best["mean"]) / standard_error if standard_error > 0 else float("inf")
    verdict = "larger than" if ratio > 2 else "within"
    return text + f" = {ratio:.1f} standard errors of the difference, {verdict} 2 (n = {int(best['n'])} and {int(second['n'])} seeds)."


def write_markdown_table(results_csv: Path, output: Path) -> None:
    if not Path(results_csv).is_file():
        raise BenchmarkError(f"{results_csv} does not exist. Run the collect stage first.")
    atomic_write_text(output, render_markdown(pd.read_csv(results_csv)))
