import learn2learn
import torch

from benchmark.meta_learning import MetaMethod, Task, accumulate_gradients, discriminator_steps, inner_loop
from benchmark.methods import Hyperparameter
from benchmark.models import GANModels, preserved_batchnorm_statistics
from benchmark.training import discriminator_loss, generator_loss


class MAMLGAN(MetaMethod):
    """MAML for GANs with DAWSON's generator meta-objective: meta-learn G and D so that a few inner steps on a
    task's support images give a good GAN for its query images.

    Per task, learn2learn's MAML clones G and D, and the inner loop alternates D and G steps on the support set
    a (theta_D -> theta_D^a, theta_G -> theta_G'). A GAN's generator has no likelihood to score on held-out
    images, so G's meta-objective needs a judge that has seen the query set b: DAWSON (Liang, Liu, Liu, 2020,
    arXiv 2001.00576; its code scores "with the val-updated D") adapts a second clone of the meta-D on b alone,
    with the same number of inner D steps against the adapted G's samples (theta_D -> theta_D^b). The outer losses,
    for the usual GAN losses L_D, L_G:

        D:  L_D(theta_D^a; query images b, G'(z))      (MAML's outer objective, Finn et al. 2017, eq. 1)
        G:  L_G(theta_G'; judged by theta_D^b)          (DAWSON: query images reach G's meta-gradient through D^b)

    Each meta-gradient goes to its own network only (DAWSON's code let each loss update both). First-order by
    default (as FIGR chose, for memory and stability); `first_order: false` differentiates through the inner loop.
    """

    name = "maml_gan"
    paper = "Finn, Abbeel, Levine, MAML, ICML 2017; for GANs: Liang, Liu, Liu, DAWSON, arXiv 2001.00576, 2020"
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
            # Each task starts from the meta-model's BatchNorm statistics (clones share them); spectral-norm
            # vectors carry over, as between ordinary training steps.
            with preserved_batchnorm_statistics(models.generator):
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
                judge = maml_d.clone()  # D^b: the meta-D adapted on the query images, against G's samples
                discriminator_steps(judge, generator, query, hp["inner_steps"], hp["inner_batch_size"], hp["loss"], rng, judge.adapt)
                z = torch.randn(len(query), generator.z_dim, generator=rng).to(query.device)
                fake = generator(z)
                loss_d = discriminator_loss(hp["loss"], discriminator(query), discriminator(fake.detach()))
                loss_g = generator_loss(hp["loss"], judge(fake))
                scale = 1.0 / len(tasks)
                accumulate_gradients(params_d, torch.autograd.grad(loss_d, params_d, allow_unused=True, retain_graph=True), scale)
                accumulate_gradients(params_g, torch.autograd.grad(loss_g, params_g, allow_unused=True), scale)
            total_d += loss_d.item() / len(tasks)
            total_g += loss_g.item() / len(tasks)
        optimiser_d.step()
        optimiser_g.step()
        return {"query_loss_d": total_d, "query_loss_g": total_g}
