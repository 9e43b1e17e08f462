"""Statistics: one batched, padding-aware pass per corpus, for every kind the methods declare.

A statistic kind is a `StatisticKind` object: a name, the site it observes (`Site`: a scored
linear's input, an MLP's neuron pre-activations or activations, or a scored weight's gradient),
how one batch contributes (`batch`), how contributions merge (`merge`, a sum by default) and the
dtype it accumulates in. The built-in kinds are in `KINDS`; plugins add kinds with the
``register_statistics`` hook, so a method can bring a statistic the core has never heard of.
`collect_statistics` gathers the union of the kinds asked for in one pass per corpus, with hooks
that exist only inside this module's context manager. Activation kinds run under
`torch.no_grad()` through the decoder alone; if any kind observes gradients, the same pass runs
the whole model, takes each sample's mean next-token loss on its real tokens and backpropagates
their sum once per batch (weights themselves never get a ``.grad``). That pass holds what a
training step's forward holds (activations for the backward, logits ``[batch, seq, vocab]``;
lower `batch_size` for long texts and large vocabularies) plus one weight-sized accumulator per
scored matrix and gradient kind, but no weight gradients or optimizer state.

Padding never counts: texts are right-padded, so under the causal mask a real token never sees a
pad; every observation exposes only each row's real tokens (`Activations.lengths`, `.mask`) and
padded positions carry no loss. Per-sample quantities of one tensor are computed once and shared
by every kind and every linear that reads the same tensor (q, k and v read one input).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from locator.architecture import mlp_neurons, scored_parameters
from locator.errors import LocatorError
from locator.plugins import registry

Site = Literal["linear_input", "neuron_pre_activation", "neuron_activation", "weight_gradient"]
"""Where a kind looks, and what it is keyed by:

- ``linear_input``: the input ``[batch, seq, d_in]`` of every scored linear, keyed by its
  weight's parameter name;
- ``neuron_pre_activation``: the output ``[batch, seq, neurons]`` of each MLP's pre-activation
  linear (gate, ``fc1``), keyed by the MLP's down-projection parameter name;
- ``neuron_activation``: the input ``[batch, seq, neurons]`` of each MLP's down projection (the
  neurons' activations), keyed by the down-projection parameter name;
- ``weight_gradient``: per sample, the gradient of the sample's mean next-token loss with respect
  to every scored weight (`WeightGradients`), keyed by the parameter name.
"""

SITES: tuple[str, ...] = get_args(Site)


def _wide(x: Tensor) -> Tensor:
    """`x` in fp32, or as it is when it is fp32 or fp64 already."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


class Activations:
    """One hooked tensor of one batch, with its padding: what an activation kind observes.

    `values` is ``[batch, seq, channels]`` in the model's dtype, `mask` ``[batch, seq]`` (bool,
    True on real tokens) and `lengths` the real tokens of each row (rows are right-padded, so row
    b's real tokens are ``values[b, :lengths[b]]``). The per-sample reductions are computed once
    per tensor, in fp32 or wider, and shared by every kind and linear that sees the tensor.
    """

    def __init__(self, values: Tensor, mask: Tensor, lengths: list[int]) -> None:
        self.values = _per_token(values, mask)  # [batch, seq, channels]
        self.mask = mask
        self.lengths = lengths
        self._memo: dict[str, Tensor] = {}

    def wide(self) -> Tensor:
        """`values` in fp32, or wider when the model computes wider."""
        return _wide(self.values)

    def sample_square_sums(self) -> Tensor:
        """Per sample and channel, the sum of squares over the sample's real tokens:
        ``[batch, channels]``."""
        if "square" not in self._memo:
            wide = self.wide()
            # Rows are right-padded: summing each row's real tokens skips padding altogether.
            self._memo["square"] = torch.stack(
                [wide[row, :length].square().sum(0) for row, length in enumerate(self.lengths)]
            )
        return self._memo["square"]

    def sample_sums(self) -> Tensor:
        """Per sample and channel, the sum over the sample's real tokens: ``[batch, channels]``."""
        if "sum" not in self._memo:
            wide = self.wide()
            self._memo["sum"] = torch.stack(
                [wide[row, :length].sum(0) for row, length in enumerate(self.lengths)]
            )
        return self._memo["sum"]

    def sample_means(self) -> Tensor:
        """Per sample and channel, the mean over the sample's real tokens: ``[batch, channels]``."""
        lengths = torch.tensor(self.lengths, device=self.values.device)[:, None]
        return self.sample_sums() / lengths

    def real(self) -> Tensor:
        """A ``[batch, seq, 1]`` bool mask of real tokens, on the values' device."""
        return self.mask.to(self.values.device, torch.bool)[:, :, None]


