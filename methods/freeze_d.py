from torch import nn

from benchmark.errors import BenchmarkError
from benchmark.methods import AdaptationContext, Hyperparameter, Method
from benchmark.models import Discriminator, GANModels, Generator


class FreezeD(Method):
    """Fine-tune from the source, with the lowest N blocks of D (its feature extractor) frozen.

    Blocks are addressed by index (`discriminator.blocks[:N]`), never by a name substring. Frozen blocks are
    also put in eval mode, so that spectral norm's power iteration does not move their effective weights.
    """

    name = "freeze_d"
    paper = "Mo, Cho, Shin, Freeze the Discriminator: a Simple Baseline for Fine-Tuning GANs, CVPR-W 2020"
    requires = ("source_checkpoint",)
    hyperparameters = {"frozen_blocks": Hyperparameter(default=1, search=(1, 2), help="lowest D blocks to freeze")}

    def initialise(self, context: AdaptationContext) -> GANModels:
        return context.source_models()

    def trainable_parameters(self, generator: Generator, discriminator: Discriminator) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        frozen = self.hparams["frozen_blocks"]
        if not 0 <= frozen < len(discriminator.blocks):
            raise BenchmarkError(f"freeze_d: frozen_blocks = {frozen}, but D has {len(discriminator.blocks)} blocks; at least the last must train.")
        for block in discriminator.blocks[:frozen]:
            block.requires_grad_(False).eval()
        trainable_d = [p for block in discriminator.blocks[frozen:] for p in block.parameters()]
        return list(generator.parameters()), trainable_d
