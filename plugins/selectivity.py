"""A selectivity localizer, after the neuroscience-style "localizer" experiments of AlKhamissi et
al. 2024 ("The LLM Language Network"): the units that respond more to the target corpus than to
the controls, by a Welch t-test across samples.

A unit is an MLP neuron, channel j of the input of an MLP's down projection (Llama:
``act_fn(gate_proj(x)) * up_proj(x)``; GPT-2, Phi, OPT: ``act(fc1(x))``). For every sample s of a
corpus, a_s[j] is neuron j's activation averaged over the sample's real tokens. With n samples
in the target (T) and n' in the controls (C, all control corpora pooled into one group):

    m = (1/n) sum_s a_s,   v = (sum_s a_s^2 - n m^2) / (n - 1)      (likewise m', v' over C)
    t[j] = (m[j] - m'[j]) / sqrt(v[j] / n + v'[j] / n')

computed from two statistics per corpus (`NEURON_MEAN_SUM`, `NEURON_MEAN_SQUARE_SUM`; sums over
samples, fp64). A unit with zero variance in both groups gets t = 0, or +-inf if the means
differ. The selection is the top floor(K * N) units by t over all N neurons of the model (one
ranking across layers, ties in model order), a neuron-level localization: its parameters are
those neurons' columns of the down projections.

Deviations from the paper: its units are hidden units of the model's layers as its released
code defines them (not checked here) and its stimuli are short sentences against lists of
non-words, each unit's activation averaged over a stimulus's tokens; here units are MLP neurons,
so the selection is editable like LAPE's, and samples are the corpora's texts. Needs at least
two samples in the target and in the controls.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

import locator

# The built-in statistic kinds of the per-sample means (`locator.list_statistics()`).
NEURON_MEAN_SUM = "neuron_sample_mean_sum"
NEURON_MEAN_SQUARE_SUM = "neuron_sample_mean_square_sum"


class SelectivityLocalizer(locator.Localizer):
    """MLP neurons of largest Welch t between per-sample mean activations on target and
    controls."""

    name = "selectivity"
    statistics = frozenset({NEURON_MEAN_SUM, NEURON_MEAN_SQUARE_SUM})
    min_controls = 1

    def localize_many(
        self, context: locator.LocalizationContext, proportions: Sequence[float]
    ) -> list[locator.Neurons]:
        """One t ranking of all neurons, cut at every proportion."""
        names = context.target.names(NEURON_MEAN_SUM)
        t = welch_t(context.target, context.controls, names)  # [N], layers concatenated
        order = torch.sort(t, descending=True, stable=True).indices
        counts = [locator.top_count(proportion, t.numel()) for proportion in proportions]
        sizes = {name: context.parameters[name].d_in for name in names}
        return [locator.split_neurons(torch.sort(order[:count]).values, sizes) for count in counts]


def welch_t(
    target: locator.ActivationStats,
    controls: Sequence[locator.ActivationStats],
    names: Sequence[str],
) -> Tensor:
    """Welch's t of every neuron (the MLPs `names`, concatenated), target against the pooled
    controls, as fp64."""

    def group(corpora: Sequence[locator.ActivationStats]) -> tuple[Tensor, Tensor, int]:
        sums = sum(torch.cat([c.get(NEURON_MEAN_SUM, n) for n in names]) for c in corpora)
        squares = sum(torch.cat([c.get(NEURON_MEAN_SQUARE_SUM, n) for n in names]) for c in corpora)
        count = sum(c.num_samples for c in corpora)
        if count < 2:
            which = ", ".join(c.corpus for c in corpora)
            raise locator.LocatorError(
                f"selectivity needs 2 samples per group at least; {which}: {count}."
            )
        mean = sums / count
        variance = ((squares - count * mean.square()) / (count - 1)).clamp(min=0)
        return mean, variance, count

    mean, variance, n = group([target])
    control_mean, control_variance, n_control = group(controls)
    difference = mean - control_mean
    error = (variance / n + control_variance / n_control).sqrt()
    t = difference / error
    # Zero variance on both sides: no difference is t = 0, any difference is infinitely sure.
    t = torch.where(error > 0, t, torch.sign(difference) * torch.inf)
    return torch.where(t.isnan(), 0.0, t)


@locator.hookimpl
def register_localizers(register):  # type: ignore[no-untyped-def]
    """Register the selectivity localizer."""
    register(SelectivityLocalizer)