class WeightGradients:
    """What a gradient kind observes for one scored weight and one batch.

    `weight` is the weight as ``[d_out, d_in]`` (a view of the parameter); `samples()` yields,
    for each sample s of the batch, ``dL_s/dW`` as ``[d_out, d_in]`` (fp32 or wider), where L_s
    is the mean next-token cross-entropy over the sample's real tokens. It is built from the
    linear's input and output gradient restricted to the sample's tokens (``g_s^T x_s``), so the
    batch never holds more than one weight-sized gradient at a time and batching does not change
    it.
    """

    def __init__(self, weight: Tensor, inputs: Tensor, grad_outputs: Tensor, lengths: list[int]):
        self.weight = weight  # [d_out, d_in]
        self._inputs = inputs  # [batch, seq, d_in]
        self._grad_outputs = grad_outputs  # [batch, seq, d_out]
        self.lengths = lengths

    def samples(self) -> Iterator[Tensor]:
        """``dL_s/dW`` (``[d_out, d_in]``, fp32 or wider) for each sample s of the batch."""
        for row, length in enumerate(self.lengths):
            x = _wide(self._inputs[row, :length])  # [seq, d_in]
            g = _wide(self._grad_outputs[row, :length])  # [seq, d_out]
            yield g.t() @ x


class Feed:
    """What a pass feeds the model instead of the corpus's padded, masked token rows: the input
    of a published code, reproduced. Subclass it as a frozen dataclass (its repr is part of the
    statistics' cache key) and implement `prepare`."""

    def prepare(
        self, model: nn.Module, tokenizer: Any, texts: Sequence[str]
    ) -> tuple[nn.Module, list[Tensor]]:
        """The model to run (`model`, or a copy when the feed must change it; never change
        `model` itself) and the ``[batch, seq]`` input ids to feed it. Each batch runs without an
        attention mask, and every position, padding included, is observed as a token."""
        raise NotImplementedError(f"{type(self).__name__} does not implement prepare()")


@dataclass(frozen=True, kw_only=True)
class Forward:
    """How a pass feeds the model: what a kind may require beyond the default batched pass.

    `dtype`: the dtype the model computes in (None: as loaded; otherwise the pass runs on a copy
    whose weights are cast to it, buffers untouched, as a published code that loads the model in
    that dtype computes);
    `batch_size`: rows per forward (None: the caller's; 1 also keeps the rows in corpus order,
    for running sums that depend on it); `feed`: a `Feed` that decides the input instead of the
    corpus's token rows (`batch_size`, `max_length` and `pack` then do not apply). Kinds with
    equal `Forward`s share one pass.
    """

    dtype: torch.dtype | None = None
    batch_size: int | None = None
    feed: Feed | None = None


