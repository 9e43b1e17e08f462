"""Activation statistics: one batched, padding-aware forward pass per corpus.

Methods declare the statistic kinds they need; `collect_statistics` gathers all of them in a single
pass under `torch.no_grad()`, with forward hooks that exist only inside this module's context
manager. Statistics are small (a vector per scored linear, keyed by the scored parameter's name;
a vector per MLP, keyed by its down projection's parameter name, for neuron kinds), and accumulated
in fp64 from fp32 (or wider) per-batch values. Padding never counts: texts are
right-padded, so under the causal mask a real token never sees a pad; input statistics sum only
each row's real tokens and neuron counts are masked.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from locator.architecture import mlp_neurons, scored_parameters
from locator.errors import LocatorError

INPUT_NORM_SUM = "input_norm_sum"
"""Per input channel j of a linear: the sum over samples of ||X_s[:, j]||_2 (MathNeuro's A_j)."""

INPUT_SQUARE_SUM = "input_square_sum"
"""Per input channel j of a linear: the sum over all real tokens of X[t, j]^2 (Wanda's s_j)."""

NEURON_ACTIVE_COUNT = "neuron_active_count"
"""Per MLP neuron j (input channel j of the down projection, keyed by that parameter's name): the
number of real tokens where the neuron's activation is > 0 (LAPE). Counted on the pre-activation,
which is > 0 exactly when the activation is for ReLU, GELU and SiLU."""

INPUT_KINDS = frozenset({INPUT_NORM_SUM, INPUT_SQUARE_SUM})
NEURON_KINDS = frozenset({NEURON_ACTIVE_COUNT})
KINDS = INPUT_KINDS | NEURON_KINDS


@dataclass(frozen=True)
class ActivationStats:
    """The statistics of one corpus: ``values[kind][parameter name]`` is a float64 CPU vector."""

    corpus: str
    num_samples: int
    num_tokens: int
    values: Mapping[str, Mapping[str, Tensor]]

    def get(self, kind: str, parameter: str) -> Tensor:
        """The statistic `kind` of scored parameter `parameter`."""
        return self._kind(kind)[parameter]

    def names(self, kind: str) -> list[str]:
        """The parameter names that statistic `kind` is keyed by, in model order (for neuron
        kinds, the MLPs' down projections)."""
        return list(self._kind(kind))

    def _kind(self, kind: str) -> Mapping[str, Tensor]:
        if kind not in self.values:
            raise LocatorError(
                f"statistic {kind!r} was not collected for corpus {self.corpus!r}; "
                f"collected: {', '.join(sorted(self.values)) or '(none)'}. "
                "Declare it in the localizer's `statistics`."
            )
        return self.values[kind]


def check_batch_size(batch_size: object) -> None:
    """Raise unless `batch_size` is an integer >= 1."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise LocatorError(f"batch_size must be at least 1, got {batch_size!r}.")


def check_max_length(max_length: object) -> None:
    """Raise unless `max_length` is None (no truncation) or an integer >= 1."""
    if max_length is not None and (
        isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1
    ):
        raise LocatorError(
            f"max_length must be an integer >= 1 (tokens per text) or None for no "
            f"truncation, got {max_length!r}."
        )


def tokenize(tokenizer: object, texts: Sequence[str], max_length: int | None) -> list[list[int]]:
    """Token ids of each text, truncated to `max_length` tokens when given."""
    check_max_length(max_length)
    encoded = tokenizer(  # type: ignore[operator]
        list(texts),
        truncation=max_length is not None,
        max_length=max_length,
        add_special_tokens=True,
    )
    return [list(ids) for ids in encoded["input_ids"]]


def batches(
    token_ids: Sequence[Sequence[int]], batch_size: int, pad_id: int = 0
) -> Iterator[tuple[Tensor, Tensor]]:
    """Right-padded ``(input_ids, attention_mask)`` batches, ``[batch, seq]`` each.

    Texts are grouped longest first so that batches carry little padding; sums do not depend
    on the order. Texts with no tokens are skipped (they add nothing to any statistic).
    """
    order = sorted((i for i, ids in enumerate(token_ids) if ids), key=lambda i: -len(token_ids[i]))
    for start in range(0, len(order), batch_size):
        rows = [token_ids[i] for i in order[start : start + batch_size]]
        length = len(rows[0])
        input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for row, ids in enumerate(rows):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        yield input_ids, attention_mask


def _per_token(x: Tensor, mask: Tensor) -> Tensor:
    """`x` as ``[batch, seq, channels]``; some blocks (OPT's) flatten the tokens of a batch to
    ``[batch * seq, channels]`` around their MLP."""
    if x.shape[:-1] == mask.shape:
        return x
    if x.dim() == 2 and x.shape[0] == mask.numel():
        return x.view(*mask.shape, x.shape[-1])
    raise LocatorError(
        f"a hooked module saw a tensor of shape {list(x.shape)} for a batch of shape "
        f"{list(mask.shape)}; locator needs one row per token ([batch, seq, channels])."
    )


class _InputStatistics:
    """Accumulates the input-channel kinds of one linear from its forward pre-hook."""

    def __init__(self, kinds: frozenset[str], shared: dict[str, object]) -> None:
        self.kinds = kinds
        self.sums: dict[str, Tensor] = {}
        self.shared = shared  # the batch's mask and the last input seen (q, k, v share one)

    def __call__(self, module: nn.Module, args: tuple[Tensor, ...]) -> None:
        x = args[0]  # [batch, seq, d_in]
        if self.shared.get("last_input") is x:
            square_sums = self.shared["last_square_sums"]
        else:
            mask, lengths = self.shared["mask"], self.shared["lengths"]  # [batch, seq]; ints
            assert isinstance(mask, Tensor) and isinstance(lengths, list)
            tokens = _per_token(x, mask)  # [batch, seq, d_in]
            wide = tokens if x.dtype in (torch.float32, torch.float64) else tokens.float()
            # Rows are right-padded: summing each row's real tokens skips padding altogether.
            square_sums = torch.stack(
                [wide[row, :length].square().sum(0) for row, length in enumerate(lengths)]
            )  # [batch, d_in]
            self.shared["last_input"], self.shared["last_square_sums"] = x, square_sums
        assert isinstance(square_sums, Tensor)
        for kind in self.kinds:
            value = square_sums.sqrt() if kind == INPUT_NORM_SUM else square_sums
            total = value.sum(0, dtype=torch.float64)  # [d_in]
            if kind in self.sums:
                self.sums[kind] += total
            else:
                self.sums[kind] = total


class _NeuronActivity:
    """Counts, per neuron, the real tokens where the pre-activation is > 0 (a forward hook on
    the linear that computes the pre-activation)."""

    def __init__(self, shared: dict[str, object]) -> None:
        self.counts: Tensor | None = None
        self.shared = shared  # the batch's mask

    def __call__(self, module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        mask = self.shared["mask"]  # [batch, seq]
        assert isinstance(mask, Tensor)
        tokens = _per_token(output, mask)  # [batch, seq, I]
        active = (tokens > 0) & mask.to(output.device, torch.bool)[:, :, None]  # [batch, seq, I]
        counts = active.sum(dim=(0, 1))  # [I], int64: exact
        self.counts = counts if self.counts is None else self.counts + counts

    def total(self) -> Tensor:
        """The counts so far, as a float64 CPU vector (exact below 2**53 tokens)."""
        assert self.counts is not None, "no batch was seen"
        return self.counts.to("cpu", torch.float64)


@contextmanager
def _hooks(
    model: nn.Module,
    hooks: Mapping[str, _InputStatistics],
    forward_hooks: Mapping[str, _NeuronActivity],
) -> Iterator[None]:
    """Forward pre-hooks and forward hooks on the named modules, removed on exit, also on
    exceptions."""
    modules = dict(model.named_modules())
    handles = []
    try:
        for path, hook in hooks.items():
            handles.append(modules[path].register_forward_pre_hook(hook))
        for path, forward_hook in forward_hooks.items():
            handles.append(modules[path].register_forward_hook(forward_hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _input_device(model: nn.Module) -> torch.device:
    """Where token ids go: the input embedding's device, since with a device map (accelerate)
    the blocks sit on other devices (each hook accumulates on its own module's device); the
    first parameter's for a model without `get_input_embeddings`."""
    embeddings = getattr(model, "get_input_embeddings", None)
    weight = embeddings().weight if callable(embeddings) else next(model.parameters())
    return weight.device


def collect_statistics(
    model: nn.Module,
    tokenizer: object,
    texts: Sequence[str],
    *,
    kinds: frozenset[str] | set[str],
    batch_size: int = 8,
    max_length: int | None = None,
    corpus: str = "",
    progress: bool = True,
) -> ActivationStats:
    """Run one batched forward pass over `texts` and return the statistics `kinds`."""
    from tqdm.auto import tqdm

    unknown = set(kinds) - KINDS
    if unknown:
        raise LocatorError(
            f"unknown statistic kind(s) {sorted(unknown)}; known: {', '.join(sorted(KINDS))}."
        )
    if not texts:
        raise LocatorError(f"corpus {corpus or '(unnamed)'} is empty: give at least one text.")
    check_batch_size(batch_size)
    parameters = scored_parameters(model)
    token_ids = tokenize(tokenizer, texts, max_length)
    num_tokens = sum(len(ids) for ids in token_ids)
    if num_tokens == 0:
        raise LocatorError(f"corpus {corpus or '(unnamed)'} has no tokens after tokenization.")

    shared: dict[str, object] = {}
    input_kinds = frozenset(kinds) & INPUT_KINDS
    hooks = {p.module: _InputStatistics(input_kinds, shared) for p in parameters.values()}
    hooks = hooks if input_kinds else {}
    neurons = mlp_neurons(model) if NEURON_ACTIVE_COUNT in kinds else {}
    counters = {site.pre_activation: _NeuronActivity(shared) for site in neurons.values()}
    if not hooks and not counters:  # nothing to observe (a random baseline): no forward pass
        return ActivationStats(
            corpus=corpus, num_samples=len(texts), num_tokens=num_tokens, values={}
        )
    # The head is not scored, so the pass stops at the decoder: no logits are computed.
    body = getattr(model, "base_model", model)
    device = _input_device(model)
    was_training = model.training
    model.eval()
    try:
        with _hooks(model, hooks, counters), torch.no_grad():
            steps = tqdm(
                batches(token_ids, batch_size),
                total=-(-sum(1 for ids in token_ids if ids) // batch_size),
                desc=f"statistics {corpus}".strip(),
                disable=not progress,
                leave=False,
            )
            for input_ids, attention_mask in steps:
                shared.clear()
                shared["mask"] = attention_mask.to(device)
                shared["lengths"] = attention_mask.sum(1).tolist()
                body(input_ids=input_ids.to(device), attention_mask=shared["mask"], use_cache=False)
    finally:
        shared.clear()
        model.train(was_training)
    values = {
        kind: {name: hooks[p.module].sums[kind].cpu() for name, p in parameters.items()}
        for kind in input_kinds
    }
    if neurons:
        values[NEURON_ACTIVE_COUNT] = {
            name: counters[site.pre_activation].total() for name, site in neurons.items()
        }
    return ActivationStats(
        corpus=corpus, num_samples=len(texts), num_tokens=num_tokens, values=values
    )
