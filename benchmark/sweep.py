"""Hyperparameter sweeps: the settings of draw i of a method.

Draw 0 is the method's defaults, with whatever the config sets under `adapt.method_hparams`. Draws 1..n are random
settings from the ranges the method declares (`Hyperparameter.search`): uniform over (low, high), or log-uniform
where `log_scale` is set; counts are whole numbers; text and flags are a uniform choice. Held fixed at their draw-0
value in every draw: the hyperparameters the config lists under `sweep.hold` (a CPU preset holds budgets such as
`meta_iterations` this way), and those marked `swept=False`.

Each value comes from its own generator, seeded by (sweep seed, base method, draw, hyperparameter name): draw i
of a method is the same on every task, for every seed and K, and whatever other draws or hyperparameters exist. A
variant ("finetune+diffaug") draws what its base method draws, so the two are compared at equal settings.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Collection
from typing import Any

import numpy as np

from benchmark.errors import BenchmarkError
from benchmark.methods import Hyperparameter, get_method, split_variant

SIGNIFICANT_DIGITS = 3  # drawn floats are rounded: records and tables stay readable, draws stay distinct


def draw_hparams(method: str, configured: dict[str, Any], draw: int, sweep_seed: int, hold: Collection[str] = ()) -> dict[str, Any]:
    """The hyperparameters of draw `draw` of `method`: `configured` for draw 0; else `configured` with every swept
    hyperparameter that is not held drawn from its range."""
    hyperparameters = get_method(method).hyperparameters
    unknown = sorted(set(hold) - set(hyperparameters))
    if unknown:
        raise BenchmarkError(
            f"Config key 'sweep.hold.{method}': {method} has no hyperparameter(s) {', '.join(unknown)}; it takes: "
            f"{', '.join(sorted(hyperparameters)) or 'none'}."
        )
    if draw == 0:
        return dict(configured)
    base, _ = split_variant(method)
    drawn = {
        name: sample(spec, _generator(sweep_seed, base, draw, name))
        for name, spec in sorted(hyperparameters.items())
        if spec.search is not None and spec.swept and name not in hold
    }
    return {**configured, **drawn}


def sample(spec: Hyperparameter, rng: np.random.Generator) -> Any:
    """One value from a hyperparameter's declared search range."""
    if isinstance(spec.default, bool | str):  # choices (a number's range is (low, high): `Method` checks it)
        return spec.search[int(rng.integers(len(spec.search)))]
    low, high = spec.search
    if isinstance(spec.default, int):
        if spec.log_scale:  # log-uniform over the whole numbers low..high: each decade as likely
            return int(min(high, max(low, math.floor(math.exp(rng.uniform(math.log(low), math.log(high + 1)))))))
        return int(rng.integers(low, high + 1))
    value = math.exp(rng.uniform(math.log(low), math.log(high))) if spec.log_scale else rng.uniform(low, high)
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def _generator(sweep_seed: int, base: str, draw: int, name: str) -> np.random.Generator:
    # crc32: a stable number for a name (Python's hash() changes between processes)
    return np.random.default_rng([sweep_seed, zlib.crc32(base.encode()), draw, zlib.crc32(name.encode())])