@dataclass(frozen=True, kw_only=True)
class StatisticKind:
    """A statistic methods can declare: subclass it, implement `batch`, register an instance.

    `name` is what methods list in their `statistics` and what `ActivationStats.get` takes;
    `site` what it observes (`Site`); `description` one line on what it computes; `dtype` the
    dtype it accumulates and is stored in; `version`, bumped when the computation changes, is
    part of `identity`, which keys the on-disk cache. `batch(observed)` returns one batch's
    contribution for one key (`observed` is an `Activations` for activation sites, a
    `WeightGradients` for ``weight_gradient``); `merge` folds it into the running total (a sum;
    override it for a maximum, say). `forward` is the pass it needs (`Forward`; the default is
    the shared batched one); `head`, for a ``linear_input`` kind, makes it observe the untied
    output head's input too (`locator.architecture.scored_parameters` with ``head=True``).
    Example::

        @dataclass(frozen=True, kw_only=True)
        class InputAbsMax(StatisticKind):
            def batch(self, observed):
                real = observed.wide().abs() * observed.real()  # padding counts as 0
                return real.amax(dim=(0, 1)).double()  # [d_in]

            def merge(self, total, value):
                return value if total is None else torch.maximum(total, value)

        INPUT_ABS_MAX = InputAbsMax(name="input_abs_max", site="linear_input",
                                    description="per input channel, the largest |x| seen")
    """

    name: str
    site: Site
    description: str
    dtype: torch.dtype = torch.float64
    version: int = 1
    forward: Forward = Forward()
    head: bool = False

    def __post_init__(self) -> None:
        if self.site not in SITES:
            raise LocatorError(
                f"statistic {self.name!r}: site must be one of {', '.join(SITES)}, "
                f"got {self.site!r}."
            )

    def batch(self, observed: Any) -> Tensor:
        """One batch's contribution for one key (a channel vector, or a weight-sized matrix)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement batch()")

    def merge(self, total: Tensor | None, value: Tensor) -> Tensor:
        """Fold one batch's `value` into the running `total` (None before the first batch)."""
        value = value.to(self.dtype)
        return value.clone() if total is None else total.add_(value)

    @property
    def identity(self) -> str:
        """What a cached value was computed by: name, class, version and dtype."""
        cls = type(self)
        identity = f"{self.name}:{cls.__module__}.{cls.__qualname__}:v{self.version}:{self.dtype}"
        if self.forward != Forward() or self.head:
            identity += f":{self.forward}:head={self.head}"
        return identity


# The built-in kinds: generic computations, named by what they compute.


@dataclass(frozen=True, kw_only=True)
class _InputNormSum(StatisticKind):
    def batch(self, observed: Activations) -> Tensor:
        return observed.sample_square_sums().sqrt().sum(0, dtype=torch.float64)


@dataclass(frozen=True, kw_only=True)
class _InputSquareSum(StatisticKind):
    def batch(self, observed: Activations) -> Tensor:
        return observed.sample_square_sums().sum(0, dtype=torch.float64)


@dataclass(frozen=True, kw_only=True)
class _PositiveCount(StatisticKind):
    def batch(self, observed: Activations) -> Tensor:
        return ((observed.values > 0) & observed.real()).sum(dim=(0, 1))  # int64: exact


@dataclass(frozen=True, kw_only=True)
class _SampleMeanSum(StatisticKind):
    def batch(self, observed: Activations) -> Tensor:
        return observed.sample_means().sum(0, dtype=torch.float64)


@dataclass(frozen=True, kw_only=True)
class _SampleMeanSquareSum(StatisticKind):
    def batch(self, observed: Activations) -> Tensor:
        return observed.sample_means().double().square().sum(0)


@dataclass(frozen=True, kw_only=True)
class _WeightGradientSaliency(StatisticKind):
    def batch(self, observed: WeightGradients) -> Tensor:
        magnitude = _wide(observed.weight.detach().abs())  # [d_out, d_in]
        total = torch.zeros_like(magnitude)
        for gradient in observed.samples():
            total += gradient.abs_()
        return total.mul_(magnitude)  # sum_s |W * G_s| = |W| * sum_s |G_s|


@dataclass(frozen=True, kw_only=True)
class _SampleNorms(StatisticKind):
    """Each sample's channel norms as a row, in corpus order: ``[samples, d_in]``."""

    def batch(self, observed: Activations) -> Tensor:
        values = observed.values  # [batch, seq, d_in], the model's dtype
        return torch.stack(
            [
                values[row, :length].norm(p=2, dim=0).to(self.dtype)
                for row, length in enumerate(observed.lengths)
            ]
        )

    def merge(self, total: Tensor | None, value: Tensor) -> Tensor:
        return value if total is None else torch.cat([total, value])


