import torch
from torch import nn

from benchmark.methods import AdaptationContext, Hyperparameter, Method
from benchmark.models import Architecture, Discriminator, GANModels, Generator


class Miner(nn.Module):
    """M: u -> z', two linear layers with a ReLU between, as wide as the latent (the shape of the official miners:
    Linear(512, 512)-ReLU-Linear(512, 512) for StyleGAN, Linear(L, L) last for the 28x28 MNIST code)."""

    def __init__(self, z_dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(z_dim, z_dim), nn.ReLU(), nn.Linear(z_dim, z_dim))

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.layers(noise)


class MinedGenerator(nn.Module):
    """G(M(u)): the pretrained generator fed by the miner. `z_dim` is the miner's input, so sampling, evaluation and
    the EMA treat it as any generator."""

    def __init__(self, miner: Miner, generator: Generator) -> None:
        super().__init__()
        self.miner = miner
        self.generator = generator
        self.z_dim = generator.z_dim

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.generator(self.miner(noise))


class MineGAN(Method):
    """The domain converter: a miner network M in front of the pretrained G steers sampling towards the regions of
    G's latent space whose images look like the target, G(M(u)), u ~ N(0, I) (Wang et al., CVPR 2020,
    single-source). Stage 1 (the first `miner_steps` steps) trains M and D with G's parameters frozen; stage 2
    trains M, G and D together, as the official code's second and third steps do. D starts from the source D and
    trains in both stages; the losses are the plain GAN losses (the paper adds no miner term).

    Adapted to this backbone: the miner's input is as wide as the latent, so G(M(u)) is sampled like any
    generator. M's weights start Glorot-uniform with zero biases, not as the identity (the official miners are not
    identity-initialised either): a variance-preserving start keeps M(u) near the scale of the latent G was trained
    on. While G is frozen its BatchNorm layers still normalise by the statistics of the mined latents they are fed
    (G trains in train mode, as every method's G does); what stays bit-identical is every parameter of G. G's Adam
    state starts when stage 2 does. `miner_steps` defaults to half of the default preset's 300-step budget: the
    official 28x28 code gives each stage an equal budget (10,000 iterations each).
    """

    name = "minegan"
    paper = "Wang, Gonzalez-Garcia, Berga, Herranz, Khan, van de Weijer, MineGAN: effective knowledge transfer from GANs to target domains with few images, CVPR 2020"
    requires = ("source_checkpoint",)
    hyperparameters = {
        "miner_steps": Hyperparameter(default=150, search=(25, 300), minimum=0, help="steps of stage 1 (miner and D only, G frozen)"),
    }

    def build_models(self, arch: Architecture) -> GANModels:
        return GANModels(arch, MinedGenerator(Miner(arch.z_dim), Generator(arch)), Discriminator(arch))

    def initialise(self, context: AdaptationContext) -> GANModels:
        source = context.source_models()
        torch.manual_seed(context.seed)
        miner = Miner(context.arch.z_dim)
        for layer in miner.layers:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        return GANModels(context.arch, MinedGenerator(miner.to(context.device), source.generator), source.discriminator)

    def begin_step(self, step: int, generator: MinedGenerator, discriminator: Discriminator) -> None:
        # Parameters without a gradient are skipped by Adam: G stays exactly as the source left it until stage 2.
        generator.generator.requires_grad_(step > self.hparams["miner_steps"])
