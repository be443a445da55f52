"""An LPIPS-style perceptual distance on the domain encoder's own convolutional layers, which works offline.

LPIPS (Zhang et al. 2018) compares channel-normalised activations of a pretrained network: at every spatial
position the activation vector is scaled to unit length, squared differences are summed over channels, averaged
over positions, then (with learned per-channel weights) summed over layers. The usual trunks (AlexNet, VGG) must
be downloaded, so this benchmark uses its domain encoder's two conv blocks with uniform weights and averages over
layers. It is named "encoder-LPIPS" and is comparable only within one encoder.

Implementation: each layer's normalised activations are scaled by sqrt(1 / (layers * H * W)) and concatenated,
so the distance between two images is the squared Euclidean distance of their embeddings.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from benchmark.encoder import load_encoder, to_unit_range
from benchmark.hashing import sha256_file
from benchmark.metrics.features import batch_size_for

EPSILON = 1e-10  # as in LPIPS: all-zero activation vectors (dead ReLUs) stay zero instead of dividing by zero


class PerceptualEmbedding:
    def __init__(self, encoder_path: str, device: torch.device) -> None:
        encoder, _ = load_encoder(encoder_path)
        self.device = device
        self.batch_size = batch_size_for(device)
        self.channels = encoder.channels
        # The activations after each ReLU of the conv trunk (before pooling).
        self.layers = nn.ModuleList()
        current: list[nn.Module] = []
        for module in encoder.trunk:
            if isinstance(module, nn.Flatten):
                break
            current.append(module)
            if isinstance(module, nn.ReLU):
                self.layers.append(nn.Sequential(*current))
                current = []
        self.layers.to(device).eval().requires_grad_(False)
        self.name = f"encoder-LPIPS (domain encoder {sha256_file(encoder_path)[:8]})"

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> torch.Tensor:
        """float32 N x E embeddings on the CPU; distance(a, b) = ||e_a - e_b||^2."""
        return torch.cat(list(self.chunks(images)))

    @torch.no_grad()
    def chunks(self, images: np.ndarray) -> Iterator[torch.Tensor]:
        """The embeddings `batch_size` images at a time, for callers that need not hold all of them."""
        for start in range(0, len(images), self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + self.batch_size])).to(self.device)
            if x.shape[1] == 3 and self.channels == 1:
                x = x.float().mean(1, keepdim=True).round().to(torch.uint8)
            x = to_unit_range(x)
            parts = []
            for layer in self.layers:
                x = layer(x)
                weight = (len(self.layers) * x.shape[2] * x.shape[3]) ** -0.5
                parts.append((x * (weight / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + EPSILON))).flatten(1))
            yield torch.cat(parts, dim=1).cpu()


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise perceptual distances between two embedding sets, float64 (clamped at 0 against rounding).

    The dot products run in float32: converting every embedding to float64 would triple the metric suite's
    time. Embeddings have norm at most 1, so the absolute error stays below about 1e-5.
    """
    cross = (a @ b.T).double()
    return (a.pow(2).sum(1, keepdim=True).double() + b.pow(2).sum(1).double() - 2.0 * cross).clamp_min(0.0)
