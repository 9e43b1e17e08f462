"""A learned removal mask over MLP neurons: HardConcrete gates (Louizos et al. 2018, "Learning
Sparse Neural Networks through L0 Regularization"), trained as Chang et al. 2024 ("Do
Localization Methods Actually Localize Memorized Data in LLMs?") train pruning masks, as a
localizer.

A neuron is channel i of the input of an MLP's down projection; its activation is multiplied by
1 - z_i, where the removal gate z_i in [0, 1] is a HardConcrete sample with a learned log_alpha_i,
temperature beta = 2/3 and stretch (gamma, zeta) = (-0.1, 1.1): for u_i ~ Uniform(0, 1),

    s_i = sigmoid((log u_i - log(1 - u_i) + log_alpha_i) / beta),
    z_i = min(1, max(0, s_i * (zeta - gamma) + gamma)),
    P(z_i != 0) = sigmoid(log_alpha_i - beta * log(-gamma / zeta)),  E[||z||_0] = sum_i P(z_i != 0).

Every step draws one u per neuron (seeded), runs the target and every control once (forward +
backward, all their batches) and takes one Adam step (rate `lr`) on

    P_T + sum_C L_C + lambda * E[||z||_0] / k,

where P_T is the target's mean next-token probability over its predicted tokens (it falls as the
target's loss rises, and is bounded, unlike -L_T), L_C a control's mean next-token loss, and k =
floor(K * N) of the N neurons. The L0 weight is set so the expected number removed meets k: it
starts at 0 and after every step moves by dual ascent, lambda <- max(0, lambda +
`penalty_step` * (E[||z||_0] / k - 1)). All log_alpha start at the value that makes E[||z||_0] =
k. After `steps` steps the selection is the k neurons of largest log_alpha (most surely
removed; ties in model order), a neuron-level localization. Each proportion trains its own mask.

Deterministic on one machine under the seed (the noise comes from a seeded generator). Cost:
`steps` x one forward+backward over the target and the controls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

import locator

BETA, GAMMA, ZETA = 2 / 3, -0.1, 1.1
"""HardConcrete's temperature and stretch (Louizos et al. 2018)."""


@dataclass(frozen=True, kw_only=True)
class LearnedMaskConfig(locator.Options):
    """The learned mask's options (each field's help says what it does)."""

    steps: int = locator.option(
        50, minimum=1, help="training steps, each one pass over the target and the controls"
    )
    lr: float = locator.option(0.1, above=0, help="Adam's learning rate on the gates' log-alpha")
    penalty_step: float = locator.option(
        1.0, minimum=0, help="the dual-ascent rate of the L0 weight"
    )


class LearnedMaskLocalizer(locator.Localizer):
    """MLP neurons whose learned HardConcrete removal gates raise the target's loss while
    keeping the controls'."""

    name = "learned-mask"
    Config = LearnedMaskConfig
    runs_model = True
    min_controls = 1

    def localize(self, context: locator.LocalizationContext, proportion: float) -> locator.Neurons:
        """A mask trained for the proportion, its k most surely removed neurons selected."""
        runner = context.runner
        (count,) = runner.neuron_budget([proportion])
        log_alpha = train_log_alpha(runner, self.config, count)
        return runner.neuron_cuts(_split(runner, log_alpha), [count])[0]


def expected_removed(log_alpha: Tensor) -> Tensor:
    """E[||z||_0] = sum_i P(z_i != 0)."""
    return torch.sigmoid(log_alpha - BETA * math.log(-GAMMA / ZETA)).sum()


def gates(log_alpha: Tensor, u: Tensor) -> Tensor:
    """The HardConcrete sample z for uniform noise `u`."""
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / BETA)
    return (s * (ZETA - GAMMA) + GAMMA).clamp(0, 1)


def train_log_alpha(runner: locator.ModelRunner, config: LearnedMaskConfig, count: int) -> Tensor:
    """The trained log_alpha of every neuron (layers concatenated in model order)."""
    total = sum(site.size for site in runner.neurons.values())
    dtype = torch.promote_types(runner.dtype, torch.float32)
    start = math.log(count / (total - count)) if count < total else 10.0
    start += BETA * math.log(-GAMMA / ZETA)  # P(z != 0) = count / total for every neuron
    log_alpha = torch.full((total,), start, dtype=dtype, device=runner.device, requires_grad=True)
    optimizer = torch.optim.Adam([log_alpha], lr=config.lr)
    generator = runner.generator()
    penalty = 0.0
    for _ in runner.steps(range(config.steps), f"learned mask (k = {count})"):
        u = torch.rand(total, generator=generator, dtype=torch.float64).clamp(1e-6, 1 - 1e-6)
        u = u.to(runner.device, dtype)
        optimizer.zero_grad()
        corpora = [(runner.target, True)] + [(control, False) for control in runner.controls]
        for corpus, is_target in corpora:
            predicted = max(corpus.num_predicted, 1)
            for batch in corpus.batches:
                kept = _split(runner, 1 - gates(log_alpha, u))
                log_probs = runner.token_log_probs(batch, edit=locator.scale(kept), grad=True)
                if is_target:  # P_T: mean probability of the predicted (real) tokens
                    real = batch[1][:, 1:].to(log_probs.device, log_probs.dtype)
                    term = (log_probs.exp() * real).sum() / predicted
                else:  # L_C
                    term = -log_probs.sum() / predicted
                term.backward()
        removed = expected_removed(log_alpha)
        (penalty * removed / count).backward()
        optimizer.step()
        penalty = max(0.0, penalty + config.penalty_step * (float(removed.detach()) / count - 1))
    return log_alpha.detach()


def _split(runner: locator.ModelRunner, flat: Tensor) -> dict[str, Tensor]:
    """A tensor over all neurons (model order) as one ``[neurons]`` tensor per MLP."""
    sizes = [site.size for site in runner.neurons.values()]
    return dict(zip(runner.neurons, flat.split(sizes), strict=True))


@locator.hookimpl
def register_localizers(register):  # type: ignore[no-untyped-def]
    """Register the learned mask."""
    register(LearnedMaskLocalizer)
