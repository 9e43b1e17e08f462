"""LAPE (Tang et al. 2024, "Language-Specific Neurons"): the MLP neurons whose activity is
concentrated on the target corpus, by low entropy of activation probability across corpora.

A neuron is channel j of an MLP's hidden layer (Llama: of ``act_fn(gate_proj(x))``; GPT-2, Phi,
OPT: of ``act(fc1(x))``). For the target and each control corpus k (the paper's "languages"):

1. P[n, k] = real tokens of k on which neuron n is active (activation > 0) / real tokens of k.
2. p = P / sum_k P (0 where the sum is 0); entropy H[n] = -sum_k p log p (0 log 0 = 0).
3. tau = the value at rank round(filter_rate * N) of all N entries of P, ascending (rank 1 is
   the smallest, as ``torch.kthvalue`` in the reference; a rank below 1 is taken as 1). A
   neuron with no corpus where P > tau gets H = +inf.
4. The round(top_rate * L * I) neurons of lowest entropy are kept (ties: model order).
5. A kept neuron belongs to corpus k when P[n, k] > tau2, the same rank value for
   `activation_bar_ratio`; the skill's neurons are those belonging to the target.

`proportion` is `top_rate`, a fraction of all MLP neurons; the result is a neuron-level
localization whose selections are those neurons' columns of the down projection, and it
reports the parameters touched like any other.

Against the reference code (RUCAIBox/Language-Specific-Neurons), measured side by side on tiny
Llama and GPT-2 and SmolLM2-135M: the same neurons up to exact entropy ties at the cut, except
for the input unit. The original concatenates a corpus into one token stream cut into rows of the
model's maximum length (attention crosses documents; the tail is dropped); locator reads one row
per text by default, which gives Jaccard 0.71-0.94 against it. Ask for the original's input with
``pack = N`` (`locator.localize(..., pack=N)`, ``--pack N``, a suite's ``pack``): a corpus
option of the statistics pass, not of LAPE. The original also runs vLLM, which computes fp32
checkpoints in fp16 (a forward dtype moves the selection by Jaccard 0.97-0.99).

The MathNeuro repository's LAPE.py, which the MathNeuro paper's LAPE rows come from, has bugs
locator does not reproduce (there is no published mode of it here yet): it intervenes with the
mask of the first calibration dataset instead of the math one (on the measured inputs that set
is empty, so its LAPE rows prune nothing), keeps only the last calibration sample, counts
padding, divides by sequences instead of tokens, and never resets its counters between
datasets. Each alone changes the set by Jaccard 0.1-0.5; all fixed, it matches locator's
(0.93-0.99, the rest is bf16).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

import locator
from locator.localization import Localization
from locator.localizer import LocalizationContext, Localizer
from locator.stats import NEURON_ACTIVE_COUNT


@dataclass(frozen=True, kw_only=True)
class LapeConfig:
    """`filter_rate`: the quantile of all activation probabilities a neuron must exceed on some
    corpus to be kept; `activation_bar_ratio`: the quantile it must exceed on the target to
    count as the target's (both the reference's 0.95)."""

    filter_rate: float = 0.95
    activation_bar_ratio: float = 0.95

    def __post_init__(self) -> None:
        for key in ("filter_rate", "activation_bar_ratio"):
            value = getattr(self, key)
            if not 0 <= value <= 1:
                raise ValueError(f"{key} must be in [0, 1], got {value!r}.")


class LapeLocalizer(Localizer):
    """MLP neurons of lowest activation entropy across corpora that belong to the target."""

    name = "lape"
    Config = LapeConfig
    statistics = frozenset({NEURON_ACTIVE_COUNT})
    min_controls = 1

    def localize_many(
        self, context: LocalizationContext, proportions: Sequence[float]
    ) -> list[Localization]:
        """One entropy ranking of all neurons, cut at every proportion."""
        corpora = (context.target, *context.controls)
        names = context.target.names(NEURON_ACTIVE_COUNT)
        sizes = [context.target.get(NEURON_ACTIVE_COUNT, name).numel() for name in names]
        # Activation probability of every neuron (layers concatenated) in every corpus: [N, K].
        probability = torch.stack(
            [
                torch.cat([stats.get(NEURON_ACTIVE_COUNT, name) for name in names])
                / stats.num_tokens
                for stats in corpora
            ],
            dim=1,
        )
        entropy = _entropy(probability)  # [N]
        tau = _rank_value(probability, self.config.filter_rate)
        entropy[~(probability > tau).any(dim=1)] = torch.inf
        order = torch.sort(entropy, stable=True).indices  # lowest entropy first, ties in order
        target_bar = _rank_value(probability, self.config.activation_bar_ratio)
        belongs = probability[:, 0] > target_bar  # [N]: the target is corpus 0
        starts = torch.tensor([0, *sizes]).cumsum(0)
        results = []
        for proportion in proportions:
            kept = order[: round(proportion * entropy.numel())]
            chosen = torch.sort(kept[belongs[kept]]).values
            neurons = {
                name: chosen[(chosen >= starts[i]) & (chosen < starts[i + 1])] - starts[i]
                for i, name in enumerate(names)
            }
            results.append(self.neuron_localization(context, neurons, proportion))
        return results


def _entropy(probability: Tensor) -> Tensor:
    """Entropy over corpora of each row of ``[N, K]`` probabilities, normalized per row."""
    total = probability.sum(dim=1, keepdim=True)  # [N, 1]
    shares = torch.where(total > 0, probability / total, 0.0)  # [N, K]
    return -torch.where(shares > 0, shares * shares.log(), 0.0).sum(dim=1)


def _rank_value(values: Tensor, rate: float) -> Tensor:
    """The value at 1-based rank ``round(rate * numel)`` of `values` ascending (at least 1)."""
    rank = min(max(round(rate * values.numel()), 1), values.numel())
    return torch.sort(values.flatten()).values[rank - 1]


@locator.hookimpl
def register_localizers(register):  # type: ignore[no-untyped-def]
    """Register LAPE."""
    register(LapeLocalizer)
