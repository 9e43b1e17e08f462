"""What a statistic is: the site it observes, what one batch contributes, how batches merge.

A statistic kind is a `StatisticKind` object: a name, the site it observes (`Site`: a scored
linear's input, an MLP's neuron pre-activations or activations, or a scored weight's gradient),
how one batch contributes (`batch`, given an `Activations` or a `WeightGradients`), how
contributions merge (`merge`, a sum by default), the dtype it accumulates in and the pass it needs
(`Forward`). Every kind, the generic built-in ones included, arrives from a plugin's
``register_statistics`` hook (`statistics()`), so a method can bring a statistic the core has
never heard of. The collected values of one corpus are an `ActivationStats`. How texts become token
rows is `locator.rows`; how a pass runs and collects them is `locator.passes`.

Padding never counts: every observation exposes only each row's real tokens
(`Activations.lengths`, `.mask`). Per-sample quantities of one tensor are computed once and
shared by every kind and every linear that reads the same tensor (q, k and v read one input).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch
from torch import Tensor

from locator.errors import LocatorError
from locator.plugins import registry

if TYPE_CHECKING:
    from locator.rows import Feed

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


def per_token(x: Tensor, mask: Tensor) -> Tensor:
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


class Activations:
    """One hooked tensor of one batch, with its padding: what an activation kind observes.

    `values` is ``[batch, seq, channels]`` in the model's dtype, `mask` ``[batch, seq]`` (bool,
    True on real tokens) and `lengths` the real tokens of each row (rows are right-padded, so row
    b's real tokens are ``values[b, :lengths[b]]``). The per-sample reductions are computed once
    per tensor, in fp32 or wider, and shared by every kind and linear that sees the tensor.
    """

    def __init__(self, values: Tensor, mask: Tensor, lengths: list[int]) -> None:
        self.values = per_token(values, mask)  # [batch, seq, channels]
        self.mask = mask
        self.lengths = lengths
        self._memo: dict[str, Tensor] = {}

    def wide(self) -> Tensor:
        """`values` in fp32, or wider when the model computes wider."""
        return _wide(self.values)

    def _per_sample(self, key: str, reduce: Callable[[Tensor], Tensor]) -> Tensor:
        """`reduce` of each row's real tokens (``[length, channels]``, wide), memoized by `key`:
        rows are right-padded, so reducing each row's first `length` tokens skips padding."""
        if key not in self._memo:
            wide = self.wide()
            self._memo[key] = torch.stack(
                [reduce(wide[row, :length]) for row, length in enumerate(self.lengths)]
            )
        return self._memo[key]

    def sample_square_sums(self) -> Tensor:
        """Per sample and channel, the sum of squares over the sample's real tokens:
        ``[batch, channels]``."""
        return self._per_sample("square", lambda x: x.square().sum(0))

    def sample_sums(self) -> Tensor:
        """Per sample and channel, the sum over the sample's real tokens: ``[batch, channels]``."""
        return self._per_sample("sum", lambda x: x.sum(0))

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

    def magnitude(self) -> Tensor:
        """``|W|`` as ``[d_out, d_in]``, fp32 or wider."""
        return _wide(self.weight.detach().abs())

    def samples(self) -> Iterator[Tensor]:
        """``dL_s/dW`` (``[d_out, d_in]``, fp32 or wider) for each sample s of the batch."""
        for row, length in enumerate(self.lengths):
            x = _wide(self._inputs[row, :length])  # [seq, d_in]
            g = _wide(self._grad_outputs[row, :length])  # [seq, d_out]
            yield g.t() @ x


@dataclass(frozen=True, kw_only=True)
class Forward:
    """How a pass feeds the model: what a kind may require beyond the default batched pass.

    `dtype`: the dtype the model computes in (None: as loaded; otherwise the pass runs on a copy
    whose weights are cast to it, buffers untouched, as a published code that loads the model in
    that dtype computes);
    `batch_size`: rows per forward (None: the caller's; 1 also keeps the rows in corpus order,
    for running sums that depend on it); `feed`: a `locator.rows.Feed` that decides the input
    instead of the corpus's token rows (`batch_size`, `max_length` and `pack` then do not
    apply). Kinds with equal `Forward`s share one pass.
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


def statistics() -> dict[str, StatisticKind]:
    """Every statistic kind by name, as plugins register them with ``register_statistics``
    (the generic built-in kinds come from locator's own ``statistics`` plugin)."""
    registered = registry("register_statistics")
    return {name: registered.get(name) for name in registered.names()}


def list_statistics() -> list[str]:
    """Names of the statistic kinds methods can declare."""
    return sorted(statistics())


def get_statistic(name: str) -> StatisticKind:
    """The statistic kind called `name` (unknown names get a did-you-mean)."""
    return registry("register_statistics").get(name)


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
