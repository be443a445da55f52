from benchmark.methods import AdaptationContext, Method
from benchmark.models import GANModels


class Finetune(Method):
    """TransferGAN: start G and D from the source-trained weights and train everything on the target."""

    name = "finetune"
    paper = "Wang et al., Transferring GANs: generating images from limited data, ECCV 2018"
    requires = ("source_checkpoint",)

    def initialise(self, context: AdaptationContext) -> GANModels:
        return context.source_models()
