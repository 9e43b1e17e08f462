"""Set difference with separate budgets (Wei et al. 2024, "Assessing the Brittleness of Safety
Alignment via Pruning and Low-Rank Modifications") and MathNeuro (Christ et al. 2024), its case
with one budget: the entries important for the target corpus and not for any control corpus.

Per decoder linear and corpus D, a score S(D) of every entry of the ``[d_out, d_in]`` weight:

- ``mathneuro``: S_ij = |W_ij| * A_j, A_j the sum over samples of the L2 norm of input channel j
  over the sample's real tokens;
- ``wanda``: S_ij = |W_ij| * sqrt(s_j), s_j the sum of X[t, j]^2 over all real tokens (Wei et
  al. use the mean over tokens; a constant factor changes no ranking);
- ``snip``: S_ij = sum over samples s of |W_ij * dL_s/dW_ij|, L_s the sample's mean next-token
  loss (Wei et al.'s "wandg"; the statistic ``weight_gradient_saliency``).

T_K(D) is the floor(K * numel) entries of largest S(D) in the matrix. ``set-difference`` selects
T_K(target) minus the union over controls of T_Q(control), where K is the proportion asked for
and Q is `control_proportion` (None: Q = K). In Wei et al.'s terms the target is the skill being
isolated (their safety data, top-q) and the controls the general data (their utility data,
top-p): q = K, p = Q. ``mathneuro`` is exactly ``set-difference`` with ``score = "mathneuro"``
and Q = K: both call one function, `set_difference`.

Unlike the reference codes: sums are exact (fp64 accumulation, not bf16), padding is masked,
all proportions are cut from one ranking per matrix, and the SNIP gradient is each sample's own
(Wei et al.'s batches hold one sample each, so this matches them) from batched passes. Ties at a
cut go to the lower flat index (`locator.top_indices`).

MathNeuro against the authors' code (bryanchrist/MathNeuro, MathNeuro.py), measured side by side
on tiny Llama and GPT-2 and SmolLM2-135M: with the differences below removed, both select the
same entries up to exact ties at a cut. ``mode = "faithful"`` (the default) is the paper's
formula; ``mode = "published"`` reproduces the code's arithmetic where it differs:

- bf16: the code loads the model in bf16 (the published mode runs its statistics pass on a bf16
  copy when the model is not bf16, its weights cast and its buffers kept, as
  ``from_pretrained(torch_dtype=bfloat16)`` keeps RoPE's ``inv_freq`` in fp32; a bf16 forward
  alone moves the selection by Jaccard 0.97-0.99) and accumulates the score of every entry in
  a bf16 running sum, one sample at a time (``acc = acc + bf16(|W| * bf16(norm))``). Once an
  increment falls below half an ulp of the sum it is lost: at the paper's 500 samples the
  simulated score error is 13-17%, and the skill-specific set shares only 0.07-0.77 (Jaccard)
  with the exact formula's. The paper's own selections were therefore substantially different
  from its formula's.
- batch size 1 with no padding mask (the published mode runs batch 1 in corpus order; in bf16
  the batch shape alone moves statistics by up to 2% relative, Jaccard 0.98-1.0; in fp32 the
  masked batched pass equals batch 1 to 2e-6);
- it hooks only ``nn.Linear``: GPT-2's ``Conv1D`` linears select nothing (the published mode
  selects nothing there either), and it scores every ``nn.Linear`` with a weight of its own,
  so an untied ``lm_head`` too (the published mode scores it: `scored_parameters` with
  ``head=True``), and never a parameter whose name contains "embed" (GPT-NeoX's ``embed_out``);
- ``int(K * numel)`` per matrix instead of floor with a guard against binary rounding (equal
  except where K * numel lands a hair below an integer);
- sampling is unseeded and the model is reloaded and the scores recomputed for every
  proportion (locator draws under a seed and cuts every proportion from one ranking: same
  result); with several controls it runs each alone (locator removes their union; with one
  control they agree).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

import locator

# The built-in statistic kinds the scores read (`locator.list_statistics()`).
INPUT_NORM_SUM = "input_norm_sum"
INPUT_SQUARE_SUM = "input_square_sum"
WEIGHT_SALIENCY = "weight_gradient_saliency"

_NOT_RANKED = torch.iinfo(torch.int32).max

Score = Callable[[locator.ActivationStats, str, Tensor], Tensor]
"""(corpus statistics, parameter name, |W| as [d_out, d_in]) -> scores [d_out, d_in]."""


def _input_norm(stats: locator.ActivationStats, name: str, magnitude: Tensor) -> Tensor:
    return magnitude * stats.get(INPUT_NORM_SUM, name).to(magnitude.device, magnitude.dtype)


def _pooled_norm(stats: locator.ActivationStats, name: str, magnitude: Tensor) -> Tensor:
    squares = stats.get(INPUT_SQUARE_SUM, name).sqrt()
    return magnitude * squares.to(magnitude.device, magnitude.dtype)


def _saliency(stats: locator.ActivationStats, name: str, magnitude: Tensor) -> Tensor:
    return stats.get(WEIGHT_SALIENCY, name).to(magnitude.device, magnitude.dtype)


SCORES: dict[str, tuple[str, Score]] = {
    "mathneuro": (INPUT_NORM_SUM, _input_norm),
    "wanda": (INPUT_SQUARE_SUM, _pooled_norm),
    "snip": (WEIGHT_SALIENCY, _saliency),
}
"""Score name -> (the statistic it reads, how it scores a matrix)."""


def set_difference(
    context: locator.LocalizationContext,
    proportions: Sequence[float],
    score: Score,
    control_proportion: float | None = None,
    counting: Callable[[float, int], int] = locator.top_count,
    scored: Callable[[str, locator.ScoredParameter], bool] = lambda name, parameter: True,
) -> list[dict[str, locator.Selection]]:
    """Per matrix and proportion K: the target's top count(K, numel) by `score` minus every
    control's top count(Q, numel), Q = `control_proportion` or K; `counting` is that count
    (floor, unless reproducing a code that counts otherwise). One ranking per matrix and corpus
    serves every proportion. Parameters that `scored` rejects are left out (select nothing)."""
    selections: list[dict[str, locator.Selection]] = [{} for _ in proportions]
    for name, parameter in context.parameters.items():
        if not scored(name, parameter):
            continue
        weight = context.matrix(name)  # [d_out, d_in]
        magnitude = weight.abs().to(torch.promote_types(weight.dtype, torch.float32))
        counts = [counting(p, parameter.numel) for p in proportions]
        if control_proportion is None:
            control_counts = counts
        else:
            control_counts = [counting(control_proportion, parameter.numel)] * len(counts)
        target_top = locator.top_indices(score(context.target, name, magnitude), max(counts)).cpu()
        # Rank of each target entry in the best-ranked control (or "not ranked").
        control_rank = torch.full((target_top.numel(),), _NOT_RANKED, dtype=torch.int32)
        for control in context.controls:
            ranks = torch.full((parameter.numel,), _NOT_RANKED, dtype=torch.int32)
            scores = score(control, name, magnitude)
            control_top = locator.top_indices(scores, max(control_counts)).cpu()
            ranks[control_top] = torch.arange(control_top.numel(), dtype=torch.int32)
            control_rank = torch.minimum(control_rank, ranks[target_top])
        for i, (count, control_count) in enumerate(zip(counts, control_counts, strict=True)):
            kept = target_top[:count][control_rank[:count] >= control_count]
            selections[i][name] = locator.Selection.from_indices(
                context.stored_indices(name, kept), parameter.shape
            )
    return selections


@dataclass(frozen=True, kw_only=True)
class SetDifferenceConfig(locator.Options):
    """The set difference's options (each field's help says what it does)."""

    score: Literal["wanda", "snip", "mathneuro"] = locator.option(
        "wanda",
        help="wanda: |W| x pooled input norm; snip: |W x gradient| summed over samples; "
        "mathneuro: |W| x summed per-sample input norms",
    )
    control_proportion: float | None = locator.option(
        None,
        minimum=0,
        maximum=1,
        help="the fraction Q of each matrix the controls' top sets take (none: the target's K)",
    )


class SetDifferenceLocalizer(locator.Localizer):
    """Top-K of the target's score per matrix minus the controls' top-Q (Wei et al. 2024)."""

    name = "set-difference"
    Config = SetDifferenceConfig
    statistics = frozenset({INPUT_SQUARE_SUM})  # the default config's; see __init__

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.settings: SetDifferenceConfig = self.config
        self.statistics = frozenset({SCORES[self.settings.score][0]})

    def localize_many(
        self, context: locator.LocalizationContext, proportions: Sequence[float]
    ) -> list[dict[str, locator.Selection]]:
        """One ranking per matrix and corpus, cut at every proportion."""
        _, score = SCORES[self.settings.score]
        return set_difference(context, proportions, score, self.settings.control_proportion)


@dataclass(frozen=True, kw_only=True)
class _SampleNorms(locator.StatisticKind):
    """Each sample's channel norms as a row, in corpus order: ``[samples, d_in]``."""

    def batch(self, observed: locator.Activations) -> Tensor:
        values = observed.values  # [batch, seq, d_in], the model's dtype
        return torch.stack(
            [
                values[row, :length].norm(p=2, dim=0).to(self.dtype)
                for row, length in enumerate(observed.lengths)
            ]
        )

    def merge(self, total: Tensor | None, value: Tensor) -> Tensor:
        return value if total is None else torch.cat([total, value])


