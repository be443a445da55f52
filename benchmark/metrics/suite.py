"""All metrics of one run, from one extraction of features per image set.

`MetricSuite` does the reference-side work once (features, FID statistics, k-NN radii, k-means bins, the class
classifier, shot and held-out embeddings) and then scores any number of generated sets: the final checkpoint,
the validation-selected one, and every evaluation checkpoint for an oracle selection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import numpy as np
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics

from benchmark.config import complete
from benchmark.errors import BenchmarkError
from benchmark.metrics.diversity import NearestShots, intra_cluster_diversity, memorisation
from benchmark.metrics.features import FeatureExtractor, FeatureSpace
from benchmark.metrics.fidelity import density_coverage, fid_infinity, frechet_distance, kid, kth_neighbour_distances, precision_recall
from benchmark.metrics.modes import FeatureBins, NeighbourClassifier, class_modes, ndb_jsd
from benchmark.metrics.perceptual import PerceptualEmbedding

log = logging.getLogger(__name__)

MIN_REFERENCE_PER_BIN = 10  # NDB's z-tests need several reference samples per bin
# Every metric the suite can report (FID_inf only when asked for; class and NN-ratio metrics where they apply).
SUITE_METRICS = (
    "kid", "fid", "fid_inf", "precision", "recall", "density", "coverage", "ndb_fraction", "ndb_jsd",
    "classes_covered", "class_kl", "intra_cluster_lpips", "memorisation_share", "nn_ratio_share",
)  # fmt: skip


@dataclass(frozen=True)
class MetricSettings:
    """The `evaluation` keys the metrics read. Defaults live in the config schema: build it with `from_config`."""

    config_section: ClassVar[str] = "evaluation"

    kid_subset_size: int
    kid_subsets: int
    seed: int
    nearest_k: int
    ndb_bins: int
    ndb_alpha: float
    diversity_samples: int
    diversity_cluster_size: int
    memorisation_quantile: float
    nn_ratio_threshold: float
    class_neighbours: int
    class_min_share_ratio: float
    fid_infinity: bool

    def __post_init__(self) -> None:
        complete("evaluation", asdict(self))  # the schema's constraints also hold when built by hand

    @classmethod
    def from_config(cls, evaluation: dict[str, Any]) -> MetricSettings:
        """From the `evaluation` section (missing keys take the schema's defaults; keys for other uses are ignored)."""
        values = complete("evaluation", evaluation)
        return cls(**{field.name: values[field.name] for field in fields(cls)})


@dataclass(frozen=True)
class EvaluationSets:
    """uint8 N x C x H x W images; labels None when the target has no class labels."""

    reference: np.ndarray
    reference_labels: np.ndarray | None
    heldout: np.ndarray  # real images of the target that are neither reference nor shots (the validation split)
    heldout_labels: np.ndarray | None
    shots: np.ndarray


def check_reference_size(n_reference: int, num_classes: int, settings: MetricSettings) -> None:
    """The k-NN metrics need more reference images than their k (the class-mode classifier, built for two classes or
    more, at least its k); adaptation checks this before it trains, so that a too-small reference set is found
    before the run, not at its evaluation."""
    if n_reference <= settings.nearest_k or (num_classes >= 2 and n_reference < settings.class_neighbours):
        raise BenchmarkError(
            f"The reference set has {n_reference} images; precision/recall/density/coverage need more than "
            f"evaluation.nearest_k = {settings.nearest_k}, and the class-mode classifier at least evaluation.class_neighbours "
            f"= {settings.class_neighbours}. Use a larger reference set (the task's reference_size) or smaller k."
        )


class MetricSuite:
    def __init__(self, sets: EvaluationSets, space: FeatureSpace, encoder_path: str, settings: MetricSettings, device: torch.device) -> None:
        started = time.perf_counter()
        self.settings, self.space = settings, space
        self.n_real = len(sets.reference)
        labelled = sets.reference_labels is not None and len(np.unique(sets.reference_labels)) >= 2
        check_reference_size(self.n_real, 2 if labelled else 1, settings)
        self.extract = FeatureExtractor(space, device)
        self.real = self.extract(sets.reference)
        self.real_statistics = fid_features_to_statistics(self.real)
        self.real_radii = kth_neighbour_distances(self.real, settings.nearest_k)
        bins = min(settings.ndb_bins, self.n_real // MIN_REFERENCE_PER_BIN)
        self.bins = FeatureBins(self.real, bins, settings.seed) if bins >= 2 else None
        labelled = sets.reference_labels is not None and len(np.unique(sets.reference_labels)) >= 2
        self.classifier = NeighbourClassifier(self.real, sets.reference_labels, settings.class_neighbours) if labelled else None
        self.heldout_features = self.extract(sets.heldout) if labelled else None
        self.heldout_labels = sets.heldout_labels
        self.perceptual = PerceptualEmbedding(encoder_path, device)
        self.shot_embeddings = self.perceptual(sets.shots)
        self.heldout_nearest = NearestShots.of(self.perceptual.chunks(sets.heldout), self.shot_embeddings)
        self.n_shots, self.n_heldout = len(sets.shots), len(sets.heldout)
        if self.bins is None:
            log.warning("NDB/JSD skipped: %d reference images give fewer than 2 bins of %d", self.n_real, MIN_REFERENCE_PER_BIN)
        if self.classifier is None:
            log.info("class-mode coverage skipped: the reference set has fewer than 2 class labels")
        log.info(
            "metric suite ready in %.1f s: %d reference, %d held-out, %d shots",
            time.perf_counter() - started,
            self.n_real,
            self.n_heldout,
            self.n_shots,
        )

    def score(self, fake_images: np.ndarray) -> list[dict[str, Any]]:
        """Every metric for one generated set; each record carries its sample sizes and feature space."""
        settings, n_fake = self.settings, len(fake_images)
        if n_fake <= settings.nearest_k or n_fake < 2:
            raise BenchmarkError(f"{n_fake} generated images are too few; evaluation.num_generated must exceed nearest_k = {settings.nearest_k}.")
        timings: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[name] = round(now - clock, 3)
            clock = now

        fake = self.extract(fake_images)
        lap("features")
        space = {"n_fake": n_fake, "n_real": self.n_real, **self.space.as_record()}
        subset_size = min(settings.kid_subset_size, n_fake, self.n_real)
        kid_value = kid(fake, self.real, subset_size, settings.kid_subsets, settings.seed)
        records: list[dict[str, Any]] = [
            {"metric": "kid", "value": kid_value["mean"], "kid_std_over_subsets": kid_value["std"], "kid_subset_size": subset_size, "kid_subsets": settings.kid_subsets, **space},
            {"metric": "fid", "value": frechet_distance(fake, self.real_statistics), **space},
        ]  # fmt: skip
        if settings.fid_infinity:
            extrapolation = fid_infinity(fake, self.real_statistics, settings.seed)
            records.append({"metric": "fid_inf", **extrapolation, **space})
        lap("fid_kid")
        neighbourhood = {"nearest_k": settings.nearest_k, **space}
        pr = precision_recall(fake, self.real, settings.nearest_k)
        dc = density_coverage(fake, self.real, settings.nearest_k, self.real_radii)
        records += [{"metric": name, "value": value, **neighbourhood} for name, value in {**pr, **dc}.items()]
        lap("prdc")
        if self.bins is not None:
            records += [{**record, **space} for record in ndb_jsd(fake, self.bins, settings.ndb_alpha)]
        if self.classifier is not None:
            modes = class_modes(fake, self.classifier, self.heldout_features, self.heldout_labels, settings.class_min_share_ratio)
            records += [{**record, **space} for record in modes]
        lap("modes")
        kept: list[torch.Tensor] = []  # the first diversity_samples embeddings; the rest only pass through

        def embeddings() -> Iterator[torch.Tensor]:
            for chunk in self.perceptual.chunks(fake_images):
                kept.append(chunk[: max(0, settings.diversity_samples - sum(len(k) for k in kept))])
                yield chunk

        nearest = NearestShots.of(embeddings(), self.shot_embeddings)
        perceptual = {"feature_space": self.perceptual.name, "feature_extractor": "encoder-lpips", "n_real": self.n_shots}
        diversity = intra_cluster_diversity(torch.cat(kept), nearest, self.n_shots, settings.diversity_cluster_size)
        records.append({"metric": "intra_cluster_lpips", **diversity, **perceptual, "n_fake": min(n_fake, settings.diversity_samples)})
        memorised = memorisation(nearest, self.heldout_nearest, self.n_shots, settings.memorisation_quantile, settings.nn_ratio_threshold)
        records += [{**record, **perceptual, "n_fake": n_fake} for record in memorised]
        lap("diversity_memorisation")
        log.info("scored %d generated images in %.1f s (%s)", n_fake, sum(timings.values()), timings)
        return records


class DistanceScorer:
    """KID and FID against one fixed real set (the validation split during training): features extracted once."""

    def __init__(self, real_images: np.ndarray, space: FeatureSpace, kid_subset_size: int, kid_subsets: int, seed: int, device: torch.device) -> None:
        self.extract = FeatureExtractor(space, device)
        self.real = self.extract(real_images)
        self.real_statistics = fid_features_to_statistics(self.real)
        self.kid_subset_size, self.kid_subsets, self.seed = kid_subset_size, kid_subsets, seed

    def __call__(self, fake_images: np.ndarray) -> dict[str, float]:
        fake = self.extract(fake_images)
        subset_size = min(self.kid_subset_size, len(fake), len(self.real))
        return {
            "kid": kid(fake, self.real, subset_size, self.kid_subsets, self.seed)["mean"],
            "fid": frechet_distance(fake, self.real_statistics),
        }