INPUT_NORM_SUM = "input_norm_sum"
INPUT_SQUARE_SUM = "input_square_sum"
NEURON_ACTIVE_COUNT = "neuron_active_count"
NEURON_MEAN_SUM = "neuron_sample_mean_sum"
NEURON_MEAN_SQUARE_SUM = "neuron_sample_mean_square_sum"
WEIGHT_SALIENCY = "weight_gradient_saliency"
WEIGHT_SALIENCY_BF16 = "weight_gradient_saliency_bf16"
INPUT_NORMS_BY_SAMPLE_BF16 = "input_norms_by_sample_bf16"

_SALIENCY = (
    "per entry of each scored weight, the sum over samples of |W * dL_s/dW|, L_s the sample's "
    "mean next-token loss on its real tokens ([d_out, d_in]; one weight-sized accumulator)"
)
KINDS: tuple[StatisticKind, ...] = (
    _InputNormSum(
        name=INPUT_NORM_SUM,
        site="linear_input",
        description="per input channel j, the sum over samples of ||X_s[:, j]||_2 over the "
        "sample's real tokens",
    ),
    _InputSquareSum(
        name=INPUT_SQUARE_SUM,
        site="linear_input",
        description="per input channel j, the sum over all real tokens of X[t, j]^2",
    ),
    _PositiveCount(
        name=NEURON_ACTIVE_COUNT,
        site="neuron_pre_activation",
        description="per MLP neuron, the real tokens where its pre-activation is > 0 (exactly "
        "where the activation is, for ReLU, GELU and SiLU)",
    ),
    _SampleMeanSum(
        name=NEURON_MEAN_SUM,
        site="neuron_activation",
        description="per MLP neuron, the sum over samples of its mean activation over the "
        "sample's real tokens",
    ),
    _SampleMeanSquareSum(
        name=NEURON_MEAN_SQUARE_SUM,
        site="neuron_activation",
        description="per MLP neuron, the sum over samples of the square of its mean activation "
        "over the sample's real tokens",
    ),
    _WeightGradientSaliency(
        name=WEIGHT_SALIENCY, site="weight_gradient", description=_SALIENCY, dtype=torch.float32
    ),
    _WeightGradientSaliency(
        name=WEIGHT_SALIENCY_BF16,
        site="weight_gradient",
        description=_SALIENCY + ", accumulated in bf16",
        dtype=torch.bfloat16,
    ),
    _SampleNorms(
        name=INPUT_NORMS_BY_SAMPLE_BF16,
        site="linear_input",
        description="per sample and input channel j, ||X_s[:, j]||_2 rounded to bf16, from a "
        "bf16 forward at batch size 1, one row per sample in corpus order ([samples, d_in]; "
        "the untied head included): MathNeuro's published arithmetic",
        dtype=torch.bfloat16,
        forward=Forward(dtype=torch.bfloat16, batch_size=1),
        head=True,
    ),
)
"""The built-in statistic kinds; `statistics()` adds those registered by plugins."""


def statistics() -> dict[str, StatisticKind]:
    """Every statistic kind by name: the built-in ones, then those plugins register with
    ``register_statistics``."""
    registered = registry(
        "register_statistics", "statistic", lambda kind: kind.name, expected=StatisticKind
    )
    found = {kind.name: kind for kind in KINDS}
    for name in registered.names():
        if name in found:
            raise LocatorError(
                f"statistic {name!r} is built into locator and registered again by plugin "
                f"{registered.source(name)!r}; give the plugin's statistic another name."
            )
        found[name] = registered.get(name)
    return found


def list_statistics() -> list[str]:
    """Names of the statistic kinds methods can declare."""
    return sorted(statistics())


def get_statistic(name: str) -> StatisticKind:
    """The statistic kind called `name` (unknown names get a did-you-mean)."""
    from locator.errors import UnknownNameError

    found = statistics()
    if name not in found:
        raise UnknownNameError("statistic", name, found)
    return found[name]


@dataclass(frozen=True)
class ActivationStats:
    """The statistics of one corpus: ``values[kind][parameter name]`` is a CPU tensor in the
    kind's dtype, a vector over channels (activation sites) or a ``[d_out, d_in]`` matrix
    (``weight_gradient``)."""

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


