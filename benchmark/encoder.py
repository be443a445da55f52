"""The domain encoder: a small CNN the pipeline trains itself, used as the feature extractor for FID/KID offline.

Offline there are no Inception weights, so the benchmark trains this classifier, deterministically, on images
that no task uses for shots, validation or reference, and registers it with torch-fidelity. Its metrics are named
for what they are, e.g. "KID (domain encoder 1a2b3c4d)", never plain "KID".
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch_fidelity.registry
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

from benchmark.errors import BenchmarkError, brief
from benchmark.hashing import sha256_file, sha256_json
from benchmark.io import atomic_save
from benchmark.models import non_finite_tensors

log = logging.getLogger(__name__)

EXTRACTOR_NAME = "ganbench-domain-encoder"
FEATURE_LAYER = "features"


class DomainEncoder(nn.Module):
    def __init__(self, channels: int, num_classes: int, feature_dim: int = 128, image_size: int = 28) -> None:
        super().__init__()
        self.channels = channels
        self.trunk = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * (image_size // 4) ** 2, feature_dim), nn.ReLU(),
        )  # fmt: skip
        self.classifier = nn.Linear(feature_dim, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.trunk(images))


def to_unit_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the one preprocessing used by the encoder and the GANs."""
    return images_uint8.float().div(127.5).sub(1.0)


