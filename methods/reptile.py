import copy

import torch

from benchmark.meta_learning import MetaMethod, Task, accumulate_gradients, inner_loop
from benchmark.models import GANModels, carry_power_iteration_vectors


def _sgd_step(optimiser: torch.optim.Optimizer):
    def step(loss: torch.Tensor) -> None:
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    return step


class Reptile(MetaMethod):
    """Reptile for GANs (FIGR): first-order meta-learning. Each task trains copies of G and D with the inner
    loop on its support images; the meta-gradient is (theta - phi), the meta-weights minus the adapted weights,
    averaged over the tasks of a batch and applied with Adam, for both G and D. D's spectral-norm power-iteration
    vectors carry over from the task copies to the meta-model, as between the steps of ordinary training."""

    name = "reptile"
    paper = "Nichol, Achiam, Schulman, Reptile, 2018; for GANs: Clouatre & Demers, FIGR, 2019"

    def meta_step(self, models: GANModels, tasks: list[Task], rng: torch.Generator) -> dict[str, float]:
        hp = self.hparams
        optimiser_g, optimiser_d = self.outer_optimisers(models)
        optimiser_g.zero_grad(set_to_none=True)
        optimiser_d.zero_grad(set_to_none=True)
        distance = 0.0
        for support, _query in tasks:
            generator, discriminator = copy.deepcopy(models.generator), copy.deepcopy(models.discriminator)
            inner_g = torch.optim.SGD([p for p in generator.parameters() if p.requires_grad], lr=hp["inner_lr"])
            inner_d = torch.optim.SGD([p for p in discriminator.parameters() if p.requires_grad], lr=hp["inner_lr"])
            inner_loop(
                generator, discriminator, support, hp["inner_steps"], hp["inner_batch_size"], hp["loss"], rng, _sgd_step(inner_d), _sgd_step(inner_g)
            )
            # The task copies' spectral-norm vectors go back to the meta-model, so that they keep tracking the
            # meta-weights from task to task (BatchNorm statistics stay: they belong to each task's weights).
            carry_power_iteration_vectors(models.discriminator, discriminator)
            for meta, adapted in ((models.generator, generator), (models.discriminator, discriminator)):
                pairs = [(p, q) for p, q in zip(meta.parameters(), adapted.parameters()) if p.requires_grad]
                accumulate_gradients([p for p, _ in pairs], tuple(p.detach() - q.detach() for p, q in pairs), 1.0 / len(tasks))
                distance += sum(float((p.detach() - q.detach()).pow(2).sum()) for p, q in pairs) / len(tasks)
        optimiser_d.step()
        optimiser_g.step()
        return {"squared_distance_to_task_weights": distance}
