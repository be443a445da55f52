import torch

from benchmark.methods import AdaptationContext, Hyperparameter, Method
from benchmark.models import Discriminator, GANModels, Generator
from benchmark.regularisers import FORMS, anchored_penalty, snapshot


class L2SP(Method):
    """Fine-tune from the source with lambda * ||theta_G - theta_G^s||^2 + mu * ||theta_D - theta_D^s||^2.

    `form` picks the reduction: "sum" (textbook) or "mean_per_tensor" (FreezeD's code); each run records it
    among its hyperparameters. With lambda = mu = 0 no penalty term is built: the run equals `finetune`.
    """

    name = "l2sp"
    paper = "Li, Grandvalet, Davoine, Explicit Inductive Bias for Transfer Learning with CNNs, ICML 2018 (for GANs as in FreezeD's code)"
    requires = ("source_checkpoint",)
    hyperparameters = {
        "lambda_g": Hyperparameter(default=1e-2, search=(1e-5, 1.0), log_scale=True, help="weight of G's anchor"),
        "mu_d": Hyperparameter(default=1e-2, search=(1e-5, 1.0), log_scale=True, help="weight of D's anchor"),
        "form": Hyperparameter(default="sum", search=FORMS),
    }

    def initialise(self, context: AdaptationContext) -> GANModels:
        models = context.source_models()
        self.anchor_g = snapshot(models.generator.parameters())
        self.anchor_d = snapshot(models.discriminator.parameters())
        return models

    def generator_penalty(self, generator: Generator) -> torch.Tensor | None:
        return anchored_penalty(list(generator.parameters()), self.anchor_g, self.hparams["lambda_g"], self.hparams["form"])

    def discriminator_penalty(self, discriminator: Discriminator) -> torch.Tensor | None:
        return anchored_penalty(list(discriminator.parameters()), self.anchor_d, self.hparams["mu_d"], self.hparams["form"])
