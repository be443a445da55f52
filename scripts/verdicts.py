"""Every comparison a report may cite, from the comparison engine: per task, K and checkpoint, each method against
each reference method as one family (Holm over the other methods), on one metric.

    .venv/bin/python scripts/verdicts.py reports/reference [--metric kid] [--versus finetune scratch] > verdicts.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmark.comparison import against, difference_text, family_note, seed_values  # noqa: E402
from benchmark.paper.inputs import checkpoints_present, read_results_folder  # noqa: E402
from benchmark.results import DIVERSITY, FIDELITY, METRIC_DIRECTIONS  # noqa: E402
from benchmark.settings import PaperSettings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a results folder (results.csv or results.csv.gz)")
    parser.add_argument("--metric", default="kid")
    parser.add_argument("--versus", nargs="*", default=None, help="reference methods (default: every method)")
    parser.add_argument("--settings", default="{}", help="the config's paper section as JSON")
    args = parser.parse_args()
    settings = PaperSettings.from_json(args.settings).comparison()
    inputs = read_results_folder(args.folder)
    scale = {column.metric: column.scale for column in (*FIDELITY, *DIVERSITY)}.get(args.metric, 1.0)
    better = METRIC_DIRECTIONS.get(args.metric, "lower")
    lines = [f"# Verdicts of the comparison engine: {args.metric} ({better} is better), {inputs.folder}, hyperparameters {inputs.rule}", ""]
    for checkpoint in checkpoints_present(inputs.results):
        rows = inputs.results[inputs.results["checkpoint"].eq(checkpoint)]
        for (task, shots), block in rows.groupby(["task", "shots"], sort=True):
            seeds = seed_values(block, args.metric)
            for versus in args.versus or seeds.methods():
                family = against(seeds, versus, settings, better)
                if family.empty:
                    continue
                lines += [f"## {task}, K = {shots}, {checkpoint}: against {versus} ({family_note(family, settings)})", ""]
                lines += [f"- {row['method']}: {difference_text(row, scale)} (p {row['p_value']:.3g})" for _, row in family.iterrows()]
                lines.append("")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
