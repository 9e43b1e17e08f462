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

``mode = "published"`` reproduces the MathNeuro repository's LAPE.py instead, which the
MathNeuro paper's LAPE rows come from (METHODS.md lists its bugs; each alone changes the set by
Jaccard 0.1-0.5, and all fixed it matches the faithful mode at 0.93-0.99, the rest is bf16):

- it keeps only the last calibration sample of each dataset (it rewrites its text file for each
  sample) and feeds that text's lines (written with two trailing newlines and read back with
  ``readlines()``) as one batch, padded by the tokenizer, truncated to the model's
  ``max_position_embeddings``, with no attention mask, to a bf16 model; a tokenizer without a pad
  token gets "[PAD]" and the embeddings are resized as transformers does (mean of the old rows;
  locator seeds its 1e-9-covariance noise);
- it counts the positions where act_fn(gate) > 0, padding included, and divides by the number of
  lines, not tokens;
- it never resets its counters: dataset k's probability is the count over datasets 1..k, in the
  order calibration datasets (locator's controls), then the train set (the target);
- it applies the first dataset's neurons (the first control's), not the target's; on the
  measured inputs that set is empty and its LAPE rows prune nothing.

Where no dataset has a neuron above the bar the script fails; the published mode selects nothing.
`max_length` and `pack` do not apply to its pass, which truncates as the script does.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

import locator

NEURON_ACTIVE_COUNT = "neuron_active_count"  # the built-in kind of the faithful mode


def script_lines(text: str) -> list[str]:
    """The rows LAPE.py feeds for one sample: ``f"{text}\\n\\n"`` written to a text file and read
    back with ``readlines()`` (universal newlines: ``\\r\\n`` and ``\\r`` read as ``\\n``)."""
    read = f"{text}\n\n".replace("\r\n", "\n").replace("\r", "\n")
    return [line + "\n" for line in read.split("\n")[:-1]]


@dataclass(frozen=True)
class LastSampleLines(locator.Feed):
    """LAPE.py's input for one dataset: the lines of its last sample, one padded batch."""

    def prepare(
        self, model: nn.Module, tokenizer: Any, texts: Sequence[str]
    ) -> tuple[nn.Module, list[Tensor]]:
        """The lines of ``texts[-1]`` as LAPE.py tokenizes them; the model resized on a copy
        when the pad token it adds has no embedding row."""
        tokenizer = copy.deepcopy(tokenizer)
        if tokenizer.pad_token is None:
            tokenizer.add_special_tokens({"pad_token": "[PAD]"})
        if tokenizer.pad_token_id >= model.get_input_embeddings().num_embeddings:  # type: ignore[operator]
            model = copy.deepcopy(model)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model.resize_token_embeddings(len(tokenizer))  # type: ignore[operator]
        limit = getattr(model.config, "max_position_embeddings", None)
        encoded = tokenizer(
            script_lines(texts[-1]),
            return_tensors="pt",
            padding=True,
            truncation=limit is not None,
            max_length=limit,
        )
        return model, [encoded["input_ids"]]


@dataclass(frozen=True, kw_only=True)
class _ActiveAndRows(locator.StatisticKind):
    def batch(self, observed: locator.Activations) -> Tensor:
        active = (observed.values > 0).sum(dim=(0, 1))  # [neurons], padding included
        return torch.stack([active, torch.full_like(active, observed.values.shape[0])])


LAPE_PUBLISHED_COUNT = "lape_published_active_count"
PUBLISHED_COUNT = _ActiveAndRows(
    name=LAPE_PUBLISHED_COUNT,
    site="neuron_pre_activation",
    description="per MLP neuron, as the MathNeuro repository's LAPE.py counts: row 0 the "
    "positions (padding included) where the pre-activation is > 0 in the lines of the corpus's "
    "last text fed as one unmasked batch to a bf16 model, row 1 the lines ([2, neurons])",
    dtype=torch.int64,
    forward=locator.Forward(dtype=torch.bfloat16, feed=LastSampleLines()),
)


