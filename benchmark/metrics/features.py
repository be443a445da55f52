"""Feature spaces: the domain encoder, or torch-fidelity's Inception-v3 when the user has its weights file.

Features are extracted once per image set, by torch-fidelity's own extraction code, and every metric of a run is
computed from those same tensors. A feature space carries its name and its weights' hash: a number without them
cannot be compared with another.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from benchmark.encoder import EXTRACTOR_NAME, FEATURE_LAYER, encoder_identity, register_extractor
from benchmark.errors import BenchmarkError
from benchmark.hashing import sha256_file

INCEPTION_EXTRACTOR = "inception-v3-compat"
INCEPTION_LAYER = "2048"  # the pool features FID and KID are defined on


@dataclass(frozen=True)
class FeatureSpace:
    extractor: str  # torch-fidelity registry name
    weights_path: str
    name: str  # what tables print, e.g. "domain encoder 1a2b3c4d"
    weights_sha256: str
    rgb_input: bool  # Inception takes 3-channel uint8 only
    layer: str

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
        return FeatureSpace(INCEPTION_EXTRACTOR, str(path), f"Inception-v3 {digest[:8]}", digest, True, INCEPTION_LAYER)
    register_extractor()
    identity = encoder_identity(encoder_path)
    return FeatureSpace(EXTRACTOR_NAME, str(encoder_path), identity["name"], identity["weights_sha256"], False, FEATURE_LAYER)


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


def batch_size_for(device: torch.device) -> int:
    """Small batches on a CPU keep activations in cache (measured: 100 images per batch ran 2.3x faster than
    500 through the domain encoder on 2 cores); a GPU wants large ones."""
    return 500 if device.type == "cuda" else 100


class FeatureExtractor:
    """One feature space's extractor, built once (eval mode, no grad) and applied to any number of image sets."""

    def __init__(self, space: FeatureSpace, device: torch.device) -> None:
        self.space = space
        self.cuda = device.type == "cuda"
        self.batch_size = batch_size_for(device)
        self.extractor = create_feature_extractor(
            space.extractor, [space.layer], cuda=self.cuda, feature_extractor_weights_path=space.weights_path, verbose=False
        )

    def __call__(self, images: np.ndarray) -> torch.Tensor:
        """float64 N x D features on the CPU (float64 so that every metric downstream is computed at one precision)."""
        if len(images) == 0:
            raise BenchmarkError("Cannot extract features of an empty image set.")
        features = get_featuresdict_from_dataset(
            ImageArray(images, self.space.rgb_input), self.extractor, self.batch_size, self.cuda, save_cpu_ram=True, verbose=False
        )
        return features[self.space.layer].double()
