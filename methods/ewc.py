import torch
from torch.func import functional_call, grad, vmap

from benchmark.methods import AdaptationContext, Hyperparameter, Method
from benchmark.models import Discriminator, GANModels, Generator
from benchmark.regularisers import FORMS, anchored_penalty, snapshot
from benchmark.training import generator_loss


def generator_fisher(generator: Generator, discriminator: Discriminator, batches: int, batch_size: int, seed: int) -> list[torch.Tensor]:
    """Empirical diagonal Fisher of G at the source weights: the mean, over `batches` x `batch_size` generated
    samples, of each sample's squared gradient of the non-saturating G loss under the source D.

    Per-sample gradients come from torch.func (vmap of grad); both models run in eval mode so that samples are
    independent (BatchNorm on its running statistics) and no buffer of the source model changes. Eval mode is the
    right choice, not merely a convenient one: a per-sample gradient has no batch to take statistics from, and
    the source G's running statistics are recalibrated on its own samples before it is saved
    (`benchmark.models.recalibrate_batchnorm`), so they equal in expectation the batch statistics that adaptation
    trains with; what differs is only the batch-to-batch noise of those statistics, which is not a property of
    the weights the Fisher measures.
    """
    rng = torch.Generator().manual_seed(seed)
    modes = generator.training, discriminator.training
    generator.eval()
    discriminator.eval()
    parameters = {name: p.detach() for name, p in generator.named_parameters()}
    buffers = dict(generator.named_buffers())

    def sample_loss(params: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        return generator_loss("nonsaturating", discriminator(functional_call(generator, (params, buffers), (z[None],))))

    per_sample_gradients = vmap(grad(sample_loss), in_dims=(None, 0))
    fisher = {name: torch.zeros_like(p) for name, p in parameters.items()}
    device = next(iter(parameters.values())).device
    for _ in range(batches):
        z = torch.randn(batch_size, generator.z_dim, generator=rng).to(device)
        for name, gradients in per_sample_gradients(parameters, z).items():
            # detach: D's parameters require grad, so the per-sample gradients would carry a graph into D
            fisher[name] += gradients.detach().pow(2).sum(0) / (batches * batch_size)
    generator.train(modes[0])
    discriminator.train(modes[1])
    return [fisher[name] for name, _ in generator.named_parameters()]


class EWC(Method):
    """Fine-tune from the source with lambda * sum_i F_i (theta_i - theta_i^s)^2 on G, F the empirical diagonal
    Fisher of G estimated once on the source G and D before adaptation (the paper regularises G; D trains
    freely). `form: sum` is the paper's penalty, summed over every weight; `mean_per_tensor` averages within each
    tensor first (the reduction of FreezeD's L2-SP code), which weighs small tensors such as BatchNorm scales as
    much as the large ones. Each run records which."""

    name = "ewc"
    paper = "Li, Zhang, Lu, Shechtman, Few-shot Image Generation with Elastic Weight Consolidation, NeurIPS 2020"
    requires = ("source_checkpoint",)
    hyperparameters = {
        "lambda_g": Hyperparameter(default=2e3, search=(1e1, 1e6), log_scale=True, help="weight of the Fisher-weighted anchor"),
        "fisher_batches": Hyperparameter(default=10, minimum=1, search=(5, 100), help="batches of generated samples for the Fisher"),
        "fisher_batch_size": Hyperparameter(default=64, minimum=1),
        "form": Hyperparameter(default="sum", search=FORMS, help="reduction of the penalty: the paper's sum, or FreezeD's per-tensor mean"),
    }

    def initialise(self, context: AdaptationContext) -> GANModels:
        models = context.source_models()
        self.anchor_g = snapshot(models.generator.parameters())
        self.fisher_g = generator_fisher(
            models.generator, models.discriminator, self.hparams["fisher_batches"], self.hparams["fisher_batch_size"], context.seed
        )
        return models

    def generator_penalty(self, generator: Generator) -> torch.Tensor | None:
        return anchored_penalty(list(generator.parameters()), self.anchor_g, self.hparams["lambda_g"], self.hparams["form"], self.fisher_g)