INPUT_NORMS_BY_SAMPLE_BF16 = "input_norms_by_sample_bf16"
PUBLISHED_NORMS = _SampleNorms(
    name=INPUT_NORMS_BY_SAMPLE_BF16,
    site="linear_input",
    description="per sample and input channel j, ||X_s[:, j]||_2 rounded to bf16, from a "
    "bf16 forward at batch size 1, one row per sample in corpus order ([samples, d_in]; "
    "the untied head included): MathNeuro's published arithmetic",
    dtype=torch.bfloat16,
    forward=locator.Forward(dtype=torch.bfloat16, batch_size=1),
    head=True,
)


def published_score(stats: locator.ActivationStats, name: str, magnitude: Tensor) -> Tensor:
    """MathNeuro's published arithmetic: per sample s in corpus order, the bf16 product of
    |W| (rounded to bf16) and the sample's bf16 channel norms, added to a bf16 running sum
    (``acc = acc + product`` in bf16, so an increment below half an ulp of the sum is lost)."""
    norms = stats.get(INPUT_NORMS_BY_SAMPLE_BF16, name).to(magnitude.device)  # [samples, d_in]
    weight = magnitude.to(torch.bfloat16)  # [d_out, d_in]
    total = torch.zeros_like(weight)
    for sample in norms:
        total = total + weight * sample  # both bf16: each step rounds to bf16
    return total