@dataclass(frozen=True, kw_only=True)
class LapeConfig(locator.Options):
    """LAPE's options (each field's help says what it does)."""

    filter_rate: float = locator.option(
        0.95,
        minimum=0,
        maximum=1,
        help="the quantile of all activation probabilities a neuron must exceed on some corpus "
        "to be kept",
    )
    activation_bar_ratio: float = locator.option(
        0.95,
        minimum=0,
        maximum=1,
        help="the quantile it must exceed on the target to count as the target's",
    )
    mode: Literal["faithful", "published"] = locator.option(
        "faithful",
        help="faithful: the paper's formula; published: the MathNeuro repository's LAPE.py",
    )


class LapeLocalizer(locator.Localizer):
    """MLP neurons of lowest activation entropy across corpora that belong to the target."""

    name = "lape"
    Config = LapeConfig
    statistics = frozenset({NEURON_ACTIVE_COUNT})  # the faithful mode's; see __init__
    min_controls = 1

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.published = self.config.mode == "published"
        if self.published:
            self.statistics = frozenset({LAPE_PUBLISHED_COUNT})

    def localize_many(
        self, context: locator.LocalizationContext, proportions: Sequence[float]
    ) -> list[locator.Neurons]:
        """One entropy ranking of all neurons, cut at every proportion."""
        kind = LAPE_PUBLISHED_COUNT if self.published else NEURON_ACTIVE_COUNT
        names = context.target.names(kind)
        # Activation probability of every neuron (layers concatenated) in every corpus, [N, K];
        # the neurons applied are those that belong to corpus 0.
        probability = (_published_probability if self.published else _probability)(context, names)
        entropy = _entropy(probability)  # [N]
        tau = _rank_value(probability, self.config.filter_rate)
        entropy[~(probability > tau).any(dim=1)] = torch.inf
        order = torch.sort(entropy, stable=True).indices  # lowest entropy first, ties in order
        bar = _rank_value(probability, self.config.activation_bar_ratio)
        belongs = probability[:, 0] > bar  # [N]
        kept = [order[: round(proportion * entropy.numel())] for proportion in proportions]
        sizes = {name: context.parameters[name].d_in for name in names}
        return [locator.split_neurons(torch.sort(top[belongs[top]]).values, sizes) for top in kept]


def _probability(context: locator.LocalizationContext, names: list[str]) -> Tensor:
    """Activation probabilities, ``[N, K]``: per corpus (the target first, then the controls),
    the real tokens on which each neuron is active over the corpus's real tokens."""
    return torch.stack(
        [
            torch.cat([stats.get(NEURON_ACTIVE_COUNT, name) for name in names]) / stats.num_tokens
            for stats in (context.target, *context.controls)
        ],
        dim=1,
    )


def _published_probability(context: locator.LocalizationContext, names: list[str]) -> Tensor:
    """LAPE.py's activation probabilities, ``[N, K]``: datasets in its order (the controls, then
    the target), each column the active count summed over the datasets up to it (its counters
    are never reset) over that dataset's own number of lines; column 0 is the first control's,
    the set LAPE.py applies."""
    corpora = (*context.controls, context.target)
    counts = [
        torch.cat([stats.get(LAPE_PUBLISHED_COUNT, name)[0] for name in names]) for stats in corpora
    ]
    lines = torch.tensor(
        [int(stats.get(LAPE_PUBLISHED_COUNT, names[0])[1, 0]) for stats in corpora]
    )
    return torch.stack(counts, dim=1).cumsum(dim=1) / lines  # float32, as LAPE.py divides


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


@locator.hookimpl
def register_statistics(register):  # type: ignore[no-untyped-def]
    """Register the statistic of LAPE's published mode."""
    register(PUBLISHED_COUNT)