def check_rows(max_length: int | None, pack: int | None) -> None:
    """Check how a corpus is to become token rows (before any model loads): `pack` a row length
    >= 1 or None, and not together with `max_length`."""
    if pack is None:
        return
    if isinstance(pack, bool) or not isinstance(pack, int) or pack < 1:
        raise LocatorError(f"pack must be a row length in tokens (an int >= 1), got {pack!r}.")
    if max_length is not None:
        raise LocatorError(
            f"give either max_length ({max_length}) or pack ({pack}), not both: packed rows are "
            "cut to the pack length."
        )


def token_rows(
    tokenizer: object, texts: Sequence[str], max_length: int | None, pack: int | None = None
) -> list[list[int]]:
    """The token rows a statistics pass feeds the model: how a corpus becomes its samples.

    By default one row per text (truncated to `max_length` tokens when given). With `pack` = N,
    the corpus is read as LAPE's original code reads it: every text's token ids (as the
    tokenizer encodes it, special tokens included), concatenated in corpus order into one stream
    and cut into rows of N tokens, the tail shorter than N dropped; attention then crosses the
    texts a row spans, and each row is one sample of every per-sample statistic.
    """
    check_rows(max_length, pack)
    if pack is None:
        return tokenize(tokenizer, texts, max_length)
    stream = [token for ids in tokenize(tokenizer, texts, None) for token in ids]
    return [stream[start : start + pack] for start in range(0, len(stream) - pack + 1, pack)]


def batches(
    token_ids: Sequence[Sequence[int]], batch_size: int, pad_id: int = 0, keep_order: bool = False
) -> Iterator[tuple[Tensor, Tensor]]:
    """Right-padded ``(input_ids, attention_mask)`` batches, ``[batch, seq]`` each.

    Texts are grouped longest first so that batches carry little padding (sums do not depend
    on the order), or kept in corpus order with `keep_order`. Texts with no tokens are skipped
    (they add nothing to any statistic).
    """
    order = [i for i, ids in enumerate(token_ids) if ids]
    if not keep_order:
        order.sort(key=lambda i: -len(token_ids[i]))
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


Observers = dict[str, list[tuple[StatisticKind, str]]]
"""Module path -> the (kind, key) pairs that observe it."""


@dataclass
class _Pass:
    """The state of one pass: the batch's padding, the running totals and the hooks' plan."""

    inputs: Observers = field(default_factory=dict)  # forward pre-hooks: a module's input
    outputs: Observers = field(default_factory=dict)  # forward hooks: a module's output
    gradients: Observers = field(default_factory=dict)  # forward hooks + output-gradient hooks
    weights: dict[str, Tensor] = field(default_factory=dict)  # module path -> [d_out, d_in]
    totals: dict[tuple[str, str], Tensor] = field(default_factory=dict)
    mask: Tensor | None = None
    lengths: list[int] = field(default_factory=list)
    last: tuple[Tensor, Activations] | None = None
    needs_head: bool = False  # a kind observes the output head: run the whole model

    def observe(self, pairs: list[tuple[StatisticKind, str]], x: Tensor) -> None:
        """Feed one activation tensor to its kinds (one `Activations` per distinct tensor)."""
        assert self.mask is not None
        if self.last is not None and self.last[0] is x:
            observed = self.last[1]
        else:
            observed = Activations(x, self.mask, self.lengths)
            self.last = (x, observed)
        with torch.no_grad():
            for kind, key in pairs:
                self.add(kind, key, kind.batch(observed))

    def add(self, kind: StatisticKind, key: str, value: Tensor) -> None:
        """Merge one batch's value into the running total of (kind, key)."""
        slot = (kind.name, key)
        self.totals[slot] = kind.merge(self.totals.get(slot), value)

    def pre_hook(self, path: str) -> Any:
        """A forward pre-hook feeding the module's input to its kinds."""
        return lambda module, args: self.observe(self.inputs[path], args[0])

    def forward_hook(self, path: str) -> Any:
        """A forward hook feeding the module's output to its kinds."""
        return lambda module, args, output: self.observe(self.outputs[path], output)

    def gradient_hook(self, path: str) -> Any:
        """A forward hook that keeps the module's input and, when the loss's gradient reaches
        the module's output, feeds both to the gradient kinds."""

        def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
            assert self.mask is not None
            inputs = _per_token(args[0].detach(), self.mask)  # [batch, seq, d_in]
            lengths = self.lengths

            def on_gradient(grad: Tensor) -> None:
                assert self.mask is not None
                observed = WeightGradients(
                    self.weights[path], inputs, _per_token(grad, self.mask), lengths
                )
                with torch.no_grad():
                    for kind, key in self.gradients[path]:
                        self.add(kind, key, kind.batch(observed))

            if output.requires_grad:
                output.register_hook(on_gradient)

        return hook


