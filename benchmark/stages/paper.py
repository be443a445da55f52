"""Stage `paper`: every paper table, statistic and figure of a results folder (`benchmark.paper.render`), from
stored results alone: a run's `results/` or the committed reference results (`reports/reference/`)."""

from __future__ import annotations

from pathlib import Path

from benchmark.paper.render import render_paper
from benchmark.settings import PaperSettings


def paper(settings: PaperSettings, input_dir: Path, output_dir: Path, reference_dir: Path | None = None) -> None:
    """`reference_dir`: a results folder to compare with (e.g. reports/reference)."""
    render_paper(input_dir, output_dir, settings, reference_dir)
