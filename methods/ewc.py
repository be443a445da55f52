import torch

from benchmark.methods import AdaptationContext, Hyperparameter, Method
from benchmark.models import Discriminator, GANModels, Generator, preserved_buffers
from benchmark.regularisers import anchored_penalty, snapshot
from benchmark.training import generator_loss


def generator_fisher(generator: Generator, discriminator: Discriminator, batches: int, batch_size: int, seed: int) -> list[torch.Tensor]:
    """Diagonal Fisher of G at the source weights: the mean over `batches` batches of the squared gradient of the
    non-saturating G loss (generated images scored by the source D), one gradient per batch."""
    rng = torch.Generator().manual_seed(seed)
    generator.train()
    parameters = list(generator.parameters())
    fisher = [torch.zeros_like(p) for p in parameters]
    device = parameters[0].device
    with preserved_buffers(generator, discriminator):  # the starting point stays exactly the source model
        for _ in range(batches):
            z = torch.randn(batch_size, generator.z_dim, generator=rng).to(device)
            loss = generator_loss("nonsaturating", discriminator(generator(z)))
            for total, gradient in zip(fisher, torch.autograd.grad(loss, parameters)):
                total += gradient.detach().pow(2) / batches
    return fisher


class EWC(Method):
    """Fine-tune from the source with lambda * sum_i F_i (theta_i - theta_i^s)^2 on G, F a diagonal Fisher
    estimated once on the source G and D before adaptation (the paper regularises G; D trains freely)."""

    name = "ewc"
    paper = "Li, Zhang, Lu, Shechtman, Few-shot Image Generation with Elastic Weight Consolidation, NeurIPS 2020"
    requires = ("source_checkpoint",)
    hyperparameters = {
        "lambda_g": Hyperparameter(default=1e5, search=(1e2, 1e8), log_scale=True, help="weight of the Fisher-weighted anchor"),
        "fisher_batches": Hyperparameter(default=20, search=(5, 100), help="source batches for the Fisher estimate"),
        "fisher_batch_size": Hyperparameter(default=64),
    }

    def initialise(self, context: AdaptationContext) -> GANModels:
        models = context.source_models()
        self.anchor_g = snapshot(models.generator.parameters())
        self.fisher_g = generator_fisher(
            models.generator, models.discriminator, self.hparams["fisher_batches"], self.hparams["fisher_batch_size"], context.seed
        )
        return models

    def generator_penalty(self, generator: Generator) -> torch.Tensor | None:
        return anchored_penalty(list(generator.parameters()), self.anchor_g, self.hparams["lambda_g"], "sum", self.fisher_g)
