import learn2learn
import torch

from benchmark.meta_learning import MetaMethod, Task, accumulate_gradients, inner_loop
from benchmark.methods import Hyperparameter
from benchmark.models import GANModels, preserved_buffers
from benchmark.training import discriminator_loss, generator_loss


class MAMLGAN(MetaMethod):
    """MAML for GANs: meta-learn G and D so that a few inner steps on a task's support images give a good GAN
    on its query images. learn2learn's MAML clones G and D per task; the inner loop alternates D and G steps;
    the outer losses (D's and G's, on the query images) update the meta-parameters. First-order by default
    (as FIGR chose, for memory and stability); `first_order: false` differentiates through the inner loop."""

    name = "maml_gan"
    paper = "Finn, Abbeel, Levine, MAML, ICML 2017; for GANs: Liang et al., DAWSON, 2020"
    hyperparameters = {
        **MetaMethod.hyperparameters,
        "first_order": Hyperparameter(default=True, search=(True, False)),
    }

    def meta_step(self, models: GANModels, tasks: list[Task], rng: torch.Generator) -> dict[str, float]:
        hp = self.hparams
        if not hasattr(self, "_maml"):
            self._maml = tuple(
                learn2learn.algorithms.MAML(module, lr=hp["inner_lr"], first_order=hp["first_order"], allow_unused=True, allow_nograd=True)
                for module in (models.generator, models.discriminator)
            )
        maml_g, maml_d = self._maml
        optimiser_g, optimiser_d = self.outer_optimisers(models)
        params_g = [p for p in models.generator.parameters() if p.requires_grad]
        params_d = [p for p in models.discriminator.parameters() if p.requires_grad]
        optimiser_g.zero_grad(set_to_none=True)
        optimiser_d.zero_grad(set_to_none=True)
        total_d = total_g = 0.0
        for support, query in tasks:
            with preserved_buffers(models.generator, models.discriminator):
                generator, discriminator = maml_g.clone(), maml_d.clone()
                inner_loop(
                    generator,
                    discriminator,
                    support,
                    hp["inner_steps"],
                    hp["inner_batch_size"],
                    hp["loss"],
                    rng,
                    discriminator.adapt,
                    generator.adapt,
                )
                z = torch.randn(len(query), generator.z_dim, generator=rng).to(query.device)
                fake = generator(z)
                loss_d = discriminator_loss(hp["loss"], discriminator(query), discriminator(fake.detach()))
                loss_g = generator_loss(hp["loss"], discriminator(fake))
                scale = 1.0 / len(tasks)
                accumulate_gradients(params_d, torch.autograd.grad(loss_d, params_d, allow_unused=True, retain_graph=True), scale)
                accumulate_gradients(params_g, torch.autograd.grad(loss_g, params_g, allow_unused=True), scale)
            total_d += loss_d.item() / len(tasks)
            total_g += loss_g.item() / len(tasks)
        optimiser_d.step()
        optimiser_g.step()
        return {"query_loss_d": total_d, "query_loss_g": total_g}
