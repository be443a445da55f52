"""Penalties that anchor parameters at their source values: L2-SP and EWC share one implementation.

    penalty = weight * sum_i F_i (theta_i - theta_i^s)^2

with F = 1 for L2-SP (Li, Grandvalet, Davoine, ICML 2018) and F a diagonal Fisher for EWC (Li et al., NeurIPS
2020). Two reductions exist in the wild and give a weight very different meanings: "sum" sums over every
parameter (the textbook form); "mean_per_tensor" sums, over tensors, the mean squared difference of each tensor
(FreezeD's code, `F.mse_loss` per tensor).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from benchmark.errors import BenchmarkError

FORMS = ("sum", "mean_per_tensor")


def snapshot(parameters: Iterable[nn.Parameter]) -> list[torch.Tensor]:
    return [parameter.detach().clone() for parameter in parameters]


def anchored_penalty(
    parameters: Sequence[torch.Tensor],
    anchors: Sequence[torch.Tensor],
    weight: float,
    form: str = "sum",
    importance: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor | None:
    """None when the weight is 0, so that a zero-weight run is bit-identical to one without the penalty."""
    if form not in FORMS:
        raise BenchmarkError(f"Penalty form '{form}' is unknown; use one of {FORMS}.")
    if weight == 0:
        return None
    total = parameters[0].new_zeros(())
    for index, (parameter, anchor) in enumerate(zip(parameters, anchors, strict=True)):
        squared = (parameter - anchor).pow(2)
        if importance is not None:
            squared = squared * importance[index]
        total = total + (squared.sum() if form == "sum" else squared.mean())
    return weight * total
