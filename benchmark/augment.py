"""DiffAugment (Zhao, Liu, Lin, Zhu, Han, NeurIPS 2020): differentiable colour, translation and cutout.

The same random transformation family is applied to real and generated images before D, in the D step and in
the G step; every operation is differentiable with respect to the images, so G's gradient passes through.
Randomness comes from the training loop's checkpointed generator (drawn on the CPU), so a resumed run draws
the same augmentations. Images are in [-1, 1]; translation and cutout fill with 0, as the reference code does.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from benchmark.errors import BenchmarkError


def _uniform(shape: tuple[int, ...], rng: torch.Generator, images: torch.Tensor) -> torch.Tensor:
    return torch.rand(shape, generator=rng).to(device=images.device, dtype=images.dtype)


def colour(images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    n = images.shape[0]
    images = images + (_uniform((n, 1, 1, 1), rng, images) - 0.5)  # brightness
    mean = images.mean(dim=1, keepdim=True)
    images = (images - mean) * (_uniform((n, 1, 1, 1), rng, images) * 2) + mean  # saturation (no-op for 1 channel)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return (images - mean) * (_uniform((n, 1, 1, 1), rng, images) + 0.5) + mean  # contrast


def translation(images: torch.Tensor, rng: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    n, _, height, width = images.shape
    max_dy, max_dx = int(height * ratio + 0.5), int(width * ratio + 0.5)
    dy = torch.randint(-max_dy, max_dy + 1, (n, 1), generator=rng).to(images.device)
    dx = torch.randint(-max_dx, max_dx + 1, (n, 1), generator=rng).to(images.device)
    padded = F.pad(images, [max_dx, max_dx, max_dy, max_dy])
    rows = torch.arange(height, device=images.device)[None] + max_dy - dy  # (n, H)
    cols = torch.arange(width, device=images.device)[None] + max_dx - dx  # (n, W)
    batch = torch.arange(n, device=images.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def cutout(images: torch.Tensor, rng: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    n, _, height, width = images.shape
    cut_h, cut_w = int(height * ratio + 0.5), int(width * ratio + 0.5)
    cy = torch.randint(0, height + (1 - cut_h % 2), (n, 1, 1), generator=rng).to(images.device)
    cx = torch.randint(0, width + (1 - cut_w % 2), (n, 1, 1), generator=rng).to(images.device)
    rows = torch.arange(height, device=images.device)[None, :, None]
    cols = torch.arange(width, device=images.device)[None, None, :]
    top, left = cy - cut_h // 2, cx - cut_w // 2  # the square may reach over the border, as in the reference
    inside = (rows >= top) & (rows < top + cut_h) & (cols >= left) & (cols < left + cut_w)
    return images * (~inside).unsqueeze(1).to(images.dtype)


OPERATIONS = {"color": colour, "translation": translation, "cutout": cutout}


def diff_augment(images: torch.Tensor, policy: tuple[str, ...], rng: torch.Generator) -> torch.Tensor:
    for name in policy:
        if name not in OPERATIONS:
            raise BenchmarkError(f"DiffAugment operation '{name}' is unknown; use {sorted(OPERATIONS)}.")
        images = OPERATIONS[name](images, rng)
    return images.contiguous()
