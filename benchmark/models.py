"""The one shared backbone: a DCGAN-style generator and discriminator with named, indexed blocks.

`generator.blocks[i]` and `discriminator.blocks[i]` are the addressable units: a method can say "the lowest N
blocks of D" and mean `discriminator.blocks[:N]` by index, never by a name substring (`blocks.1` must not catch
`blocks.10`). Parameters live in plain modules with no hooks, so `torch.func.functional_call` and vmap over
stacked parameters work on them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from benchmark.config import complete
from benchmark.errors import BenchmarkError


@dataclass(frozen=True)
class Architecture:
    """The backbone's shape. Defaults live in the config schema (`architecture`): build it with `from_config`."""

    config_section: ClassVar[str] = "architecture"

    image_size: int  # of the prepared dataset (config `image_size`)
    channels: int
    z_dim: int
    width: int  # channels of the widest-resolution block; the next block has twice as many
    generator_norm: str  # "batch" or "none"
    # Spectral norm (Miyato et al. 2018) on every D layer: without it, D overpowers G on Omniglot's sparse
    # strokes within a few hundred steps. The parametrization API keeps the module functional-friendly.
    discriminator_spectral_norm: bool

    def __post_init__(self) -> None:
        if self.image_size % 4:
            raise BenchmarkError(f"image_size {self.image_size} is not divisible by 4; the backbone upsamples twice by 2.")
        # The schema's constraints also hold when built by hand (or from a stored dict).
        complete("architecture", {key: value for key, value in asdict(self).items() if key not in ("image_size", "channels")})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Architecture:
        """From a stored `to_dict()` (a checkpoint's or a run's record): every field present."""
        return cls(**values)

    @classmethod
    def from_config(cls, settings: dict[str, Any], image_size: int, channels: int) -> Architecture:
        """From the config's `architecture` section (missing keys take the schema's defaults)."""
        return cls(image_size=image_size, channels=channels, **complete("architecture", settings))

    @classmethod
    def for_dataset(cls, metadata: dict[str, Any], settings: dict[str, Any]) -> Architecture:
        """The backbone for a prepared dataset's images (its metadata gives their size and channels)."""
        return cls.from_config(settings, metadata["image_size"], metadata["channels"])


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.Identity()


class Generator(nn.Module):
    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        base = arch.image_size // 4
        wide = 2 * arch.width
        self.z_dim = arch.z_dim
        self.blocks = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Linear(arch.z_dim, wide * base * base),
                    nn.Unflatten(1, (wide, base, base)),
                    _norm(arch.generator_norm, wide),
                    nn.ReLU(),
                ),
                nn.Sequential(
                    nn.ConvTranspose2d(wide, arch.width, 4, stride=2, padding=1),
                    _norm(arch.generator_norm, arch.width),
                    nn.ReLU(),
                ),
                nn.Sequential(nn.ConvTranspose2d(arch.width, arch.channels, 4, stride=2, padding=1), nn.Tanh()),
            ]
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            z = block(z)
        return z


class Discriminator(nn.Module):
    """No batch statistics: per-sample outputs, and no running statistics for meta-learning to corrupt."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        base = arch.image_size // 4
        wide = 2 * arch.width
        norm = nn.utils.parametrizations.spectral_norm if arch.discriminator_spectral_norm else (lambda layer: layer)
        self.blocks = nn.ModuleList(
            [
                nn.Sequential(norm(nn.Conv2d(arch.channels, arch.width, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)),
                nn.Sequential(norm(nn.Conv2d(arch.width, wide, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)),
                nn.Sequential(nn.Flatten(), norm(nn.Linear(wide * base * base, 1))),
            ]
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            images = block(images)
        return images.squeeze(1)


def non_finite_tensors(module: nn.Module) -> list[str]:
    """Names of the module's floating-point parameters and buffers that hold NaN or infinity."""
    return [name for name, tensor in module.state_dict().items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation (Radford et al. 2016): N(0, 0.02) weights, BatchNorm scale N(1, 0.02)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            with torch.no_grad():  # under spectral norm, `weight` is computed: initialise the stored original
                weight = layer.parametrizations.weight.original if hasattr(layer, "parametrizations") else layer.weight
                weight.normal_(0.0, 0.02)
            nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)


@dataclass
class GANModels:
    arch: Architecture
    generator: Generator
    discriminator: Discriminator

    @classmethod
    def fresh(cls, arch: Architecture, seed: int, device: torch.device | str = "cpu") -> GANModels:
        torch.manual_seed(seed)
        generator, discriminator = Generator(arch), Discriminator(arch)
        init_weights(generator)
        init_weights(discriminator)
        return cls(arch, generator.to(device), discriminator.to(device))


@contextlib.contextmanager
def preserved_buffers(*modules: nn.Module) -> Iterator[None]:
    """Restore every buffer on exit: forward passes in train mode update BatchNorm statistics and spectral-norm
    vectors in place. Used where a pass must not change a model: learn2learn's clones share buffers with the
    meta-model, so MAML's inner loops run inside it."""
    saved = [[buffer.detach().clone() for buffer in module.buffers()] for module in modules]
    try:
        yield
    finally:
        with torch.no_grad():
            for module, buffers in zip(modules, saved):
                for buffer, value in zip(module.buffers(), buffers):
                    buffer.copy_(value)
