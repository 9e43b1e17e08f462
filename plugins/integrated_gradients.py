"""Integrated gradients over MLP neurons, as the knowledge-neuron attribution of Dai et al. 2022
("Knowledge Neurons in Pretrained Transformers"), as a localizer.

A neuron is channel i of the input of an MLP's down projection, with activation a_i(t) at token
t of a sample x (its value in the unedited forward pass). F(x) is the sample's log-likelihood
log p(x), the sum over its predicted tokens (every real token after the first) of the next
token's log probability (``objective = log_likelihood``, the default), or, closer to Dai et
al.'s probability of the correct answer, the mean over those tokens of the next token's
probability (``objective = probability``). With the neurons' activations replaced by alpha
times their unedited values, the attribution of neuron i on sample x is the Riemann sum (m steps)

    IG_i(x) = sum over real tokens t of a_i(t) * (1/m) * sum_{k=1..m} dF / da_i(t) at alpha = k/m,

and the neuron's score is sum over target samples x of IG_i(x). The selection is the top
floor(K * N) neurons of all N in the model (one ranking across layers, ties in model order), a
neuron-level localization. Controls are not read.

Which activations are scaled (`scope`): ``all`` (the default) replaces every layer's
activations together by alpha times their unedited values, m forward+backward passes per batch;
completeness then holds over the whole model: sum_i IG_i(x) -> F(x) - F(x with every MLP's
activations at 0) as m grows. ``layer`` is Dai et al.'s form: one layer at a time, the others
computed normally (L x m passes); completeness holds per layer.

The published selection (`threshold` t, `share` p): with a threshold, a neuron is kept on
sample x when IG_i(x) > t * max_j IG_j(x) (Dai et al.: t = 0.2), and is a candidate when kept
on more than a fraction p of the samples; the selection is then the top floor(K * N) candidates
by score (fewer when fewer are candidates). Deviation: Dai et al. integrate the probability of
one fill-in-the-blank answer at one position; here the target is a corpus of plain texts, so the
integrand covers all its tokens: their log-likelihood, or their mean probability.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

import locator

Objective = Literal["log_likelihood", "probability"]


@dataclass(frozen=True, kw_only=True)
class IntegratedGradientsConfig(locator.Options):
    """Integrated gradients' options (each field's help says what it does)."""

    steps: int = locator.option(20, minimum=1, help="m, the Riemann steps of the integral")
    scope: Literal["all", "layer"] = locator.option(
        "all", help="scale all layers' activations together, or one layer at a time"
    )
    objective: Objective = locator.option(
        "log_likelihood",
        help="F: the sample's log-likelihood, or its tokens' mean probability (the published form)",
    )
    threshold: float | None = locator.option(
        None,
        minimum=0,
        maximum=1,
        help="Dai et al.'s per-sample threshold t (keep neurons above t x max)",
    )
    share: float = locator.option(
        0.0, minimum=0, below=1, help="with a threshold: the share p of samples a neuron must pass"
    )


class IntegratedGradientsLocalizer(locator.Localizer):
    """MLP neurons of largest integrated gradient of the target's log-likelihood."""

    name = "integrated-gradients"
    Config = IntegratedGradientsConfig
    runs_model = True
    uses_controls = False

    def localize_many(
        self, context: locator.LocalizationContext, proportions: Sequence[float]
    ) -> list[locator.Neurons]:
        """One score per neuron (with the threshold, -inf for non-candidates), cut at every
        proportion."""
        runner = context.runner
        counts = runner.neuron_budget(proportions)
        names = list(runner.neurons)
        scores = {
            name: torch.zeros(runner.neurons[name].size, dtype=torch.float64) for name in names
        }
        kept = {name: torch.zeros_like(scores[name]) for name in names}
        config = self.config
        for attributions in sample_attributions(
            runner, config.steps, config.scope, config.objective
        ):
            for name in names:
                scores[name] += attributions[name].sum(0)
            if config.threshold is not None:
                top = torch.cat([attributions[name] for name in names], 1).amax(1, keepdim=True)
                for name in names:
                    kept[name] += (attributions[name] > config.threshold * top).sum(0)
        if config.threshold is not None:
            least = config.share * runner.target.num_samples
            scores = {
                name: torch.where(kept[name] > least, score, -torch.inf)
                for name, score in scores.items()
            }
        return runner.neuron_cuts(scores, counts)


def sample_attributions(
    runner: locator.ModelRunner,
    steps: int,
    scope: Literal["all", "layer"] = "all",
    objective: Objective = "log_likelihood",
) -> Iterator[dict[str, Tensor]]:
    """IG_i(x) of every target sample, a batch at a time: per down-projection name, ``[batch,
    neurons]`` (fp64, CPU), in the batches' row order."""
    names = list(runner.neurons)
    groups = [names] if scope == "all" else [[name] for name in names]
    batches = runner.target.batches
    description = f"integrated gradients ({steps} steps)"
    for batch in runner.steps(batches, description, total=len(batches)):
        clean: dict[str, Tensor] = {}
        runner.token_log_probs(batch, edit=locator.record(clean))
        real = batch[1].to(runner.device, torch.float64)[..., None]  # [batch, seq, 1]
        result = {}
        for group in groups:
            sites = {name: clean[name] for name in group}
            mean_grads = _mean_gradients(runner, batch, sites, steps, objective)
            for name in group:
                a = clean[name].to(torch.float64)
                result[name] = (a * mean_grads[name] * real).sum(1).cpu()
        yield result


def _mean_gradients(
    runner: locator.ModelRunner,
    batch: locator.Batch,
    clean: dict[str, Tensor],
    steps: int,
    objective: Objective,
) -> dict[str, Tensor]:
    """(1/m) sum_{k=1..m} dF/da at a = (k/m) x `clean` for the sites in `clean` (the others
    computed normally), F summed over the batch's samples: each row's gradient is its own
    sample's, rows being independent."""
    real = batch[1][:, 1:].to(runner.device)  # [batch, seq - 1]: predicted tokens
    totals = {name: torch.zeros_like(a, dtype=torch.float64) for name, a in clean.items()}
    for k in range(1, steps + 1):
        values = {name: (a * (k / steps)).requires_grad_(True) for name, a in clean.items()}
        log_probs = runner.token_log_probs(batch, edit=locator.replace(values), grad=True)
        if objective == "log_likelihood":
            f = log_probs.sum()
        else:  # each sample's mean next-token probability
            probs = log_probs.exp() * real
            f = (probs.sum(1) / real.sum(1).clamp(min=1)).sum()
        grads = torch.autograd.grad(f, list(values.values()))
        for name, grad in zip(values, grads, strict=True):
            totals[name] += grad.to(torch.float64)
    return {name: total / steps for name, total in totals.items()}


@locator.hookimpl
def register_localizers(register):  # type: ignore[no-untyped-def]
    """Register integrated gradients."""
    register(IntegratedGradientsLocalizer)
