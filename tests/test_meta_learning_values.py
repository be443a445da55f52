"""The meta-learning machinery every meta-learner shares (`benchmark/meta_learning.py`), pinned to values: the inner
loop's order of steps, gradient accumulation, the inner and outer optimisers, the buffer refresh, and the
meta-training loop's task order, logging, checkpoints and divergence handling."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from benchmark.errors import BenchmarkError
from benchmark.meta_learning import MetaMethod, accumulate_gradients, inner_loop, meta_curve_summary, meta_train_gan, refresh_buffers
from benchmark.models import GANModels
from benchmark.training import TrainingDiverged, TrainSettings
from conftest import TINY_DIGIT_ARCH

ARCH = TINY_DIGIT_ARCH


def test_inner_loop_alternates_a_d_step_on_detached_fakes_and_a_g_step():
    models = GANModels.fresh(ARCH, 0)
    support = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    calls = []

    def step(name: str):
        def take(loss: torch.Tensor) -> None:
            reaches_g = any(
                g is not None for g in torch.autograd.grad(loss, list(models.generator.parameters()), allow_unused=True, retain_graph=True)
            )
            calls.append((name, reaches_g))

        return take

    inner_loop(models.generator, models.discriminator, support, 3, 4, "hinge", torch.Generator().manual_seed(0), step("d"), step("g"))
    assert calls == [("d", False), ("g", True)] * 3


def test_accumulate_gradients_adds_scaled_gradients_and_skips_missing_ones():
    first, second = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    accumulate_gradients([first, second], (torch.tensor([1.0, 2.0]), None), 0.5)
    accumulate_gradients([first, second], (torch.tensor([3.0, -4.0]), None), 0.5)
    assert first.grad.tolist() == [2.0, -1.0] and second.grad is None


class Recording(MetaMethod):
    """A meta-learner that records which tasks each outer step gets and changes nothing."""

    name = "recording"
    paper = "test"

    def meta_step(self, models, tasks, rng):
        self.seen.append([int(support[0, 0, 0, 0]) for support, _ in tasks])
        return {"loss": float(len(self.seen))}


def recording(**hparams) -> Recording:
    method = Recording(**{"meta_iterations": 5, "meta_batch_size": 2, **hparams})
    method.seen = []
    return method


def numbered_tasks(count: int) -> tuple[torch.Tensor, list]:
    """Image i is filled with i; task t is support image t, query image t + count."""
    images = torch.arange(2 * count, dtype=torch.float32).reshape(-1, 1, 1, 1).expand(-1, 1, 28, 28).contiguous()
    return images, [([t], [t + count]) for t in range(count)]


def test_meta_training_walks_through_the_tasks_in_order_and_logs_on_schedule(tmp_path):
    """5 iterations of 2 tasks out of 3: tasks 0 1 | 2 0 | 1 2 | 0 1 | 2 0 (wrapping round). Log every 2: iterations
    1, 2, 4 and 5, each line the mean loss since the previous one (iteration i's loss is i: 1, 2, (3 + 4) / 2, 5),
    then the curve's summary. A checkpoint to resume from every 2, removed once the final checkpoint is written."""
    images, tasks = numbered_tasks(3)
    method = recording()
    meta_train_gan(GANModels.fresh(ARCH, 0), method, images, tasks, 0, tmp_path, {}, log_every=2, checkpoint_every=2)
    assert method.seen == [[0, 1], [2, 0], [1, 2], [0, 1], [2, 0]]
    lines = [json.loads(line) for line in (tmp_path / "meta_log.jsonl").read_text().splitlines()]
    assert [(line["iteration"], line["window"], line["loss"]) for line in lines[:-1]] == [(1, 1, 1.0), (2, 1, 2.0), (4, 2, 3.5), (5, 1, 5.0)]
    # Fifths of 4 points are single points: first 1, middle 3.5, last 5; the last changed by (5 - 3.5) / 5.
    summary = lines[-1]["curve_summary"]["losses"]["loss"]
    assert summary == {"first_fifth": 1.0, "middle_fifth": 3.5, "last_fifth": 5.0, "last_change": pytest.approx(0.3), "noise": 0.0, "flat": False}
    assert lines[-1]["curve_summary"]["text"] == "loss 1 -> 3.5 -> 5 (+30.0% over the last fifth, 2 SE 0: still moving)"
    assert (tmp_path / "checkpoint.pt").is_file() and not (tmp_path / "resume.pt").exists()
    refreshed = [m.num_batches_tracked.item() for m in method_models(tmp_path).generator.modules() if isinstance(m, nn.BatchNorm2d)]
    assert refreshed and set(refreshed) == {20}  # the final buffer refresh ran
    # Without any mid-run checkpoint there is no resume point to remove at the end.
    meta_train_gan(GANModels.fresh(ARCH, 0), recording(), images, tasks, 0, tmp_path / "short", {}, log_every=2, checkpoint_every=10)
    assert (tmp_path / "short" / "checkpoint.pt").is_file()


def test_meta_training_with_the_default_log_and_checkpoint_cadence(tmp_path):
    """The meta-training stage passes no cadence: the defaults (every 25 iterations) must run."""
    images, tasks = numbered_tasks(3)
    meta_train_gan(GANModels.fresh(ARCH, 0), recording(meta_iterations=26, meta_batch_size=1), images, tasks, 0, tmp_path, {})
    lines = [json.loads(line) for line in (tmp_path / "meta_log.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [1, 25, 26, 26]  # the last line is the curve's summary
    assert [line.get("window") for line in lines] == [1, 24, 1, None]


def method_models(run_dir) -> GANModels:
    from benchmark.checkpoint import load_checkpoint, models_from_checkpoint

    return models_from_checkpoint(load_checkpoint(run_dir / "checkpoint.pt"), run_dir / "checkpoint.pt", ARCH, "cpu")


def test_meta_training_resumes_after_the_last_checkpoint(tmp_path):
    images, tasks = numbered_tasks(3)

    class Killed(Recording):
        def meta_step(self, models, tasks, rng):
            if len(self.seen) == 3:
                raise KeyboardInterrupt
            return super().meta_step(models, tasks, rng)

    killed = Killed(meta_iterations=5, meta_batch_size=2)
    killed.seen = []
    with pytest.raises(KeyboardInterrupt):
        meta_train_gan(GANModels.fresh(ARCH, 0), killed, images, tasks, 0, tmp_path, {}, log_every=1, checkpoint_every=2)
    assert torch.load(tmp_path / "resume.pt", weights_only=True)["step"] == 2
    (tmp_path / "meta_log.jsonl").unlink()  # Snakemake deletes an incomplete job's declared log before rerunning it
    method = recording()
    meta_train_gan(GANModels.fresh(ARCH, 0), method, images, tasks, 0, tmp_path, {}, log_every=1, checkpoint_every=2)
    assert method.seen == [[1, 2], [0, 1], [2, 0]]  # iterations 3 to 5
    lines = [json.loads(line) for line in (tmp_path / "meta_log.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [1, 2, 3, 4, 5, 5]  # the resume point carried the first two


@pytest.mark.parametrize(
    ("losses", "poison", "at", "reason"),
    [
        ({"loss": float("nan")}, False, 2, "non-finite loss"),
        ({"loss": float("nan")}, False, 1, "non-finite loss"),  # before any resume point exists
        ({"loss": 1.0}, True, 2, "non-finite meta-parameters"),
    ],
)
def test_meta_training_divergence_is_one_error_and_leaves_no_resume_point(tmp_path, losses, poison, at, reason):
    images, tasks = numbered_tasks(3)

    class Diverging(Recording):
        def meta_step(self, models, tasks, rng):
            self.seen.append(1)
            if len(self.seen) == at:
                if poison:
                    with torch.no_grad():
                        next(models.generator.parameters()).view(-1)[0] = float("inf")  # one weight of many
                return losses
            return {"loss": 1.0}

    method = Diverging(meta_iterations=5, meta_batch_size=1)
    method.seen = []
    with pytest.raises(TrainingDiverged, match=f"at step {at}: {reason}"):
        meta_train_gan(GANModels.fresh(ARCH, 0), method, images, tasks, 0, tmp_path, {}, log_every=1, checkpoint_every=1)
    assert not (tmp_path / "resume.pt").exists()


def test_the_curve_summary_calls_a_noisy_plateau_flat_and_a_trend_still_moving():
    """Ten window means: a plateau alternating 1.0 / 1.2 has fifths of equal mean (flat); a line rising by 0.1
    per window moves its last fifth (mean 1.85) by 0.2 from the fifth before (1.65), 10.8%, against two standard
    errors of 2 * sqrt(0.005 / 2 + 0.005 / 2) = 0.14: still moving. A fluctuation as large as the noise is flat
    even when above 5%: last fifth (1.5, 0.9) against (0.9, 1.3), +8.3% but 0.1 is within 2 SE = 0.72."""

    def summary(values):
        entries = [{"iteration": i, "window": 25, "loss": v} for i, v in enumerate(values)]
        return meta_curve_summary(entries)["losses"]["loss"]

    plateau = summary([1.0, 1.2] * 5)
    assert plateau["flat"] and plateau["last_change"] == 0.0 and plateau["first_fifth"] == pytest.approx(1.1)
    rising = summary([1.0 + 0.1 * i for i in range(10)])
    assert not rising["flat"] and rising["last_change"] == pytest.approx(0.2 / 1.85) and rising["noise"] == pytest.approx(0.005**0.5)
    assert rising["middle_fifth"] == pytest.approx(1.45)  # windows 5 and 6 of 10
    noisy = summary([1.0] * 6 + [0.9, 1.3, 1.5, 0.9])
    assert noisy["flat"] and noisy["last_change"] == pytest.approx(0.1 / 1.2)
    assert meta_curve_summary([])["text"] == "no logged iterations"


@pytest.mark.parametrize(
    ("values", "flat"),
    [
        ([1.0, 1.0, 1.0, 1.03], True),  # +2.9%, no spread to judge by (one value per fifth): under 5% is flat
        ([1.0, 1.0, 1.0, 1.08], False),  # +7.4% with no spread: moving (a 10% threshold would call it flat)
        ([1.0, 1.0, 1.0, 1.2, 1.212, 1.412], False),  # fifths of one value: +14.2%, moving
        ([1.0] * 6 + [1.0, 1.2, 1.212, 1.412], True),  # the same step, 1.5 standard errors: within 2 SE, flat
        ([0.0] * 5, True),  # a loss of exactly 0 (no division by zero)
        ([2.0], True),  # a single logged point
    ],
)
def test_the_curve_summary_verdict_at_its_thresholds(values, flat):
    """Flat: under 5% relative change, or a change within 2 standard errors of the difference between the last
    two fifths (SE from the window means' spread within them, sqrt((var_last + var_before) / fifth))."""
    entries = [{"iteration": i, "window": 25, "loss": v} for i, v in enumerate(values)]
    assert meta_curve_summary(entries)["losses"]["loss"]["flat"] is flat


def test_inner_and_outer_optimisers():
    models = GANModels.fresh(ARCH, 0)
    models.discriminator.blocks[0].requires_grad_(False)
    method = recording(inner_lr=0.03, outer_lr=0.002)
    outer_g, outer_d = method.outer_optimisers(models)
    assert method.outer_optimisers(models) == (outer_g, outer_d)  # built once, so Adam's moments persist
    for optimiser, model in ((outer_g, models.generator), (outer_d, models.discriminator)):
        group = optimiser.param_groups[0]
        assert isinstance(optimiser, torch.optim.Adam) and group["lr"] == 0.002 and group["betas"] == (0.5, 0.999)
        assert [id(p) for p in group["params"]] == [id(p) for p in model.parameters() if p.requires_grad]
    inner = method.make_optimiser(list(models.generator.parameters()), 1.0, TrainSettings.from_config({"steps": 1}))
    assert isinstance(inner, torch.optim.SGD) and inner.param_groups[0]["lr"] == 0.03  # the inner rate, not the adapt lr
    assert method.make_optimiser(list(models.generator.parameters()), 1.0, None).param_groups[0]["lr"] == 0.03
    with pytest.raises(BenchmarkError, match="recording meta-trained with the nonsaturating loss but would adapt with hinge"):
        method.training_settings(TrainSettings.from_config({"steps": 1, "loss": "hinge"}))


def test_meta_learners_adapt_with_their_inner_procedure_and_record_it():
    """Adaptation runs the inner loop's procedure: SGD at inner_lr for G and D, the inner batch size, no EMA, and the
    inner step count among the curve's steps (when it lies inside the budget). These are the settings the run's
    identity records, instead of the configured Adam rates the meta-learner would not use."""
    method = recording(inner_lr=0.03, inner_steps=7, inner_batch_size=12)
    configured = TrainSettings.from_config({"steps": 300, "lr_g": 2e-4, "lr_d": 4e-4, "batch_size": 32, "ema_decay": 0.99, "eval_steps": [0, 10]})
    used = method.training_settings(configured)
    assert (used.lr_g, used.lr_d, used.batch_size, used.ema_decay, used.eval_steps) == (0.03, 0.03, 12, 0.0, (0, 7, 10))
    assert (used.steps, used.eval_every, used.loss) == (configured.steps, configured.eval_every, configured.loss)
    assert method.training_settings(TrainSettings.from_config({"steps": 5})).eval_steps == ()  # 7 lies beyond a 5-step budget
    assert method.training_settings(TrainSettings.from_config({"steps": 7})).eval_steps == ()  # 7 is the last step: scored anyway
    assert method.training_settings(TrainSettings.from_config({"steps": 8})).eval_steps == (7,)


def test_buffer_refresh_is_a_cumulative_average_over_twenty_passes():
    """G's BatchNorm statistics are re-estimated from scratch over 20 passes of 64 samples (momentum None: a plain
    average), in train mode whatever mode the models were in; momenta are restored afterwards."""
    models = GANModels.fresh(ARCH, 0)
    images = torch.rand(30, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    expected = copy.deepcopy(models)
    norms = [m for m in expected.generator.modules() if isinstance(m, nn.BatchNorm2d)]
    for module in norms:
        module.reset_running_stats()
        module.momentum = None
    rng = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for _ in range(20):
            expected.discriminator(expected.generator(torch.randn(64, ARCH.z_dim, generator=rng)))
            expected.discriminator(images[torch.randint(30, (64,), generator=rng)])
    models.generator.eval()
    models.discriminator.eval()
    with torch.no_grad():  # statistics left by earlier passes must not survive the refresh
        for module in (m for m in models.generator.modules() if isinstance(m, nn.BatchNorm2d)):
            module.running_mean.fill_(7.0)
            module.num_batches_tracked.fill_(50)
    refresh_buffers(models.generator, models.discriminator, images, torch.Generator().manual_seed(4))
    for (name, got), want in zip(models.generator.named_buffers(), expected.generator.buffers()):
        torch.testing.assert_close(got, want, msg=name)
    for got, want in zip(models.discriminator.buffers(), expected.discriminator.buffers()):
        torch.testing.assert_close(got, want)
    assert all(m.momentum == 0.1 for m in models.generator.modules() if isinstance(m, nn.BatchNorm2d))
