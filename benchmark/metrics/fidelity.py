"""Fidelity and coverage on features: FID, KID, precision/recall (torch-fidelity's own code), density and
coverage (Naeem et al. 2020, written here; the tests check them against the `prdc` package), and FID_inf.

Every function takes float64 N x D feature tensors: generated first, real second (torch-fidelity's order).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric

from benchmark.errors import BenchmarkError

DISTANCE_CHUNK = 2048  # rows of a pairwise-distance matrix computed at once (memory: chunk x N x 8 bytes)


def frechet_distance(fake: torch.Tensor, real_statistics: dict[str, np.ndarray]) -> float:
    statistics = fid_features_to_statistics(fake)
    return float(fid_statistics_to_metric(statistics, real_statistics, verbose=False)["frechet_inception_distance"])


def kid(fake: torch.Tensor, real: torch.Tensor, subset_size: int, subsets: int, seed: int) -> dict[str, float]:
    """Unbiased MMD^2 with the cubic polynomial kernel, averaged over `subsets` random subsets of each side."""
    result = kid_features_to_metric(fake, real, kid_subset_size=subset_size, kid_subsets=subsets, rng_seed=seed, verbose=False)
    return {"mean": result["kernel_inception_distance_mean"], "std": result["kernel_inception_distance_std"]}


def precision_recall(fake: torch.Tensor, real: torch.Tensor, nearest_k: int) -> dict[str, float]:
    """Kynkaanniemi et al. 2019: k-NN balls of each side, as torch-fidelity computes them."""
    result = prc_features_to_metric(fake, real, prc_neighborhood=nearest_k, prc_batch_size=DISTANCE_CHUNK, save_cpu_ram=True, verbose=False)
    return {"precision": float(result["precision"]), "recall": float(result["recall"])}


def kth_neighbour_distances(features: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each point to its k-th nearest other point (the point itself, at distance 0, is excluded)."""
    return torch.cat([torch.cdist(chunk, features).kthvalue(k + 1, dim=1).values for chunk in features.split(DISTANCE_CHUNK)])


def density_coverage(fake: torch.Tensor, real: torch.Tensor, nearest_k: int, real_radii: torch.Tensor | None = None) -> dict[str, float]:
    """Density: mean number of real k-NN balls that contain a generated sample, divided by k (1 for matching
    distributions, above 1 when samples crowd dense real regions). Coverage: share of real samples whose ball
    contains at least one generated sample. Strict inequalities, as in the paper."""
    radii = kth_neighbour_distances(real, nearest_k) if real_radii is None else real_radii
    inside_counts = torch.zeros(len(fake), dtype=torch.float64)
    covered = torch.zeros(len(real), dtype=torch.bool)
    for start in range(0, len(fake), DISTANCE_CHUNK):
        inside = torch.cdist(fake[start : start + DISTANCE_CHUNK], real) < radii  # chunk x n_real
        inside_counts[start : start + DISTANCE_CHUNK] = inside.sum(dim=1).double()
        covered |= inside.any(dim=0)
    return {"density": float(inside_counts.mean() / nearest_k), "coverage": float(covered.double().mean())}


def fid_infinity(fake: torch.Tensor, real_statistics: dict[str, np.ndarray], seed: int, points: int = 15) -> dict[str, Any]:
    """Chong & Forsyth 2020: FID of generated subsets of `points` sizes from N/5 to N, fitted linearly against
    1/N; the intercept extrapolates to infinitely many generated samples (it removes the generated side's bias,
    not the reference side's)."""
    n_fake = len(fake)
    sizes = np.unique(np.linspace(max(2, n_fake // 5), n_fake, points).round().astype(int))
    if len(sizes) < 3:
        raise BenchmarkError(f"FID_inf needs at least 3 distinct sample sizes; {n_fake} generated images give {len(sizes)}.")
    rng = np.random.default_rng(seed)
    values = [frechet_distance(fake[np.sort(rng.choice(n_fake, size, replace=False))], real_statistics) for size in sizes]
    slope, intercept = np.polyfit(1.0 / sizes, values, deg=1)
    return {"value": float(intercept), "slope": float(slope), "sample_sizes": sizes.tolist(), "fid_values": values}
