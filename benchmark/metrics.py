"""Fidelity metrics through torch-fidelity, on the domain encoder or, when configured, Inception-v3.

Every record carries n_real and n_fake, the feature space's name and its weights' hash: a number without them
cannot be compared with another.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch_fidelity
from torch.utils.data import Dataset
from torch_fidelity.defaults import DEFAULTS

from benchmark.encoder import EXTRACTOR_NAME, encoder_identity, register_extractor
from benchmark.errors import BenchmarkError
from benchmark.hashing import sha256_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureSpace:
    extractor: str  # torch-fidelity registry name
    weights_path: str
    name: str  # what tables print, e.g. "domain encoder 1a2b3c4d"
    weights_sha256: str
    rgb_input: bool  # Inception takes 3-channel uint8 only

    def as_record(self) -> dict[str, str]:
        return {"feature_space": self.name, "feature_extractor": self.extractor, "feature_weights_sha256": self.weights_sha256}


def feature_space(encoder_path: str | Path, inception_weights: str | Path | None = None) -> FeatureSpace:
    """The domain encoder, or torch-fidelity's Inception-v3 when the user points at a local weights file."""
    if inception_weights:
        path = Path(inception_weights).expanduser()
        if not path.is_file():
            raise BenchmarkError(
                f"evaluation.inception_weights names {path}, which does not exist. Put torch-fidelity's "
                "weights-inception-2015-12-05 file there, or set the key to null to use the domain encoder."
            )
        digest = sha256_file(path)
        return FeatureSpace("inception-v3-compat", str(path), f"Inception-v3 {digest[:8]}", digest, rgb_input=True)
    register_extractor()
    identity = encoder_identity(encoder_path)
    return FeatureSpace(EXTRACTOR_NAME, str(encoder_path), identity["name"], identity["weights_sha256"], rgb_input=False)


class ImageArray(Dataset):
    """uint8 N x C x H x W array as the tensor-only Dataset torch-fidelity expects."""

    def __init__(self, images: np.ndarray, rgb: bool) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.rgb = rgb

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = self.images[index]
        return image.expand(3, -1, -1) if self.rgb and image.shape[0] == 1 else image


def fidelity_metrics(
    generated: np.ndarray,
    reference: np.ndarray,
    space: FeatureSpace,
    kid_subset_size: int,
    kid_subsets: int,
    seed: int,
    device: torch.device,
) -> list[dict[str, Any]]:
    n_fake, n_real = len(generated), len(reference)
    if min(n_fake, n_real) < 2:
        raise BenchmarkError(f"FID/KID need at least 2 images per side; got {n_fake} generated and {n_real} real.")
    subset_size = min(kid_subset_size, n_fake, n_real)
    kwargs = {
        "input1": ImageArray(generated, space.rgb_input),
        "input2": ImageArray(reference, space.rgb_input),
        "cuda": device.type == "cuda",
        "fid": True,
        "kid": True,
        "feature_extractor": space.extractor,
        "feature_extractor_weights_path": space.weights_path,
        "kid_subset_size": subset_size,
        "kid_subsets": kid_subsets,
        "rng_seed": seed,
        "batch_size": 500,
        "cache": False,  # its cache is keyed by name only: stale statistics are worse than recomputation
        "save_cpu_ram": True,  # no DataLoader worker processes for in-memory arrays
        "verbose": False,
    }
    unknown = set(kwargs) - set(DEFAULTS)
    assert not unknown, f"torch-fidelity ignores misspelled arguments silently: {unknown}"
    result = torch_fidelity.calculate_metrics(**kwargs)
    common = {"n_fake": n_fake, "n_real": n_real, **space.as_record()}
    return [
        {"metric": "fid", "value": float(result["frechet_inception_distance"]), **common},
        {
            "metric": "kid",
            "value": float(result["kernel_inception_distance_mean"]),
            "kid_std_over_subsets": float(result["kernel_inception_distance_std"]),
            "kid_subset_size": subset_size,
            "kid_subsets": kid_subsets,
            **common,
        },
    ]
