from torch import nn

from benchmark.methods import AdaptationContext, Hyperparameter, Method
from benchmark.models import Discriminator, GANModels, Generator, freeze_lowest_blocks


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
        return list(generator.parameters()), freeze_lowest_blocks(discriminator, self.hparams["frozen_blocks"], "freeze_d: frozen_blocks")
