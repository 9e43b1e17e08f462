"""Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for LLMs") as a localizer:
the most important weights by |weight| x input activation norm, on the target corpus only.

Per decoder linear, s_j = sum over all real tokens of all samples of X[t, j]^2, and the score is
S_ij = |W_ij| * sqrt(s_j). The original Wanda compares the weights of each output row, so by
default the selection is the top floor(K * d_in) entries of every row of the ``[d_out, d_in]``
matrix. Options give the MathNeuro paper's ablation variant: ``norm = per_sample`` scores with
MathNeuro's A_j (the sum over samples of per-sample channel L2 norms) and ``group = matrix``
takes the top floor(K * numel) entries of each matrix. Controls are ignored.

Against the reference code (locuslab/wanda), measured side by side on tiny Llama and GPT-2 and
SmolLM2-135M: with the differences below removed, both select the same entries up to exact ties
at a cut (locator gives ties to the lower index).

- Count per row: the reference prunes ``int(d_in * sparsity)`` entries of each row, so it
  keeps ``d_in - int(d_in * (1 - K))``, one more than floor(K * d_in) whenever K * d_in is not
  an integer. At small K this changes everything (SmolLM2, K = 0.001: 17,280 against 172,800
  entries). ``count = "floor"`` (the default) is the formula's top-K fraction, the same budget
  rule as every other method here; ``count = "original"`` keeps what the reference keeps.
- Sequential calibration: the reference computes block l's statistics on a model whose earlier
  blocks are already pruned; localization scores the dense model (every method's statistics
  come from the same unedited forward pass).
- Forward dtype: the reference loads the model in fp16 (load it so with ``dtype``); a forward
  in another dtype moves the selection by Jaccard 0.97-0.99.
- The reference divides s_j by the number of sequences; that constant changes no ranking and
  is left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

import locator

# The built-in statistic kind of each norm (`locator.list_statistics()`).
NORMS = {"pooled": "input_square_sum", "per_sample": "input_norm_sum"}


def original_count(proportion: float, numel: int) -> int:
    """What the reference code keeps of a group of `numel`: it prunes ``int(numel *
    sparsity)`` with sparsity = 1 - K, so it keeps ``numel - int(numel * (1 - K))``."""
    return numel - int(numel * (1 - proportion))


COUNTS = {"floor": locator.top_count, "original": original_count}


@dataclass(frozen=True, kw_only=True)
class WandaConfig(locator.Options):
    """Wanda's options (each field's help says what it does)."""

    norm: Literal["pooled", "per_sample"] = locator.option(
        "pooled",
        help="pooled: sqrt of the sum of squares over all tokens (the original); per_sample: "
        "MathNeuro's sum of per-sample norms",
    )
    group: Literal["row", "matrix"] = locator.option(
        "row", help="top-K of each output row (the original), or of each matrix"
    )
    count: Literal["floor", "original"] = locator.option(
        "floor",
        help="entries a group of n keeps: floor(K n), or the reference code's n - int(n (1 - K)) "
        "(one more whenever K n is not an integer)",
    )


class WandaLocalizer(locator.Localizer):
    """Top-K of |W| x input norm on the target, per output row (or per matrix)."""

    name = "wanda"
    Config = WandaConfig
    uses_controls = False
    statistics = frozenset({NORMS["pooled"]})  # the default config's; see __init__

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.statistics = frozenset({NORMS[self.config.norm]})

    def localize_many(
        self, context: locator.LocalizationContext, proportions: Sequence[float]
    ) -> list[dict[str, locator.Selection]]:
        """One ranking per matrix (or per row), cut at every proportion."""

        def scores(name: str) -> Tensor:
            weight = context.matrix(name)  # [d_out, d_in]
            magnitude = weight.abs().to(torch.promote_types(weight.dtype, torch.float32))
            channel = context.target.get(NORMS[self.config.norm], name)  # [d_in], float64
            norm = channel.sqrt() if self.config.norm == "pooled" else channel
            return magnitude * norm.to(magnitude.device, magnitude.dtype)  # [d_out, d_in]

        return locator.ranked_selections(
            context, proportions, scores, self.config.group, COUNTS[self.config.count]
        )


@locator.hookimpl
def register_localizers(register):  # type: ignore[no-untyped-def]
    """Register Wanda."""
    register(WandaLocalizer)
