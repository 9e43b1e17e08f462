"""How a statistics pass runs: one batched, padding-aware pass per corpus and `Forward`.

`collect_statistics` gathers the union of the statistic kinds asked for (`locator.stats`) in one
pass per corpus, with hooks that exist only inside this module's context manager and are removed
in ``finally``. Activation kinds run under `torch.no_grad()` through the decoder alone; if any
kind observes gradients, the same pass runs the whole model, takes each sample's mean next-token
loss on its real tokens and backpropagates their sum once per batch (weights themselves never
get a ``.grad``). That pass holds what a training step's forward holds (activations for the
backward, logits ``[batch, seq, vocab]``; lower `batch_size` for long texts and large
vocabularies) plus one weight-sized accumulator per scored matrix and gradient kind, but no
weight gradients or optimizer state. Kinds whose `Forward` differs (a dtype, a batch size, a
`Feed`) get a pass of their own; kinds with equal ones share it.

Padding never counts: rows are right-padded (`locator.rows.batches`), so under the causal mask a
real token never sees a pad; every observation exposes only each row's real tokens and padded
positions carry no loss.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from locator.architecture import mlp_neurons, scored_parameters
from locator.data import CalibrationOptions
from locator.errors import LocatorError
from locator.rows import batches, corpus_rows, input_device, model_positions
from locator.runs import running
from locator.stats import (
    Activations,
    ActivationStats,
    StatisticKind,
    WeightGradients,
    get_statistic,
    per_token,
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
            inputs = per_token(args[0].detach(), self.mask)  # [batch, seq, d_in]
            lengths = self.lengths

            def on_gradient(grad: Tensor) -> None:
                assert self.mask is not None
                observed = WeightGradients(
                    self.weights[path], inputs, per_token(grad, self.mask), lengths
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
    gradients. The texts become token rows by `locator.rows.token_rows` (`max_length` truncates
    each text; `pack` concatenates them and cuts rows of that many tokens); each row is one
    sample; a row longer than the model's positions is cut to them (`locator.rows.fit_positions`).
    Kinds that declare another `Forward` (a dtype, a batch size) get a pass of their own."""
    calibration = CalibrationOptions(batch_size=batch_size, max_length=max_length, pack=pack)
    rows = corpus_rows(tokenizer, texts, calibration, corpus, model_positions(model))
    return collect_from_rows(model, tokenizer, texts, rows, kinds, batch_size, corpus, progress)


def collect_from_rows(
    model: nn.Module,
    tokenizer: object,
    texts: Sequence[str],
    rows: Sequence[Sequence[int]],
    kinds: frozenset[str] | set[str],
    batch_size: int = 8,
    corpus: str = "",
    progress: bool = True,
) -> ActivationStats:
    """`collect_statistics` from the corpus's token `rows` already made (`corpus_rows`); the
    `texts` and `tokenizer` serve a kind whose `Feed` makes its own input; `batch_size` is a
    checked `locator.CalibrationOptions`' one."""
    resolved = [get_statistic(name) for name in sorted(kinds)]
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
            fed = list(batches(rows, size, keep_order=size == 1))
        else:
            runner, inputs = forward.feed.prepare(runner, tokenizer, texts)
            fed = [(input_ids, None) for input_ids in inputs]
        state = _plan(runner, group)
        _run_pass(runner, state, fed, f"statistics {corpus}".strip(), progress)
        totals.update(state.totals)
    ordered = list(scored_parameters(model, head=True))  # model order, whatever the hooks' order
    values = {
        kind.name: {
            key: totals[kind.name, key].cpu() for key in ordered if (kind.name, key) in totals
        }
        for kind in resolved
    }
    return ActivationStats(
        corpus=corpus,
        num_samples=len(rows),
        num_tokens=sum(len(ids) for ids in rows),
        values=values,
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
    device = input_device(model)
    try:
        with running(model, description), _hooks(model, state), torch.set_grad_enabled(backward):
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


def _sample_losses(logits: Tensor, input_ids: Tensor, mask: Tensor) -> Tensor:
    """Each sample's mean next-token cross-entropy over its real tokens: ``[batch]`` (0 for a
    one-token sample, which predicts nothing)."""
    targets = input_ids[:, 1:].to(logits.device)  # [batch, seq - 1]
    real = mask[:, 1:].to(logits.device, torch.float32)  # a target is real when its token is
    losses = nn.functional.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), targets, reduction="none"
    )  # [batch, seq - 1]
    return (losses * real).sum(1) / real.sum(1).clamp(min=1)
