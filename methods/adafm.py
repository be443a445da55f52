import torch
from torch import nn
from torch.nn import functional as F

from benchmark.methods import AdaptationContext, Hyperparameter, Method
from benchmark.models import Architecture, Discriminator, GANModels, Generator, freeze_lowest_blocks


class ModulatedConvTranspose2d(nn.Module):
    """A transposed convolution whose kernel W (C_in x C_out x k x k, PyTorch's layout for transposed
    convolutions) is used as gamma * W + beta, gamma and beta one value per (input, output) channel pair,
    broadcast over the k x k taps (AdaFM). gamma = 1 and beta = 0 give W exactly."""

    def __init__(self, layer: nn.ConvTranspose2d) -> None:
        super().__init__()
        self.weight = nn.Parameter(layer.weight.detach().clone())
        self.bias = nn.Parameter(layer.bias.detach().clone())
        self.stride, self.padding = layer.stride, layer.padding
        pairs = (*self.weight.shape[:2], 1, 1)
        self.gamma = nn.Parameter(torch.ones(pairs))
        self.beta = nn.Parameter(torch.zeros(pairs))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(features, self.gamma * self.weight + self.beta, self.bias, stride=self.stride, padding=self.padding)


class ModulatedGenerator(Generator):
    """The backbone's G with the transposed convolutions of `modulated_blocks` modulated."""

    def __init__(self, arch: Architecture, modulated_blocks: tuple[int, ...]) -> None:
        super().__init__(arch)
        for index in modulated_blocks:
            self.blocks[index][0] = ModulatedConvTranspose2d(self.blocks[index][0])

    def modulations(self) -> list[ModulatedConvTranspose2d]:
        return [layer for layer in self.modules() if isinstance(layer, ModulatedConvTranspose2d)]


class AdaFM(Method):
    """Adaptive filter modulation (Zhao, Cong, Carin, ICML 2020): G's transferred convolution kernels are frozen and
    only a per-channel-pair scale gamma and shift beta of each kernel trains, W' = gamma * W + beta, from gamma = 1
    and beta = 0 (the source G, exactly).

    Exactly what trains in G: gamma and beta of block 1's transposed convolution (the backbone's hidden
    convolution), and, with `modulate_output: true`, of block 2's (the convolution to the image, which AdaFM's code
    leaves unmodulated, as its `conv_img`). Frozen: every other weight of G, i.e. block 0's linear projection of z
    and its BatchNorm scale and shift, block 1's kernel, bias and BatchNorm scale and shift, block 2's kernel and
    bias. (The paper replaces the part of G nearest z by a small network trained from scratch on thousands of
    images; with K shots it stays frozen here, so that only the modulation moves.) G's BatchNorm layers normalise
    by the target batches' statistics, as in any training. D starts from the source; its lowest `frozen_d_blocks`
    blocks are frozen (AdaFM's code freezes all but D's last block and head for its 25-image Flowers task, two of
    this D's three blocks; its larger tasks freeze fewer). D's head transfers: AdaFM re-initialises its D's head
    only because its ImageNet D is class-conditional. AdaFM keeps gamma and beta frozen for the first 10,000
    iterations while that new part of G trains; with nothing else of G training here, there is no such delay.
    """

    name = "adafm"
    paper = "Zhao, Cong, Carin, On Leveraging Pretrained GANs for Generation with Limited Data, ICML 2020"
    requires = ("source_checkpoint",)
    hyperparameters = {
        "modulate_output": Hyperparameter(default=False, search=(False, True), help="also modulate the convolution to the image"),
        "frozen_d_blocks": Hyperparameter(default=2, search=(0, 2), help="lowest D blocks frozen"),
    }

    def modulated_blocks(self) -> tuple[int, ...]:
        return (1, 2) if self.hparams["modulate_output"] else (1,)

    def build_models(self, arch: Architecture) -> GANModels:
        return GANModels(arch, ModulatedGenerator(arch, self.modulated_blocks()), Discriminator(arch))

    def initialise(self, context: AdaptationContext) -> GANModels:
        source = context.source_models()
        generator = ModulatedGenerator(context.arch, self.modulated_blocks())
        # Every tensor but gamma and beta (which start at 1 and 0) comes from the source.
        missing, unexpected = generator.load_state_dict(source.generator.state_dict(), strict=False)
        assert not unexpected and all(key.endswith((".gamma", ".beta")) for key in missing), (missing, unexpected)
        return GANModels(context.arch, generator.to(context.device), source.discriminator)

    def trainable_parameters(self, generator: ModulatedGenerator, discriminator: Discriminator) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        generator.requires_grad_(False)
        modulation = [p for layer in generator.modulations() for p in (layer.gamma, layer.beta)]
        for parameter in modulation:
            parameter.requires_grad_(True)
        return modulation, freeze_lowest_blocks(discriminator, self.hparams["frozen_d_blocks"], "adafm: frozen_d_blocks")
