"""Attribution patching (AtP; Nanda 2023, "Attribution patching: activation patching at
industrial scale"; Kramar et al. 2024, "AtP*") as a localizer: the MLP neurons whose replacement
by their mean activation on the controls would change the target's loss most, to first order.

A neuron is channel i of the input of an MLP's down projection (Llama: ``act_fn(gate_proj(x)) *
up_proj(x)``; GPT-2, Phi, OPT: ``act(fc1(x))``), with activation a_i(t) at token t. With L_T
the target corpus's mean next-token loss over all its predicted tokens (every real token after
a row's first) and mean_C(a_i) the neuron's mean activation over every real token of all the
control corpora pooled,

    score_i = | sum over real target tokens t of (mean_C(a_i) - a_i(t)) * dL_T / da_i(t) |,

the first-order (Taylor) estimate of how much L_T changes when a_i is patched to its control
mean at every target token. The selection is the top floor(K * N) neurons of all N in the model
(one ranking across layers, ties in model order), a neuron-level localization: their columns of
the down projections.

Choices: the patch value is the mean activation over the controls (mean ablation; AtP patches
in a counterfactual prompt's activations, which plain corpora do not pair up), pooled over
their tokens; the gradient is the whole target corpus's, not a per-prompt one. Cost: one
forward pass per control batch and one forward+backward per target batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

import locator


class AttributionPatchingLocalizer(locator.Localizer):
    """MLP neurons of largest |(control mean - activation) x gradient of the target's loss|,
    summed over the target's tokens."""

    name = "attribution-patching"
    runs_model = True
    min_controls = 1

    def localize_many(
        self, context: locator.LocalizationContext, proportions: Sequence[float]
    ) -> list[locator.Neurons]:
        """One score per neuron, cut at every proportion."""
        runner = context.runner
        counts = runner.neuron_budget(proportions)  # checked before the passes
        return runner.neuron_cuts(attribution_scores(runner), counts)


def control_means(runner: locator.ModelRunner) -> dict[str, Tensor]:
    """Each neuron's mean activation over every real token of all controls (fp64)."""
    sums: dict[str, Tensor] = {}
    tokens = 0
    for corpus in runner.controls:
        for batch in runner.steps(corpus.batches, f"attribution patching: {corpus.name}"):
            store: dict[str, Tensor] = {}
            runner.token_log_probs(batch, edit=locator.record(store))
            real = batch[1].to(runner.device, torch.float64)[..., None]  # [batch, seq, 1]
            for name, a in store.items():
                total = (a.to(torch.float64) * real).sum((0, 1))
                sums[name] = sums[name] + total if name in sums else total
            tokens += int(batch[1].sum())
    return {name: total / tokens for name, total in sums.items()}


def attribution_scores(runner: locator.ModelRunner) -> dict[str, Tensor]:
    """score_i of every neuron (see the module docstring), by down-projection name (fp64)."""
    means = control_means(runner)
    names = list(runner.neurons)
    totals = {name: torch.zeros_like(means[name]) for name in names}
    predicted = runner.target.num_predicted
    for batch in runner.steps(runner.target.batches, "attribution patching: target"):
        store: dict[str, Tensor] = {}
        log_probs = runner.token_log_probs(batch, edit=locator.record(store, grad=True), grad=True)
        loss = -log_probs.sum() / max(predicted, 1)  # this batch's part of L_T
        grads = torch.autograd.grad(loss, [store[name] for name in names])
        real = batch[1].to(runner.device, torch.float64)[..., None]
        for name, grad in zip(names, grads, strict=True):
            delta = means[name] - store[name].detach().to(torch.float64)  # [batch, seq, n]
            totals[name] += (delta * grad.to(torch.float64) * real).sum((0, 1))
    return {name: total.abs() for name, total in totals.items()}


@locator.hookimpl
def register_localizers(register):  # type: ignore[no-untyped-def]
    """Register attribution patching."""
    register(AttributionPatchingLocalizer)
