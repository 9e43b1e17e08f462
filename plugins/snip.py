"""SNIP (Lee et al. 2019, "SNIP: Single-shot Network Pruning based on Connection Sensitivity")
as a localizer: the weights whose removal most changes the target corpus's loss, to first
order.

Per scored weight entry, S_ij = sum over target samples s of |W_ij * dL_s/dW_ij|, where L_s is
sample s's mean next-token cross-entropy over its real tokens (the statistic
``weight_gradient_saliency``).
The selection is the top floor(K * numel) entries of each ``[d_out, d_in]`` matrix (``group =
matrix``) or the top floor(K * d_in) of each output row (``group = row``). Controls are
ignored.

Which quantity, exactly: the sum over samples of per-sample |W * grad| (absolute value inside the
sum), as Wei et al. 2024's reference code computes it (their "wandg": batches of one sample, the
absolute gradient added per batch). It is not |W * grad of the summed loss| (gradients of
different samples would cancel) and not a sum over batches of |W * grad of the batch's loss|
(which would depend on the batch size). locator runs padded batches and forms each sample's
gradient from its own tokens' activations and output gradients, so any batch size gives the
batch-1 value. Wei et al. train on prompt-response pairs and mask the prompt out of the loss;
locator's corpora are plain texts, so every real token after the first is predicted. SNIP's own
normalization by the sum of all scores does not change a ranking and is left out; SNIP ranks
over the whole network, locator per matrix (or row) like the other methods.

Cost: a backward pass per batch (about twice the forward's compute; the per-sample gradient
products cost what the weight gradients of a training step would) and one weight-sized
accumulator per scored matrix: 4 bytes per scored parameter in fp32 (``accumulate = float32``)
or 2 in bf16 (``accumulate = bfloat16``; a long bf16 sum loses the small increments), on the
model's device during the pass, then in the statistics (and their cache file) on CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

import locator

# The built-in statistic kind of the saliency by accumulator dtype (`locator.list_statistics()`).
SALIENCY = {"float32": "weight_gradient_saliency", "bfloat16": "weight_gradient_saliency_bf16"}


@dataclass(frozen=True, kw_only=True)
class SnipConfig(locator.Options):
    """SNIP's options (each field's help says what it does)."""

    group: Literal["matrix", "row"] = locator.option(
        "matrix", help="top-K of each matrix, or of each output row"
    )
    accumulate: Literal["float32", "bfloat16"] = locator.option(
        "float32", help="the dtype of the weight-sized sums"
    )


class SnipLocalizer(locator.Localizer):
    """Top-K of |W x gradient of the target's loss|, summed over samples, per matrix (or row)."""

    name = "snip"
    Config = SnipConfig
    uses_controls = False
    statistics = frozenset({SALIENCY["float32"]})  # the default config's; see __init__

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.statistics = frozenset({SALIENCY[self.config.accumulate]})

    def localize_many(
        self, context: locator.LocalizationContext, proportions: Sequence[float]
    ) -> list[dict[str, locator.Selection]]:
        """One ranking per matrix (or per row), cut at every proportion."""
        kind = SALIENCY[self.config.accumulate]
        return locator.ranked_selections(
            context,
            proportions,
            lambda name: context.target.get(kind, name).to(torch.float32),  # [d_out, d_in]
            self.config.group,
        )


@locator.hookimpl
def register_localizers(register):  # type: ignore[no-untyped-def]
    """Register SNIP."""
    register(SnipLocalizer)
