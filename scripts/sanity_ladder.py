"""The metric sanity ladder of a task: do KID and FID, in the run's feature space, rank known image sets as they
should? Held-out real images (the task's validation split) must score lowest against the reference set, then
blurred copies of them (stronger blur, higher score), then uniform noise. Reads a finished run's `results/`
(task manifest, prepared target dataset, domain encoder); trains and generates nothing.

    .venv/bin/python scripts/sanity_ladder.py --workdir WORKDIR --task TASK [--task ...] [--output FILE.md]

Writes a Markdown table (stdout, or --output) and exits 1 when a rung is out of order.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from benchmark import layout
from benchmark.data import PreparedDataset
from benchmark.metrics import feature_space
from benchmark.metrics.suite import DistanceScorer
from benchmark.splits import read_manifest

BLUR_RADII = (0.5, 1.0, 2.0)
KID_SUBSET_SIZE, KID_SUBSETS, SEED = 500, 100, 0


def blurred(images: np.ndarray, radius: float) -> np.ndarray:
    return np.stack(
        [np.stack([np.asarray(Image.fromarray(channel).filter(ImageFilter.GaussianBlur(radius))) for channel in image]) for image in images]
    )


def ladder(workdir: Path, task: str) -> list[tuple[str, dict[str, float]]]:
    manifest = read_manifest(workdir / layout.TASK_SPLIT.fill(task=task), "task")
    target = manifest["target"]
    dataset = PreparedDataset.load(workdir / layout.DATASET.fill(dataset=target["dataset"]["name"]))
    space = feature_space(workdir / layout.ENCODER, None)
    reference = dataset.images[target["reference"]["indices"]]
    heldout = dataset.images[target["validation"]["indices"]]
    scorer = DistanceScorer(reference, space, KID_SUBSET_SIZE, KID_SUBSETS, SEED, torch.device("cpu"))
    noise = np.random.default_rng(SEED).integers(0, 256, size=heldout.shape, dtype=np.uint8)
    rungs = [("held-out real", heldout)] + [(f"held-out, blur radius {radius}", blurred(heldout, radius)) for radius in BLUR_RADII]
    rungs.append(("uniform noise", noise))
    return [(name, scorer(images)) for name, images in rungs]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("."))
    parser.add_argument("--task", action="append", required=True)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    lines, ordered = [], True
    for task in args.task:
        rows = ladder(args.workdir, task)
        lines += [f"### {task}", "", "| images vs the reference set | KID x 10^3 | FID |", "|---|---|---|"]
        lines += [f"| {name} | {scores['kid'] * 1e3:.2f} | {scores['fid']:.2f} |" for name, scores in rows]
        for metric in ("kid", "fid"):
            values = [scores[metric] for _, scores in rows]
            in_order = all(a < b for a, b in zip(values, values[1:]))
            ordered &= in_order
            lines.append(f"\n{metric.upper()} {'rises at every rung' if in_order else 'is OUT OF ORDER'}.")
        lines.append("")
    text = "\n".join(lines) + "\n"
    if args.output:
        args.output.write_text(text)
    sys.stdout.write(text)
    return 0 if ordered else 1


if __name__ == "__main__":
    raise SystemExit(main())
