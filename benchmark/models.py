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


def freeze_lowest_blocks(discriminator: Discriminator, frozen: int, setting: str) -> list[nn.Parameter]:
    """Freeze D's lowest `frozen` blocks (by index) and put them in eval mode, so that spectral norm's power
        iteration does not move their effective weights; returns the parameters of the blocks that train. `setting`
    names the hyperparameter in the error for a count D does not have."""
    if not 0 <= frozen < len(discriminator.blocks):
        raise BenchmarkError(f"{setting} = {frozen}, but D has {len(discriminator.blocks)} blocks; at least the last must train.")
    for block in discriminator.blocks[:frozen]:
        block.requires_grad_(False).eval()
    return [p for block in discriminator.blocks[frozen:] for p in block.parameters()]


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


def batchnorm_layers(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [layer for layer in module.modules() if isinstance(layer, nn.modules.batchnorm._BatchNorm)]


@contextlib.contextmanager
def preserved_batchnorm_statistics(*modules: nn.Module) -> Iterator[None]:
    """Restore the BatchNorm running statistics on exit: forward passes in train mode update them in place. Used
    where a pass must not change a model's statistics: learn2learn's clones share buffers with the meta-model, so
    MAML's inner loops run inside it.

    Spectral-norm power-iteration vectors are deliberately not restored: they are a warm start for estimating the
    largest singular value of weights that change slowly, so they carry over between inner steps and tasks as they
    do between the steps of ordinary training (restoring them would reset them to their initial values for
    every task, and one power iteration per step could then never catch up with the meta-weights)."""
    saved = [[(layer, {name: buffer.detach().clone() for name, buffer in layer.named_buffers()}) for layer in batchnorm_layers(m)] for m in modules]
    try:
        yield
    finally:
        with torch.no_grad():
            for layers in saved:
                for layer, buffers in layers:
                    for name, buffer in layer.named_buffers():
                        buffer.copy_(buffers[name])


@torch.no_grad()
def carry_power_iteration_vectors(meta: nn.Module, adapted: nn.Module) -> None:
    """Copy the spectral-norm power-iteration vectors (every buffer that is not a BatchNorm statistic) of an
    adapted copy back into the module it was copied from, so that the next copy starts from up-to-date vectors."""
    statistics = {id(buffer) for layer in batchnorm_layers(meta) for buffer in layer.buffers()}
    for (name, buffer), (adapted_name, adapted_buffer) in zip(meta.named_buffers(), adapted.named_buffers(), strict=True):
        if id(buffer) not in statistics:
            assert name == adapted_name, (name, adapted_name)
            buffer.copy_(adapted_buffer)


@torch.no_grad()
def recalibrate_batchnorm(generator: Generator, batches: int, batch_size: int, seed: int) -> int:
    """Re-estimate G's BatchNorm running statistics from its own samples: reset them and take the cumulative
    average of the batch statistics of `batches` batches of fresh noise, in train mode. Needed wherever G's weights
    are not the ones its statistics were tracked for (an EMA of weights; meta-parameters after inner loops).
    Noise comes from its own seeded generator, so the result depends only on the weights, `seed` and the counts.
    Returns the number of BatchNorm layers recalibrated (0: nothing to do)."""
    layers = batchnorm_layers(generator)
    if not layers:
        return 0
    was_training = generator.training
    generator.train()
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative moving average: an equal-weight mean over the batches
    noise = torch.Generator().manual_seed(seed)
    device = next(generator.parameters()).device
    for _ in range(batches):
        generator(torch.randn(batch_size, generator.z_dim, generator=noise).to(device))
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    generator.train(was_training)
    return len(layers)
