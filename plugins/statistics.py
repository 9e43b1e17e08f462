"""The built-in statistic kinds: generic computations, named by what they compute.

They register through the ``register_statistics`` hook like any plugin's kinds; methods declare
them by name (`locator.list_statistics()`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

import locator

INPUT_NORM_SUM = "input_norm_sum"
INPUT_SQUARE_SUM = "input_square_sum"
NEURON_ACTIVE_COUNT = "neuron_active_count"
NEURON_MEAN_SUM = "neuron_sample_mean_sum"
NEURON_MEAN_SQUARE_SUM = "neuron_sample_mean_square_sum"
WEIGHT_SALIENCY = "weight_gradient_saliency"
WEIGHT_SALIENCY_BF16 = "weight_gradient_saliency_bf16"


@dataclass(frozen=True, kw_only=True)
class Reduction(locator.StatisticKind):
    """An activation kind whose batch value is `reduce(observed)`, summed over batches."""

    reduce: Callable[[locator.Activations], Tensor]

    def batch(self, observed: locator.Activations) -> Tensor:
        """`reduce` of one batch's activations."""
        return self.reduce(observed)


@dataclass(frozen=True, kw_only=True)
class Saliency(locator.StatisticKind):
    """Per entry of each scored weight, the sum over samples of ``|W * dL_s/dW|``."""

    def batch(self, observed: locator.WeightGradients) -> Tensor:
        """``sum_s |W * G_s| = |W| * sum_s |G_s|`` over the batch's samples."""
        magnitude = observed.magnitude()  # [d_out, d_in]
        total = torch.zeros_like(magnitude)
        for gradient in observed.samples():
            total += gradient.abs_()
        return total.mul_(magnitude)


_REDUCTIONS: tuple[tuple[str, str, Callable[[locator.Activations], Tensor], str], ...] = (
    (
        INPUT_NORM_SUM,
        "linear_input",
        lambda seen: seen.sample_square_sums().sqrt().sum(0, dtype=torch.float64),
        "per input channel j, the sum over samples of ||X_s[:, j]||_2 over the sample's real "
        "tokens",
    ),
    (
        INPUT_SQUARE_SUM,
        "linear_input",
        lambda seen: seen.sample_square_sums().sum(0, dtype=torch.float64),
        "per input channel j, the sum over all real tokens of X[t, j]^2",
    ),
    (
        NEURON_ACTIVE_COUNT,
        "neuron_pre_activation",
        lambda seen: ((seen.values > 0) & seen.real()).sum(dim=(0, 1)),  # int64: exact
        "per MLP neuron, the real tokens where its pre-activation is > 0 (exactly where the "
        "activation is, for ReLU, GELU and SiLU)",
    ),
    (
        NEURON_MEAN_SUM,
        "neuron_activation",
        lambda seen: seen.sample_means().sum(0, dtype=torch.float64),
        "per MLP neuron, the sum over samples of its mean activation over the sample's real tokens",
    ),
    (
        NEURON_MEAN_SQUARE_SUM,
        "neuron_activation",
        lambda seen: seen.sample_means().double().square().sum(0),
        "per MLP neuron, the sum over samples of the square of its mean activation over the "
        "sample's real tokens",
    ),
)
_SALIENCY = (
    "per entry of each scored weight, the sum over samples of |W * dL_s/dW|, L_s the sample's "
    "mean next-token loss on its real tokens ([d_out, d_in]; one weight-sized accumulator)"
)
KINDS: tuple[locator.StatisticKind, ...] = (
    *(
        Reduction(name=name, site=site, reduce=reduce, description=description)
        for name, site, reduce, description in _REDUCTIONS
    ),
    Saliency(
        name=WEIGHT_SALIENCY, site="weight_gradient", description=_SALIENCY, dtype=torch.float32
    ),
    Saliency(
        name=WEIGHT_SALIENCY_BF16,
        site="weight_gradient",
        description=_SALIENCY + ", accumulated in bf16",
        dtype=torch.bfloat16,
    ),
)
"""The built-in statistic kinds."""


@locator.hookimpl
def register_statistics(register):  # type: ignore[no-untyped-def]
    """Register the built-in statistic kinds."""
    for kind in KINDS:
        register(kind)