def fit_encoder(
    images: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    holdout_fraction: float,
    output: Path,
    provenance: dict[str, Any],
) -> dict[str, Any]:
    """Train the encoder and save it (safetensors); returns its summary, held-out accuracy included."""
    torch.manual_seed(seed)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_holdout = int(len(order) * holdout_fraction)
    holdout, train = order[:n_holdout], order[n_holdout:]
    channels = images.shape[1]
    model = DomainEncoder(channels, len(class_names), image_size=images.shape[-1])
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    x_all = torch.from_numpy(images)
    y_all = torch.from_numpy(labels)
    shuffle = torch.Generator().manual_seed(seed)
    steps_per_epoch = max(1, len(train) // batch_size)
    started = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        permutation = torch.from_numpy(train)[torch.randperm(len(train), generator=shuffle)]
        for step in range(steps_per_epoch):
            batch = permutation[step * batch_size : (step + 1) * batch_size]
            loss = F.cross_entropy(model(to_unit_range(x_all[batch])), y_all[batch])
            if not math.isfinite(loss.item()):
                _diverged(f"epoch {epoch + 1}, step {step + 1} (loss {loss.item()})", learning_rate)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        rate = (epoch + 1) * steps_per_epoch * batch_size / (time.perf_counter() - started)
        log.info("encoder epoch %d/%d: loss %.3f (%.0f images/s)", epoch + 1, epochs, loss.item(), rate)
    model.eval()
    with torch.no_grad():
        accuracy = _accuracy(model, x_all[holdout], y_all[holdout]) if n_holdout else float("nan")
        prefixes = sorted({name.split("/", 1)[0] for name in class_names})
        dataset_of_class = np.array([prefixes.index(name.split("/", 1)[0]) for name in class_names])
        per_dataset = {
            prefix: _accuracy(model, x_all[subset], y_all[subset])
            for index, prefix in enumerate(prefixes)
            if len(subset := holdout[dataset_of_class[labels[holdout]] == index])
        }
        # KID's polynomial kernel scales with feature magnitude: fix one constant so that features have unit RMS.
        sample = torch.from_numpy(train[: min(len(train), 5000)])
        feature_scale = float(model.features(to_unit_range(x_all[sample])).pow(2).mean().sqrt())
    non_finite = non_finite_tensors(model)
    if non_finite or not math.isfinite(feature_scale):
        _diverged(f"the end of training (non-finite {', '.join(non_finite) or 'features'})", learning_rate)
    if feature_scale == 0:
        _diverged("the end of training (every feature is zero: the ReLUs died)", learning_rate)
    summary = {
        "architecture": {
            "channels": channels,
            "num_classes": len(class_names),
            "feature_dim": model.classifier.in_features,
            "image_size": int(images.shape[-1]),
        },
        "feature_scale": feature_scale,
        "heldout_accuracy": accuracy,
        "heldout_accuracy_per_dataset": per_dataset,
        "num_train_images": int(len(train)),
        "num_heldout_images": int(n_holdout),
        "class_names": class_names,
        "training": {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed},
        "provenance": provenance,
    }
    tensors = {key: value.contiguous() for key, value in model.state_dict().items()}
    metadata = {"summary": json.dumps(summary, sort_keys=True)}
    atomic_save(output, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    log.info("encoder: held-out accuracy %.4f on %d images (per dataset: %s)", accuracy, n_holdout, per_dataset)
    return summary


def _diverged(where: str, learning_rate: float) -> None:
    raise BenchmarkError(
        f"The domain encoder's training diverged at {where}; no encoder was written. Lower encoder.learning_rate "
        f"(now {learning_rate}) and run the encoder stage again."
    )


def _accuracy(model: DomainEncoder, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    correct = 0
    for start in range(0, len(labels), batch_size):
        logits = model(to_unit_range(images[start : start + batch_size]))
        correct += int((logits.argmax(1) == labels[start : start + batch_size]).sum())
    return correct / len(labels)


def load_encoder(path: str | Path) -> tuple[DomainEncoder, dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"Domain encoder {path} does not exist. Run the encoder stage first.")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            summary = json.loads(handle.metadata()["summary"])
        state = load_file(str(path))
    except Exception as error:  # safetensors raises several types for a damaged file
        raise BenchmarkError(f"Domain encoder {path} is unreadable ({error}). Delete it and rerun the encoder stage.") from error
    try:
        model = DomainEncoder(**summary["architecture"])
        model.load_state_dict(state)
    except (RuntimeError, TypeError, KeyError) as error:
        raise BenchmarkError(
            f"Domain encoder {path} does not match the architecture it declares ({brief(error)}). Delete it and rerun the encoder stage."
        ) from error
    model.eval().requires_grad_(False)
    return model, summary


class DomainEncoderExtractor(FeatureExtractorBase):
    """torch-fidelity adapter: takes uint8 N x C x H x W (C = 1 or 3), returns scaled encoder features."""

    def __init__(self, name: str, features_list: list[str], feature_extractor_weights_path: str | None = None, **kwargs: Any):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise BenchmarkError("The domain encoder extractor needs feature_extractor_weights_path (the encoder file).")
        self.encoder, summary = load_encoder(feature_extractor_weights_path)
        self.feature_scale = summary["feature_scale"]

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return (FEATURE_LAYER, "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return FEATURE_LAYER

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        return torch.zeros(1, 1, 28, 28, dtype=torch.uint8)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise BenchmarkError(f"The domain encoder expects uint8 N x C x H x W images, got {images.dtype} {tuple(images.shape)}.")
        channels = self.encoder.channels
        if images.shape[1] == 3 and channels == 1:
            images = images.float().mean(1, keepdim=True).round().to(torch.uint8)  # folder PNGs arrive as RGB
        elif images.shape[1] == 1 and channels == 3:
            images = images.expand(-1, 3, -1, -1)
        features = self.encoder.features(to_unit_range(images))
        computed = {FEATURE_LAYER: features / self.feature_scale, "logits": self.encoder.classifier(features)}
        return tuple(computed[name] for name in self.features_list)


def register_extractor() -> None:
    """Register the domain encoder with torch-fidelity once per process (registering twice raises)."""
    if EXTRACTOR_NAME not in torch_fidelity.registry.FEATURE_EXTRACTORS_REGISTRY:
        torch_fidelity.registry.register_feature_extractor(EXTRACTOR_NAME, DomainEncoderExtractor)


def encoder_identity(path: str | Path) -> dict[str, str]:
    weights_sha256 = sha256_file(path)
    return {"name": f"domain encoder {weights_sha256[:8]}", "weights_sha256": weights_sha256}


def encoder_training_set(
    task_manifests: list[dict[str, Any]], datasets: dict[str, Any], max_per_dataset: int, seed: int
) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, Any]]:
    """Images of every dataset the tasks use, minus every task's reference, validation and shot-pool images.

    Labels are (dataset, class) pairs. Each dataset contributes at most `max_per_dataset` images (seeded), so
    one large source does not drown a small target domain.
    """
    reserved: dict[str, set[int]] = {name: set() for name in datasets}
    for manifest in task_manifests:
        target = manifest["target"]
        for block in ("reference", "validation", "shot_pool"):
            reserved[target["dataset"]["name"]].update(target[block]["indices"])
    images, labels, class_names, used = [], [], [], {}
    for offset, name in enumerate(sorted(datasets)):
        dataset = datasets[name]
        free = np.setdiff1d(np.arange(len(dataset.labels)), np.fromiter(reserved[name], dtype=np.int64))
        if len(free) == 0:  # the metrics would judge this domain in a feature space that never saw it
            raise BenchmarkError(
                f"Dataset '{name}' leaves the domain encoder no image: the tasks hold out every one of its {len(dataset.labels)} images "
                "(reference, validation and shot pool). Set a smaller `reference_size` on a task that targets it, so that "
                "some of its images train the encoder."
            )
        rng = np.random.default_rng([seed, offset])
        chosen = np.sort(rng.choice(free, size=min(max_per_dataset, len(free)), replace=False))
        images.append(dataset.images[chosen])
        labels.append(dataset.labels[chosen] + len(class_names))
        class_names.extend(f"{name}/{class_name}" for class_name in dataset.class_names)
        used[name] = {"content_sha256": dataset.content_sha256, "num_images": int(len(chosen)), "num_reserved_excluded": len(reserved[name])}
    provenance = {"datasets": used, "task_manifests_sha256": {m["name"]: sha256_json(m) for m in task_manifests}}
    return np.concatenate(images), np.concatenate(labels).astype(np.int64), class_names, provenance