@contextmanager
def _hooks(model: nn.Module, state: _Pass) -> Iterator[None]:
    """The pass's hooks on the named modules, removed on exit, also on exceptions."""
    modules = dict(model.named_modules())
    handles = []
    try:
        for path in state.inputs:
            handles.append(modules[path].register_forward_pre_hook(state.pre_hook(path)))
        for path in state.outputs:
            handles.append(modules[path].register_forward_hook(state.forward_hook(path)))
        for path in state.gradients:
            handles.append(modules[path].register_forward_hook(state.gradient_hook(path)))
        if state.gradients:
            # Weights get no .grad: the loss reaches the linears through the embeddings' output.
            if not callable(getattr(model, "get_input_embeddings", None)):
                raise LocatorError(
                    f"{type(model).__name__} has no get_input_embeddings(); gradient statistics "
                    "need a Hugging Face causal LM."
                )
            embeddings = model.get_input_embeddings()  # type: ignore[operator]
            handles.append(
                embeddings.register_forward_hook(
                    lambda module, args, output: output.detach().requires_grad_(True)
                )
            )
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


def _plan(model: nn.Module, kinds: Sequence[StatisticKind]) -> _Pass:
    """Which module each kind observes, and under which key."""
    state = _Pass()
    parameters = scored_parameters(model)
    with_head = scored_parameters(model, head=True)
    sites = {kind.site for kind in kinds}
    neurons = mlp_neurons(model) if sites & {"neuron_pre_activation", "neuron_activation"} else {}
    named = dict(model.named_parameters())
    for kind in kinds:
        if kind.site == "linear_input":
            for name, p in (with_head if kind.head else parameters).items():
                state.inputs.setdefault(p.module, []).append((kind, name))
                state.needs_head |= name not in parameters
        elif kind.site == "neuron_activation":
            for name, neuron in neurons.items():
                state.inputs.setdefault(neuron.down_projection, []).append((kind, name))
        elif kind.site == "neuron_pre_activation":
            for name, neuron in neurons.items():
                state.outputs.setdefault(neuron.pre_activation, []).append((kind, name))
        else:
            for name, p in parameters.items():
                state.gradients.setdefault(p.module, []).append((kind, name))
                weight = named[name].detach()
                state.weights[p.module] = weight.t() if p.transposed else weight
    return state


