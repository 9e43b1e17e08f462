"""Running the model for methods that need more than one statistics pass per corpus.

A method that sets ``runs_model = True`` (see `locator.localizer.Localizer`) finds a
`ModelRunner` in its context's ``runner``. The runner holds the target and control corpora as
padded batches with their masks, made of the same token rows statistics use
(`locator.rows.token_rows`, `locator.rows.batches`), and runs forward or forward+backward
passes with an `Edit` applied at named sites:

- ``neuron_activation``: the input ``[batch, seq, neurons]`` of each MLP's down projection (the
  neurons' activations), keyed by the down-projection parameter name (`runner.neurons`);
- ``linear_input``: the input ``[batch, seq, d_in]`` of every scored linear, keyed by its
  weight's parameter name (`runner.parameters`).

An edit sees each site's value and returns its replacement (or None to leave it): `scale`
multiplies (a 0/1 factor masks, ``1 - z`` gates), `replace` substitutes, `record` keeps the value
as a leaf that gradients are taken with respect to, `compose` chains them. Gradients are always
taken with respect to activations (`torch.autograd.grad` on recorded values), never weights.

What the core guarantees around a model-running method (`running`): the model is in eval mode
and its parameters do not require gradients while the method runs, and both are restored after;
every hook a pass registers is removed when the pass ends, also on an exception; no ``.grad`` is
left on a parameter; and a method that writes to a weight (in place or by swapping its data) is
stopped with a `LocatorError` naming the weight, so a localization never comes from an edited
model. The core knows no method: it only offers passes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, TypeVar

import torch
from torch import Tensor, nn

from locator.architecture import NeuronSite, ScoredParameter, mlp_neurons, scored_parameters
from locator.data import CalibrationOptions
from locator.errors import LocatorError
from locator.localization import Neurons
from locator.ranking import split_neurons, top_count, top_indices
from locator.rows import batches, corpus_rows, input_device, model_positions
from locator.stats import per_token

RunSite = Literal["neuron_activation", "linear_input"]
"""Where an edit applies: an MLP's neuron activations or a scored linear's input."""

Edit = Callable[[str, Tensor], Tensor | None]
"""``edit(name, value) -> replacement or None``: `value` is a site's ``[batch, seq, channels]``
tensor during a pass; a returned tensor of the same shape replaces it."""

Batch = tuple[Tensor, Tensor]
"""``(input_ids, attention_mask)``, ``[batch, seq]`` each, right-padded, on CPU."""

_T = TypeVar("_T")


@dataclass(frozen=True, kw_only=True)
class RunCorpus:
    """A corpus as the runner feeds it: `rows` are its token rows (one sample each, as
    statistics read it), `batches` the right-padded batches of the non-empty rows, longest
    first."""

    name: str
    rows: tuple[tuple[int, ...], ...]
    batches: tuple[Batch, ...]

    @property
    def num_samples(self) -> int:
        """Number of non-empty rows (samples)."""
        return sum(1 for row in self.rows if row)

    @property
    def num_predicted(self) -> int:
        """Number of predicted tokens (every real token after a row's first)."""
        return sum(max(len(row) - 1, 0) for row in self.rows)


def scale(factors: Mapping[str, Tensor | float]) -> Edit:
    """Multiply the value of each named site by its factor (a number, or a ``[channels]`` or
    ``[batch, seq, channels]`` tensor); a 0/1 factor masks channels."""
    return lambda name, x: x * factors[name] if name in factors else None


def replace(values: Mapping[str, Tensor]) -> Edit:
    """Replace the value of each named site by `values[name]` (broadcast to its shape)."""
    return lambda name, x: values[name].expand_as(x) if name in values else None


def record(store: dict[str, Tensor], *, grad: bool = False) -> Edit:
    """Keep each site's value in `store` under its name (detached); with `grad`, as a leaf that
    requires grad, so `torch.autograd.grad(loss, list(store.values()))` gives the loss's
    gradient with respect to the activations. The pass continues from the kept value."""

    def edit(name: str, x: Tensor) -> Tensor:
        kept = x.detach().requires_grad_(grad)
        store[name] = kept
        return kept

    return edit


def compose(*edits: Edit) -> Edit:
    """Apply several edits in order, each to the previous one's result."""

    def edit(name: str, x: Tensor) -> Tensor | None:
        changed = False
        for one in edits:
            new = one(name, x)
            if new is not None:
                x, changed = new, True
        return x if changed else None

    return edit


class ModelRunner:
    """The passes a model-running method may make (see the module docstring), over
    ``[(label, rows)]``, the target first, then the controls, whose token rows are already made
    (`locator.rows.corpus_rows`: a statistics pass's) and are fed in batches of `batch_size`
    (`ModelRunner.build` makes them from texts). `target` and `controls` are `RunCorpus`
    objects; `seed` seeds `generator()`; `progress` turns on the progress bars of `steps`.
    """

    def __init__(
        self,
        model: nn.Module,
        corpora: Sequence[tuple[str, Sequence[Sequence[int]]]],
        batch_size: int = 8,
        *,
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        self._model = model
        self.target, *controls = (
            RunCorpus(
                name=label, rows=tuple(map(tuple, rows)), batches=tuple(batches(rows, batch_size))
            )
            for label, rows in corpora
        )
        self.controls = tuple(controls)
        self.seed = seed
        self.progress = progress

    @classmethod
    def build(
        cls,
        model: nn.Module,
        tokenizer: object,
        corpora: Sequence[tuple[str, Sequence[str]]],
        calibration: CalibrationOptions | None = None,
        *,
        seed: int = 0,
        progress: bool = True,
    ) -> ModelRunner:
        """A runner over ``[(label, texts)]``, each read as `calibration` says (default:
        `CalibrationOptions()`): token rows exactly as `locator.passes.collect_statistics`
        makes them (`locator.rows.corpus_rows`)."""
        calibration = calibration or CalibrationOptions()
        positions = model_positions(model)
        rows = [
            (label, corpus_rows(tokenizer, texts, calibration, label, positions))
            for label, texts in corpora
        ]
        return cls(model, rows, calibration.batch_size, seed=seed, progress=progress)

    @property
    def corpora(self) -> tuple[RunCorpus, ...]:
        """The target, then the controls."""
        return (self.target, *self.controls)

    @cached_property
    def parameters(self) -> dict[str, ScoredParameter]:
        """The scored linears (the ``linear_input`` sites), by parameter name."""
        return scored_parameters(self._model)

    @cached_property
    def neurons(self) -> dict[str, NeuronSite]:
        """The MLP neurons (the ``neuron_activation`` sites), by down-projection parameter name,
        in model order; a `LocatorError` for a model whose MLP layout is unknown (read it before
        any pass to fail early)."""
        return mlp_neurons(self._model)

    @property
    def device(self) -> torch.device:
        """Where token ids go (the input embedding's device)."""
        return input_device(self._model)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the model's first floating-point parameter."""
        return next(p.dtype for p in self._model.parameters() if p.is_floating_point())

    def neuron_budget(self, proportions: Sequence[float]) -> list[int]:
        """How many neurons each proportion K selects of all N MLP neurons: ``floor(K * N)``; a
        one-line `LocatorError` when a K selects none (call it before any pass)."""
        total = sum(site.size for site in self.neurons.values())
        counts = [top_count(proportion, total) for proportion in proportions]
        for proportion, count in zip(proportions, counts, strict=True):
            if count < 1:
                raise LocatorError(
                    f"proportion {proportion} selects no neuron of the model's {total}; give a "
                    f"proportion of at least 1/{total} = {1 / total:.3g}."
                )
        return counts

    def neuron_cuts(self, scores: Mapping[str, Tensor], counts: Sequence[int]) -> list[Neurons]:
        """Cut one ranking of all neurons at each count: `scores` maps each down-projection
        name (every key of `neurons`) to ``[neurons]`` scores; the result, per count, holds each
        MLP's neurons among the `count` best of the whole model (score descending, then model
        order). A neuron scored -inf is never selected, so a cut may hold fewer."""
        sizes = {name: site.size for name, site in self.neurons.items()}
        flat = torch.cat([scores[name].detach().to("cpu", torch.float64) for name in sizes])
        ranked = top_indices(flat, max(counts))
        tops = [ranked[:count] for count in counts]
        return [split_neurons(torch.sort(t[flat[t] > -torch.inf]).values, sizes) for t in tops]

    def generator(self, device: str | torch.device = "cpu") -> torch.Generator:
        """A fresh `torch.Generator` seeded with the run's seed."""
        return torch.Generator(device=device).manual_seed(self.seed)

    def steps(
        self, items: Iterable[_T], description: str, total: int | None = None
    ) -> Iterable[_T]:
        """`items` with a progress bar (when progress is on)."""
        from tqdm.auto import tqdm

        return tqdm(items, desc=description, total=total, disable=not self.progress, leave=False)

    def token_log_probs(
        self,
        batch: Batch,
        *,
        edit: Edit | None = None,
        site: RunSite = "neuron_activation",
        grad: bool = False,
    ) -> Tensor:
        """One forward pass over `batch` with `edit` at every site of kind `site`: the log
        probability of each next token, ``[batch, seq - 1]`` (at least fp32), 0 where the
        predicted token is padding. With `grad` the pass records a graph, so gradients with
        respect to values that `edit` made require grad can be taken from the result; hooks
        are removed when the pass ends."""
        input_ids, attention_mask = (t.to(self.device) for t in batch)
        modules = dict(self._model.named_modules())
        if site == "neuron_activation":
            paths = {n.down_projection: name for name, n in self.neurons.items()}
        elif site == "linear_input":
            paths = {p.module: name for name, p in self.parameters.items()}
        else:
            raise LocatorError(f"site must be neuron_activation or linear_input, got {site!r}.")
        handles = []
        try:
            if edit is not None:
                for path, name in paths.items():
                    hook = _pre_hook(name, edit, attention_mask)
                    handles.append(modules[path].register_forward_pre_hook(hook))
            with torch.set_grad_enabled(grad):
                logits = self._model(
                    input_ids=input_ids, attention_mask=attention_mask, use_cache=False
                ).logits
                return next_token_log_probs(logits, input_ids, attention_mask)
        finally:
            for handle in handles:
                handle.remove()


def next_token_log_probs(logits: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """``log p(x[t + 1] | x[:t + 1])``, ``[batch, seq - 1]``, 0 where ``x[t + 1]`` is padding."""
    dtype = torch.promote_types(logits.dtype, torch.float32)
    log_probs = torch.log_softmax(logits[:, :-1].to(dtype), dim=-1)
    taken = log_probs.gather(-1, input_ids[:, 1:, None].to(logits.device))[..., 0]
    return taken * attention_mask[:, 1:].to(logits.device, dtype)


def _pre_hook(name: str, edit: Edit, mask: Tensor) -> Any:
    """A forward pre-hook giving `edit` the module's input as ``[batch, seq, channels]`` (some
    blocks, OPT's, flatten a batch's tokens around their MLP) and passing its replacement on."""

    def hook(module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...] | None:
        x = args[0]
        new = edit(name, per_token(x, mask))
        if new is None:
            return None
        # An edit computed in fp32 (a gate, an interpolation) must not change the dtype the
        # module computes in: a bf16 linear refuses an fp32 input.
        return (new.reshape(x.shape).to(x.dtype), *args[1:])

    return hook


@contextmanager
def running(model: nn.Module, description: str = "a model-running method") -> Iterator[None]:
    """The guard around a pass over the model (a statistics pass, a model-running method): eval
    mode and no parameter requiring gradients inside; on exit (also on an exception) both
    restored, any ``.grad`` a parameter got removed, and a `LocatorError` if a weight was written
    to (so no result of an edited model is returned)."""
    was_training = model.training
    parameters = dict(model.named_parameters())
    requires_grad = {name: p.requires_grad for name, p in parameters.items()}
    grads = {name: p.grad for name, p in parameters.items()}
    # An in-place write bumps a tensor's version; swapping `.data` changes its storage.
    versions = {name: (p._version, p.data_ptr()) for name, p in parameters.items()}
    model.eval()
    model.requires_grad_(False)
    try:
        yield
    finally:
        model.train(was_training)
        for name, parameter in parameters.items():
            parameter.requires_grad_(requires_grad[name])
            parameter.grad = grads[name]
    for name, parameter in parameters.items():
        if (parameter._version, parameter.data_ptr()) != versions[name]:
            raise LocatorError(f"{description} wrote to weight {name!r}; methods must not.")