def _published_count(proportion: float, numel: int) -> int:
    """The published code's count: ``int(numel * K)``."""
    return int(numel * proportion)


def _published_scores(name: str, parameter: locator.ScoredParameter) -> bool:
    """The published code hooks only `nn.Linear` (not GPT-2's `Conv1D`) and never selects a
    parameter whose name contains "embed"."""
    return not parameter.transposed and "embed" not in name


@dataclass(frozen=True, kw_only=True)
class MathNeuroConfig(locator.Options):
    """MathNeuro's options (each field's help says what it does)."""

    mode: Literal["faithful", "published"] = locator.option(
        "faithful",
        help="faithful: the paper's formula computed exactly; published: the authors' code's "
        "arithmetic (bf16 forward at batch 1, bf16 running sum, untied head, nn.Linear only, "
        "int(K x numel))",
    )


class MathNeuroLocalizer(SetDifferenceLocalizer):
    """Top-K of |W| x per-sample input norms on the target, minus the controls' top-K."""

    name = "mathneuro"
    Config = MathNeuroConfig
    statistics = frozenset({INPUT_NORM_SUM})  # the faithful mode's; see __init__

    def __init__(self, config: Any = None) -> None:
        locator.Localizer.__init__(self, config)
        self.settings = SetDifferenceConfig(score="mathneuro")
        self.published = self.config.mode == "published"
        if self.published:
            self.statistics = frozenset({INPUT_NORMS_BY_SAMPLE_BF16})
            self.scores_head = True

    def localize_many(
        self, context: locator.LocalizationContext, proportions: Sequence[float]
    ) -> list[dict[str, locator.Selection]]:
        """One ranking per matrix and corpus, cut at every proportion."""
        if not self.published:
            return super().localize_many(context, proportions)
        return set_difference(
            context,
            proportions,
            published_score,
            counting=_published_count,
            scored=_published_scores,
        )


@locator.hookimpl
def register_localizers(register):  # type: ignore[no-untyped-def]
    """Register MathNeuro and the general set difference."""
    register(MathNeuroLocalizer)
    register(SetDifferenceLocalizer)


@locator.hookimpl
def register_statistics(register):  # type: ignore[no-untyped-def]
    """Register the statistic of MathNeuro's published mode."""
    register(PUBLISHED_NORMS)
