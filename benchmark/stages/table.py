"""Stage `table`: the Markdown results tables, rendered from the results CSV alone (no training, no scoring)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.comparison import ComparisonSettings
from benchmark.errors import BenchmarkError
from benchmark.io import atomic_write_text, check_apart
from benchmark.results import render_markdown


def table(results_csv: Path, output: Path, settings: ComparisonSettings, oracle_draws: bool = False) -> None:
    """`oracle_draws`: also select hyperparameter draws on the reference set (config sweep.oracle), labelled as such;
    `settings`: the comparison engine's level and equivalence margin (config `paper`)."""
    if not Path(results_csv).is_file():
        raise BenchmarkError(f"{results_csv} does not exist. Run the collect stage first.")
    check_apart(output, "--output", [("--input", results_csv)])
    atomic_write_text(output, render_markdown(pd.read_csv(results_csv), oracle_draws=oracle_draws, settings=settings))
