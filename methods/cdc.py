import copy

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from benchmark.methods import AdaptationContext, Hyperparameter, Method
from benchmark.models import Architecture, Discriminator, GANModels, Generator, init_weights
from benchmark.training import StepBatch


class PatchDiscriminator(Discriminator):
    """The backbone's D with a patch-level head: a 1x1 convolution on block 1's output (the 7x7 grid of a 28 px
    image), one logit per cell, each seeing a 10x10-pixel patch. `patch_level` picks which output D gives.

    Why block 1: block 0's cells see 4x4 pixels, too little to judge a stroke or a garment's part, and block 2 is
    the image-level head. CDC's patch head (a 3x3 convolution on a 32x32 map of a 256 px image) likewise judges
    patches well below image size; a 3x3 head here would see 18 of 28 pixels, nearly the whole image, so the head
    is 1x1."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__(arch)
        norm = nn.utils.parametrizations.spectral_norm if arch.discriminator_spectral_norm else (lambda layer: layer)
        self.patch_head = norm(nn.Conv2d(2 * arch.width, 1, 1))
        self.patch_level = False  # set per step by the method; not state (it follows from the step)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.blocks[1](self.blocks[0](images))
        if self.patch_level:
            return self.patch_head(features).flatten(1)  # N x 49 logits; the losses average over them
        return self.blocks[2](features).squeeze(1)


def block_features(generator: Generator, z: torch.Tensor) -> list[torch.Tensor]:
    """The outputs of G's blocks before the image (7x7 and 14x14 maps), each flattened per sample. BatchNorm runs in
    G's mode on copies of its running statistics: G's own stay as they are, and are not changed in place under an
    autograd graph that saved them."""
    features = []
    for block in generator.blocks[:-1]:
        state = {**dict(block.named_parameters()), **{name: buffer.clone() for name, buffer in block.named_buffers()}}
        z = functional_call(block, state, (z,))
        features.append(z.flatten(1))
    return features


def similarity_logits(features: list[torch.Tensor], layers: torch.Tensor) -> torch.Tensor:
    """Row i: the cosine similarities of sample i to every other sample (N x N-1), on the features of block
    `layers[i]`."""
    count = len(layers)
    rows = []
    for i in range(count):
        flat = features[int(layers[i])]
        others = torch.cat([flat[:i], flat[i + 1 :]])
        rows.append(F.cosine_similarity(flat[i : i + 1], others, dim=1))
    return torch.stack(rows)


def distance_consistency(adapted: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """KL(p_source || p_adapted) of the row-wise softmaxes of the similarity logits, averaged over all N(N-1)
    entries: CDC's code (`nn.KLDivLoss()` of log p_adapted against p_source, the default mean reduction)."""
    log_source = F.log_softmax(source, dim=1)
    return (log_source.exp() * (log_source - F.log_softmax(adapted, dim=1))).mean()


