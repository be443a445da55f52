"""Each method's default hyperparameters are part of the benchmark's protocol: a config that leaves a key out runs
with them, and every published number depends on them. They change only on purpose, here and in the results."""

from __future__ import annotations

import re

import pytest

from benchmark.errors import BenchmarkError
from benchmark.methods import Hyperparameter, Method, get_method, methods

META = {"inner_lr": 1e-2, "inner_steps": 5, "inner_batch_size": 32, "meta_iterations": 300, "meta_batch_size": 4, "outer_lr": 1e-4}
PROTOCOL = {
    "scratch": {},
    "finetune": {},
    "freeze_d": {"frozen_blocks": 1},
    "l2sp": {"lambda_g": 1e-2, "mu_d": 1e-2, "form": "sum"},
    "ewc": {"lambda_g": 2e3, "fisher_batches": 10, "fisher_batch_size": 64, "form": "sum"},
    "maml_gan": {**META, "loss": "nonsaturating", "init": "random", "first_order": True},
    "reptile": {**META, "loss": "nonsaturating", "init": "random"},
}


def test_defaults_are_the_protocols():
    registered = methods()
    assert {name: {key: hp.default for key, hp in registered[name].hyperparameters.items()} for name in PROTOCOL} == PROTOCOL
    for name in PROTOCOL:
        assert get_method(name)().hparams == PROTOCOL[name]  # what a config that names no hyperparameter runs


# Counts of samples, steps and tasks start at 1; weights, rates and frozen_blocks (0: plain fine-tuning) at 0.
COUNTS = {"fisher_batches", "fisher_batch_size", "inner_steps", "inner_batch_size", "meta_iterations", "meta_batch_size"}


@pytest.mark.parametrize("name", sorted(PROTOCOL))
def test_counts_start_at_one_and_weights_at_zero(name):
    for key, default in PROTOCOL[name].items():
        if isinstance(default, bool) or not isinstance(default, int | float):
            continue
        smallest = (1 if key in COUNTS else 0) if isinstance(default, int) else 0.0
        get_method(name)(**{key: smallest})
        with pytest.raises(BenchmarkError, match=rf"Hyperparameter '{name}.{key}' = .* is below its minimum {int(smallest)}\."):
            get_method(name)(**{key: smallest - 1})


def test_choices_accept_each_choice():
    for first_order in (True, False):
        assert get_method("maml_gan")(first_order=first_order).hparams["first_order"] is first_order
    for form in ("sum", "mean_per_tensor"):
        assert get_method("l2sp")(form=form).hparams["form"] == form
    for loss in ("nonsaturating", "hinge"):
        assert get_method("reptile")(loss=loss).hparams["loss"] == loss
    with pytest.raises(BenchmarkError, match="is not one of"):
        get_method("l2sp")(form="l1")


@pytest.mark.parametrize(
    ("declaration", "problem"),
    [
        ({"default": 1.0, "search": (2.0, 0.5)}, "a range is (low, high) with low below high"),
        ({"default": 1.0, "search": (1.0, 1.0)}, "a range is (low, high) with low below high"),
        ({"default": 2, "search": (1, 2, 4)}, "a range is (low, high) with low below high"),
        ({"default": 1, "search": ("one", "two")}, "a range is (low, high) with low below high"),  # a sweep would crash
        ({"default": 5, "search": (1, 4)}, "the default lies outside the range"),
        ({"default": 5, "search": (0, 10), "minimum": 1}, "the range starts below the minimum 1"),
        ({"default": 1e-2, "search": (0.0, 1.0), "log_scale": True}, "a log-scale range must be positive"),
        ({"default": 1e-2, "search": (1e-2, 1.0)}, "it spans two orders of magnitude or more: set log_scale=True"),
    ],
)
def test_a_search_range_no_sweep_could_use_is_refused_where_it_is_declared(declaration, problem):
    with pytest.raises(BenchmarkError, match=re.escape(f"Method 'sloppy' declares weight with search={declaration['search']}: {problem}.")):

        class Sloppy(Method):
            name = "sloppy"
            hyperparameters = {"weight": Hyperparameter(**declaration)}


def test_usable_search_ranges_and_choices_are_accepted():
    for declaration in (
        {"default": 1e-2, "search": (1e-4, 1.0), "log_scale": True},
        {"default": 5, "search": (1, 99), "minimum": 1},  # under a factor of 100: linear is fine
        {"default": 0, "search": (0, 2)},  # from 0: no ratio to speak of
        {"default": "sum", "search": ("sum", "mean")},
        {"default": True, "search": (True, False)},
        {"default": 64, "minimum": 1},
    ):
        assert Hyperparameter(**declaration).search_problem() is None


def test_every_frozen_blocks_value_in_the_search_range_freezes_something_and_trains_the_last_block():
    """A sweep over freeze-D's range must never run plain fine-tuning (0) nor freeze all of D."""
    from benchmark.models import GANModels
    from conftest import TINY_DIGIT_ARCH

    low, high = methods()["freeze_d"].hyperparameters["frozen_blocks"].search
    assert low >= 1
    for frozen in range(low, high + 1):
        models = GANModels.fresh(TINY_DIGIT_ARCH, 0)
        get_method("freeze_d")(frozen_blocks=frozen).trainable_parameters(models.generator, models.discriminator)
