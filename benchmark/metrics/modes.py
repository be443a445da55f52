"""Mode collapse: NDB and JSD on feature-space bins (Richardson & Weiss 2018) and class-mode coverage.

NDB: k-means on the reference features defines the bins; a bin is "statistically different" when a
two-proportion z-test rejects equal shares of reference and generated samples at level alpha. The reported value
is NDB/K (the share of different bins): held-out real images score about alpha, mode dropping far more.

Class modes: each generated sample gets the majority label of its k nearest reference samples (labels of the
target domain, in feature space); the classifier's accuracy on held-out real images is stored beside the values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.stats import norm
from sklearn.cluster import KMeans

from benchmark.metrics.fidelity import DISTANCE_CHUNK


class FeatureBins:
    def __init__(self, real: torch.Tensor, bins: int, seed: int) -> None:
        # One k-means++ initialisation, seeded (scikit-learn's default count for k-means++).
        self.kmeans = KMeans(n_clusters=bins, n_init=1, random_state=seed).fit(real.numpy())
        self.bins = bins
        self.real_counts = np.bincount(self.kmeans.labels_, minlength=bins)

    def counts(self, features: torch.Tensor) -> np.ndarray:
        return np.bincount(self.kmeans.predict(features.numpy()), minlength=self.bins)


def ndb_jsd(fake: torch.Tensor, bins: FeatureBins, alpha: float) -> list[dict[str, Any]]:
    fake_counts = bins.counts(fake)
    n_real, n_fake = bins.real_counts.sum(), fake_counts.sum()
    p_real, p_fake = bins.real_counts / n_real, fake_counts / n_fake
    pooled = (bins.real_counts + fake_counts) / (n_real + n_fake)
    standard_error = np.sqrt(pooled * (1.0 - pooled) * (1.0 / n_real + 1.0 / n_fake))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(standard_error > 0, (p_fake - p_real) / standard_error, 0.0)
    different = np.abs(z) > norm.ppf(1.0 - alpha / 2.0)
    details = {"bins": bins.bins, "alpha": alpha}
    return [
        {"metric": "ndb_fraction", "value": float(different.mean()), "ndb": int(different.sum()), **details},
        {"metric": "ndb_jsd", "value": jensen_shannon(p_fake, p_real), "unit": "nats", **details},
    ]


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """JSD in nats (at most ln 2), 0 log 0 = 0."""
    mixture = 0.5 * (p + q)

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log(a[mask] / b[mask])))

    return 0.5 * kl(p, mixture) + 0.5 * kl(q, mixture)


class NeighbourClassifier:
    """k-NN majority vote over the reference set's labels (ties: the smallest label)."""

    def __init__(self, real: torch.Tensor, labels: np.ndarray, k: int) -> None:
        self.real, self.k = real, k
        self.classes, self.labels = np.unique(labels, return_inverse=True)

    def predict(self, features: torch.Tensor) -> np.ndarray:
        predictions = []
        for chunk in features.split(DISTANCE_CHUNK):
            neighbours = torch.cdist(chunk, self.real).topk(self.k, dim=1, largest=False).indices.numpy()
            votes = np.apply_along_axis(np.bincount, 1, self.labels[neighbours], minlength=len(self.classes))
            predictions.append(votes.argmax(axis=1))
        return np.concatenate(predictions)  # indices into self.classes


def class_modes(
    fake: torch.Tensor, classifier: NeighbourClassifier, heldout: torch.Tensor, heldout_labels: np.ndarray, min_share_ratio: float
) -> list[dict[str, Any]]:
    """Classes covered (a class counts when its generated share is at least `min_share_ratio` times its reference
    share) and KL(generated class histogram || reference class histogram) in nats."""
    reference_share = np.bincount(classifier.labels, minlength=len(classifier.classes)) / len(classifier.labels)
    fake_share = np.bincount(classifier.predict(fake), minlength=len(classifier.classes)) / len(fake)
    heldout_index = np.searchsorted(classifier.classes, heldout_labels)
    known = (heldout_index < len(classifier.classes)) & (classifier.classes[np.minimum(heldout_index, len(classifier.classes) - 1)] == heldout_labels)
    accuracy = float((classifier.predict(heldout[known]) == heldout_index[known]).mean()) if known.any() else float("nan")
    details = {
        "num_classes": len(classifier.classes),
        "classifier": f"{classifier.k}-NN on reference features",
        "classifier_heldout_accuracy": accuracy,
    }
    covered = fake_share >= min_share_ratio * reference_share
    mask = fake_share > 0
    kl = float(np.sum(fake_share[mask] * np.log(fake_share[mask] / reference_share[mask])))
    return [
        {
            "metric": "classes_covered",
            "value": float(covered.mean()),
            "num_covered": int(covered.sum()),
            "min_share_ratio": min_share_ratio,
            **details,
        },
        {"metric": "class_kl", "value": kl, "unit": "nats", **details},
    ]
