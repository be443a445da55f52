"""Intra-cluster diversity in the manner of CDC (Ojha et al. 2021) and memorisation of the training shots.

Both work in the encoder-LPIPS embedding (see `perceptual`), against the K training shots of the run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from benchmark.metrics.perceptual import squared_distances


@dataclass(frozen=True)
class NearestShots:
    """Per sample: index of the nearest shot, squared distance to it and to the second nearest (inf when K = 1)."""

    index: torch.Tensor
    first: torch.Tensor
    second: torch.Tensor

    @classmethod
    def of(cls, embeddings: Iterable[torch.Tensor], shots: torch.Tensor) -> NearestShots:
        indices, first, second = [], [], []
        for chunk in embeddings:
            distances = squared_distances(chunk, shots)
            if distances.shape[1] == 1:
                distances = torch.cat([distances, torch.full_like(distances, float("inf"))], dim=1)
            values, order = distances.topk(2, dim=1, largest=False)
            indices.append(order[:, 0])
            first.append(values[:, 0])
            second.append(values[:, 1])
        return cls(torch.cat(indices), torch.cat(first), torch.cat(second))

    def __len__(self) -> int:
        return len(self.first)


def intra_cluster_diversity(fake: torch.Tensor, nearest: NearestShots, num_shots: int, max_per_cluster: int) -> dict[str, Any]:
    """Assign each generated sample to its nearest shot; mean pairwise distance among the first `max_per_cluster`
    members of each cluster; mean over clusters with at least two members. Collapse onto the shots gives ~0."""
    assignment = nearest.index[: len(fake)]
    per_cluster, sizes = [], np.bincount(assignment.numpy(), minlength=num_shots)
    for cluster in range(num_shots):
        members = fake[assignment == cluster][:max_per_cluster]
        if len(members) < 2:
            continue
        distances = squared_distances(members, members)
        upper = torch.triu_indices(len(members), len(members), offset=1)
        per_cluster.append(float(distances[upper[0], upper[1]].mean()))
    return {
        "value": float(np.mean(per_cluster)) if per_cluster else float("nan"),
        "clusters_scored": len(per_cluster),
        "cluster_sizes": sizes.tolist(),
        "max_per_cluster": max_per_cluster,
    }


THRESHOLD_RESAMPLES = 1000  # bootstrap resamples of the held-out set behind the memorisation threshold


def threshold_uncertainty(fake: torch.Tensor, heldout: torch.Tensor, calibration_quantile: float) -> dict[str, Any]:
    """How much the memorised share owes to the held-out images that set its threshold: the threshold recomputed on
    `THRESHOLD_RESAMPLES` bootstrap resamples of the held-out distances (a fixed seed: the same run gives the same
    interval), and the share of `fake` below each. 95% percentile intervals of both."""
    generator = torch.Generator().manual_seed(0)
    draws = torch.randint(0, len(heldout), (THRESHOLD_RESAMPLES, len(heldout)), generator=generator)
    thresholds = torch.quantile(heldout.double()[draws], calibration_quantile, dim=1)
    below = torch.searchsorted(torch.sort(fake.double()).values, thresholds, side="left")  # strictly below each threshold
    shares = below.double() / len(fake)
    bounds = torch.tensor([0.025, 0.975], dtype=torch.float64)
    return {
        "threshold_interval": torch.quantile(thresholds, bounds).tolist(),
        "value_interval_threshold": torch.quantile(shares, bounds).tolist(),
        "threshold_resamples": THRESHOLD_RESAMPLES,
    }


def memorisation(
    fake: NearestShots, heldout: NearestShots, num_shots: int, calibration_quantile: float, ratio_threshold: float
) -> list[dict[str, Any]]:
    """Two per-run memorisation scores, each with the same score of held-out real images beside it.

    - share of generated samples closer to their nearest shot than the `calibration_quantile` of held-out real
      images' nearest-shot distances (held-out real scores about the quantile; exact copies score 1), with the
      share's 95% interval over bootstrap resamples of the held-out set (`threshold_uncertainty`): the threshold
      is itself an estimate from a few hundred images;
    - share passing the nearest-neighbour ratio test d1 / d2 < `ratio_threshold` (Euclidean distances in the
      embedding): much closer to one shot than to any other. Needs K >= 2.
    """
    threshold = float(torch.quantile(heldout.first, calibration_quantile))
    records = [
        {
            "metric": "memorisation_share",
            "value": float((fake.first < threshold).double().mean()),
            "threshold": threshold,
            "calibration_quantile": calibration_quantile,
            "heldout_value": float((heldout.first < threshold).double().mean()),
            "n_heldout": len(heldout),
            **threshold_uncertainty(fake.first, heldout.first, calibration_quantile),
        }
    ]
    if num_shots >= 2:

        def ratio_share(nearest: NearestShots) -> float:
            return float((nearest.first.sqrt() < ratio_threshold * nearest.second.sqrt()).double().mean())

        records.append(
            {
                "metric": "nn_ratio_share",
                "value": ratio_share(fake),
                "ratio_threshold": ratio_threshold,
                "heldout_value": ratio_share(heldout),
                "n_heldout": len(heldout),
            }
        )
    return records
