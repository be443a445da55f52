"""Compare two benchmark workdirs record by record: the check that a change of code left every result unchanged.

    .venv/bin/python scripts/compare_results.py BEFORE_DIR AFTER_DIR

Each workdir holds a `results/` folder written by `snakemake`. Every run's metrics.json is compared field by
field (values, sample sizes, hashes, the run's whole config), and results.csv row by row. Only the code version
is left out, since it names the commit that produced the records; the comparison says how many records,
fields and rows it compared. Exit status 0: identical; 1: differences (listed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark import layout

IGNORED = {"code_version"}  # the commit that wrote a record: differs by construction


def _without_ignored(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_ignored(item) for key, item in value.items() if key not in IGNORED}
    if isinstance(value, list):
        return [_without_ignored(item) for item in value]
    return value


def _differences(before: Any, after: Any, where: str) -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        found = [f"{where}.{key}: only in one" for key in sorted(set(before) ^ set(after))]
        for key in sorted(set(before) & set(after)):
            found += _differences(before[key], after[key], f"{where}.{key}")
        return found
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [line for index, (a, b) in enumerate(zip(before, after)) for line in _differences(a, b, f"{where}[{index}]")]
    return [] if before == after else [f"{where}: {before!r} vs {after!r}"]


def _leaves(value: Any) -> int:
    if isinstance(value, dict):
        return sum(_leaves(item) for item in value.values())
    if isinstance(value, list):
        return sum(_leaves(item) for item in value)
    return 1


def compare(before_dir: Path, after_dir: Path) -> tuple[list[str], dict[str, int]]:
    runs = {
        folder: sorted(path.relative_to(folder) for path in folder.glob((layout.RUN / layout.StageFolder.METRICS).glob_pattern()))
        for folder in (before_dir, after_dir)
    }
    differences = [f"metrics file only in one workdir: {path}" for path in sorted(set(runs[before_dir]) ^ set(runs[after_dir]))]
    counts = {"runs": 0, "records": 0, "fields": 0, "csv_rows": 0}
    for path in sorted(set(runs[before_dir]) & set(runs[after_dir])):
        before, after = (_without_ignored(json.loads((folder / path).read_text())["records"]) for folder in (before_dir, after_dir))
        differences += _differences(before, after, str(path))
        counts["runs"] += 1
        counts["records"] += len(before)
        counts["fields"] += _leaves(before)
    frames = [pd.read_csv(folder / layout.RESULTS_CSV).drop(columns=list(IGNORED)) for folder in (before_dir, after_dir)]
    if not frames[0].equals(frames[1]):
        differences.append("results.csv differs outside the code_version column")
    counts["csv_rows"] = len(frames[0])
    return differences, counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    differences, counts = compare(args.before, args.after)
    for line in differences[:50]:
        print(line)
    verdict = "identical" if not differences else f"{len(differences)} differences"
    print(f"{verdict}: {counts['runs']} runs, {counts['records']} records, {counts['fields']} fields, {counts['csv_rows']} CSV rows compared")
    return 0 if not differences else 1


if __name__ == "__main__":
    sys.exit(main())