def collect_statistics(
    model: nn.Module,
    tokenizer: object,
    texts: Sequence[str],
    *,
    kinds: frozenset[str] | set[str],
    batch_size: int = 8,
    max_length: int | None = None,
    pack: int | None = None,
    corpus: str = "",
    progress: bool = True,
) -> ActivationStats:
    """Run one batched pass over `texts` and return the statistics `kinds` (names of
    `StatisticKind`s; see `list_statistics()`). A backward pass runs only when a kind observes
    gradients. The texts become token rows by `token_rows` (`max_length` truncates each text;
    `pack` concatenates them and cuts rows of that many tokens); each row is one sample.
    Kinds that declare another `Forward` (a dtype, a batch size) get a pass of their own."""
    resolved = [get_statistic(name) for name in sorted(kinds)]
    if not texts:
        raise LocatorError(f"corpus {corpus or '(unnamed)'} is empty: give at least one text.")
    check_batch_size(batch_size)
    token_ids = token_rows(tokenizer, texts, max_length, pack)
    num_tokens = sum(len(ids) for ids in token_ids)
    if num_tokens == 0:
        unit = "" if pack is None else f" in rows of {pack} (a shorter tail is dropped)"
        label = corpus or "(unnamed)"
        raise LocatorError(f"corpus {label} has no tokens after tokenization{unit}.")
    totals: dict[tuple[str, str], Tensor] = {}
    # Kinds that need the same forward share one pass; the default forward is the batched one.
    for forward in dict.fromkeys(kind.forward for kind in resolved):
        group = [kind for kind in resolved if kind.forward == forward]
        runner = model
        if forward.dtype is not None and next(model.parameters()).dtype != forward.dtype:
            runner = _weights_in(model, forward.dtype)  # the published forward, on a copy
        fed: list[tuple[Tensor, Tensor | None]]
        if forward.feed is None:
            size = batch_size if forward.batch_size is None else forward.batch_size
            fed = list(batches(token_ids, size, keep_order=size == 1))
        else:
            runner, inputs = forward.feed.prepare(runner, tokenizer, texts)
            fed = [(input_ids, None) for input_ids in inputs]
        state = _plan(runner, group)
        _run_pass(runner, state, fed, f"statistics {corpus}".strip(), progress)
        totals.update(state.totals)
    values: dict[str, dict[str, Tensor]] = {kind.name: {} for kind in resolved}
    for (kind, key), total in totals.items():
        values[kind][key] = total.cpu()
    ordered = list(scored_parameters(model, head=True))  # model order, whatever the hooks' order
    values = {
        kind: {key: found[key] for key in ordered if key in found} for kind, found in values.items()
    }
    return ActivationStats(
        corpus=corpus, num_samples=len(token_ids), num_tokens=num_tokens, values=values
    )


def _weights_in(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of `model` whose floating-point weights are in `dtype`, as ``from_pretrained(...,
    dtype=dtype)`` loads it: buffers keep their dtype (``.to(dtype)`` would also round RoPE's
    fp32 ``inv_freq``, which moves every activation of a Llama-family model)."""
    runner = copy.deepcopy(model)
    for parameter in runner.parameters():
        if parameter.is_floating_point():
            parameter.data = parameter.data.to(dtype)
    return runner


def _run_pass(
    model: nn.Module,
    state: _Pass,
    fed: Sequence[tuple[Tensor, Tensor | None]],
    description: str,
    progress: bool,
) -> None:
    """Feed the ``(input_ids, attention_mask)`` batches through `model` with the hooks of
    `state`, in order; a batch without a mask runs without one, every position a token."""
    from tqdm.auto import tqdm

    backward = bool(state.gradients)
    # Without gradients or the head's input the head is not needed: the pass stops at the
    # decoder, computing no logits.
    forward = model if backward or state.needs_head else getattr(model, "base_model", model)
    device = _input_device(model)
    was_training = model.training
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    model.eval()
    try:
        if backward:
            model.requires_grad_(False)
        with _hooks(model, state), torch.set_grad_enabled(backward):
            steps = tqdm(fed, desc=description, disable=not progress, leave=False)
            for input_ids, attention_mask in steps:
                if attention_mask is None:
                    state.mask = torch.ones(input_ids.shape, dtype=torch.long, device=device)
                else:
                    state.mask = attention_mask.to(device)
                state.lengths = state.mask.sum(1).tolist()
                state.last = None
                output = forward(
                    input_ids=input_ids.to(device),
                    attention_mask=None if attention_mask is None else state.mask,
                    use_cache=False,
                )
                if backward:
                    _sample_losses(output.logits, input_ids.to(device), state.mask).sum().backward()
                del output
    finally:
        state.last = None
        model.train(was_training)
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(requires_grad[name])


def _sample_losses(logits: Tensor, input_ids: Tensor, mask: Tensor) -> Tensor:
    """Each sample's mean next-token cross-entropy over its real tokens: ``[batch]`` (0 for a
    one-token sample, which predicts nothing)."""
    targets = input_ids[:, 1:].to(logits.device)  # [batch, seq - 1]
    real = mask[:, 1:].to(logits.device, torch.float32)  # a target is real when its token is
    losses = nn.functional.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), targets, reduction="none"
    )  # [batch, seq - 1]
    return (losses * real).sum(1) / real.sum(1).clamp(min=1)
