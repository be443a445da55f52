"""Stage `train_encoder`: the domain encoder, the feature space of the metrics when no Inception weights exist.

It trains on images of every dataset the tasks use, minus every task's reference, validation and shot-pool
images (`benchmark.encoder.encoder_training_set`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from benchmark.data import PreparedDataset
from benchmark.encoder import encoder_training_set, fit_encoder
from benchmark.settings import EncoderSettings
from benchmark.splits import read_manifest


def train_encoder(settings: EncoderSettings, manifests: list[Path], datasets: dict[str, Path], output: Path) -> None:
    """`manifests`: every task's manifest; `datasets`: name -> prepared dataset file, for every dataset used. Trains
    on `settings.threads` torch threads whatever the command line says: CPU reductions split over another number of
    threads round differently, and the encoder defines every metric's feature space."""
    torch.set_num_threads(settings.threads)
    task_manifests = [read_manifest(path, "task") for path in manifests]
    prepared = {name: PreparedDataset.load(path) for name, path in datasets.items()}
    images, labels, class_names, provenance = encoder_training_set(task_manifests, prepared, settings.max_images_per_dataset, settings.seed)
    fit_encoder(
        images, labels, class_names, epochs=settings.epochs, batch_size=settings.batch_size, learning_rate=settings.learning_rate,
        seed=settings.seed, holdout_fraction=settings.holdout_fraction, output=output, provenance=provenance,
    )  # fmt: skip