class CDC(Method):
    """Cross-domain correspondence (Ojha et al., CVPR 2021): fine-tune from the source, with two additions that keep
    the adapted G from collapsing onto the K shots.

    Distance consistency, on G's update: for a fresh batch of `consistency_batch` latents, each sample's softmax
    over its cosine similarities to the others, on intermediate G features, must match between the frozen source G
    and the adapted G: `kl_weight` * KL(p_source || p_adapted), averaged over the N(N-1) entries as the official
    code does. As in the code, each row draws its own feature layer (here block 0's 7x7 or block 1's 14x14 output,
    the backbone's two maps before the image), the source side carries no gradient, and both Gs run in train mode
    (the same BatchNorm mode); neither extra pass changes a running statistic of either.

    Relaxed realism: on every `anchor_every`-th step (the first included) both updates draw their latents near
    `anchors` anchor points fixed at the start (an anchor plus N(0, anchor_std^2) noise) and D judges whole images;
    on the other steps the latents are the usual N(0, I) and D judges patches (`PatchDiscriminator`). The patch
    head starts from the DCGAN initialisation; D's other weights and G start from the source.

    Defaults are the official code's: kl_weight 1000, 4 latents, anchors every 4th step, anchor noise 0.1, 10
    anchors (its number of training images). Its R1 and path-length terms are StyleGAN2's, not CDC's, and this
    backbone uses neither.
    """

    name = "cdc"
    paper = "Ojha, Li, Lu, Efros, Lee, Shechtman, Zhang, Few-shot Image Generation via Cross-domain Correspondence, CVPR 2021"
    requires = ("source_checkpoint",)
    hyperparameters = {
        "kl_weight": Hyperparameter(default=1e3, search=(1e1, 1e4), log_scale=True, help="weight of the distance-consistency loss"),
        "consistency_batch": Hyperparameter(default=4, search=(3, 16), minimum=3, help="latents per consistency batch (3 or more)"),
        "anchor_every": Hyperparameter(default=4, search=(2, 8), minimum=1, help="every n-th step samples anchors and D judges images"),
        "anchor_std": Hyperparameter(default=0.1, search=(0.01, 0.5), log_scale=True, help="spread of latents around an anchor"),
        "anchors": Hyperparameter(default=10, search=(1, 50), log_scale=True, minimum=1, help="anchor points in latent space"),
    }

    def build_models(self, arch: Architecture) -> GANModels:
        return GANModels(arch, Generator(arch), PatchDiscriminator(arch))

    def initialise(self, context: AdaptationContext) -> GANModels:
        source = context.source_models()
        torch.manual_seed(context.seed)
        discriminator = PatchDiscriminator(context.arch)
        init_weights(discriminator.patch_head)
        missing, unexpected = discriminator.load_state_dict(source.discriminator.state_dict(), strict=False)
        assert not unexpected and all(key.startswith("patch_head.") for key in missing), (missing, unexpected)
        self.source_generator = copy.deepcopy(source.generator).requires_grad_(False)
        # The anchors have their own seeded generator, apart from the run's sampler: they are drawn once.
        anchor_rng = torch.Generator().manual_seed(context.seed + 0xCDC)
        self.anchor_points = torch.randn(self.hparams["anchors"], context.arch.z_dim, generator=anchor_rng)  # on the CPU, as the loop's noise
        return GANModels(context.arch, source.generator, discriminator.to(context.device))

    def anchored(self, step: int) -> bool:
        return (step - 1) % self.hparams["anchor_every"] == 0

    def begin_step(self, step: int, generator: Generator, discriminator: PatchDiscriminator) -> None:
        discriminator.patch_level = not self.anchored(step)

    def sample_noise(self, update: str, step: int, count: int, z_dim: int, rng: torch.Generator) -> torch.Tensor:
        if not self.anchored(step):
            return torch.randn(count, z_dim, generator=rng)
        chosen = torch.randint(len(self.anchor_points), (count,), generator=rng)
        return self.anchor_points[chosen] + self.hparams["anchor_std"] * torch.randn(count, z_dim, generator=rng)

    def step_losses(self, update: str, batch: StepBatch, generator: Generator, discriminator: Discriminator) -> dict[str, torch.Tensor]:
        if update != "g":
            return {}
        return {"distance_consistency": self.hparams["kl_weight"] * self.consistency_loss(generator, batch.rng)}

    def consistency_loss(self, generator: Generator, rng: torch.Generator) -> torch.Tensor:
        count = self.hparams["consistency_batch"]
        device = next(generator.parameters()).device
        z = torch.randn(count, generator.z_dim, generator=rng).to(device)
        layers = torch.randint(len(generator.blocks) - 1, (count,), generator=rng)
        self.source_generator.train(generator.training)
        with torch.no_grad():
            source = similarity_logits(block_features(self.source_generator, z), layers)
        adapted = similarity_logits(block_features(generator, z), layers)
        return distance_consistency(adapted, source)
