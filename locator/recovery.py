"""Recovery of a known set: how well a method's selections find a ground-truth set S.

Given a ground truth S (a `Localization`, for example a planted skill's parameters) and a
method's selections at several proportions (cuts of its ranking), this scores

* **precision and recall at |S|**: of the cut whose size is closest to |S| (the method's set
  cut to the size of S), the share of it inside S, and the share of S it finds;
* **AUPRC**: the area under the precision-recall curve over the cuts in order of size,
  ``sum_i (R_i - R_(i-1)) * P_i`` with ``R_0 = 0`` (average precision; for cuts at every K it
  is the area under the ranking's curve; a cut whose recall does not rise adds nothing);

each beside uniform random: ``|S| / N``, what a random selection of any size gets in
expectation for precision, for recall at |S| and for AUPRC (when the cuts reach the whole
model).

The unit compared is the MLP neuron when S and every cut are neuron-level, otherwise the weight
entry of the decoder linears: a neuron-level selection then counts as the entries its neurons
span (their pre-activation rows, as the gate and up projections of a gated MLP, and their
down-projection columns), as does a neuron-level S.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from locator.architecture import ScoredParameter, scored_parameters
from locator.errors import LocatorError
from locator.localization import Localization


@dataclass(frozen=True, kw_only=True)
class Recovery:
    """How well one method's cuts recover S: `unit` is ``"neuron"`` or ``"entry"``, `total`
    the number of units (N), `truth_size` |S|, `cut` the index (among the cuts given) of the
    cut compared at |S| and `selected` its size; `points` is (size, units in S) of every cut,
    in the order given (its precision and recall)."""

    unit: str
    cut: int
    total: int
    truth_size: int
    selected: int
    precision: float
    recall: float
    auprc: float
    points: tuple[tuple[int, int], ...] = ()

    @property
    def chance(self) -> float:
        """|S| / N: uniform random's expected precision, recall at |S| and AUPRC."""
        return self.truth_size / self.total


def neuron_linears(
    parameters: Mapping[str, ScoredParameter], down: str, size: int
) -> dict[str, bool]:
    """The linears holding the `size` neurons of the MLP whose down projection is `down`,
    by parameter name: True where a neuron is a row of the ``[d_out, d_in]`` matrix (the linears
    of the same MLP module with `size` outputs: a gated MLP's gate and up projections), False
    for `down` itself, where it is a column."""
    module = parameters[down].module.rsplit(".", 1)[0]
    found = {down: False}
    for name, parameter in parameters.items():
        d_out = parameter.shape[1] if parameter.transposed else parameter.shape[0]
        if name != down and parameter.module.rsplit(".", 1)[0] == module and d_out == size:
            found[name] = True
    return found


def spanned_masks(localization: Localization, model: nn.Module) -> dict[str, Tensor]:
    """The entries of the decoder linears a localization spans, as stored boolean masks: its
    own selections, and for a neuron-level one also its neurons' pre-activation rows."""
    parameters = scored_parameters(model)
    masks = {
        name: localization.selections[name].mask().clone()
        if name in localization.selections
        else torch.zeros(parameter.shape, dtype=torch.bool)
        for name, parameter in parameters.items()
    }
    for down, chosen in localization.neurons.items():
        for name, rows in neuron_linears(parameters, down, parameters[down].d_in).items():
            if not rows:
                continue
            if parameters[name].transposed:
                masks[name][:, chosen] = True
            else:
                masks[name][chosen, :] = True
    return masks


def _entries(localization: Localization, model: nn.Module) -> Tensor:
    """The spanned entries as one flat boolean vector over the scored linears, in model order."""
    masks = spanned_masks(localization, model)
    return torch.cat([masks[name].flatten() for name in scored_parameters(model)])


def _neurons(localization: Localization, model: nn.Module) -> Tensor:
    """The selected neurons as one flat boolean vector over every MLP, in model order."""
    from locator.architecture import mlp_neurons

    parts = []
    for name, site in mlp_neurons(model).items():
        part = torch.zeros(site.size, dtype=torch.bool)
        if name in localization.neurons:
            part[localization.neurons[name]] = True
        parts.append(part)
    return torch.cat(parts)


def recovery(truth: Localization, cuts: Sequence[Localization], model: nn.Module) -> Recovery:
    """Score a method's `cuts` (its selections at several proportions) against `truth` on
    `model`. Raises a one-line `LocatorError` when the truth or a cut belongs to another model
    (other parameters, or another recorded weights fingerprint), S is empty, or no cut is given.
    """
    if not cuts:
        raise LocatorError("recovery needs at least one selection of the method to score.")
    truth.check(model, strict=True)
    for cut in cuts:
        cut.check(model, strict=True)
    if set(truth.selections) != set(scored_parameters(model)):
        raise LocatorError(
            "the ground truth does not cover the model's decoder linears; it belongs to another "
            "model."
        )
    by_neuron = truth.level == "neuron" and all(cut.level == "neuron" for cut in cuts)
    vector = _neurons if by_neuron else _entries
    target = vector(truth, model)
    size = int(target.sum())
    if size == 0:
        raise LocatorError("the ground truth selects nothing; S must not be empty.")
    found = [(int(c.sum()), int((c & target).sum())) for c in (vector(cut, model) for cut in cuts)]
    closest = min(range(len(found)), key=lambda i: (abs(found[i][0] - size), found[i][0], i))
    selected, hits = found[closest]
    points = sorted(set(found))
    area = previous = 0.0
    for count, inside in points:
        recall = inside / size
        if recall > previous:
            area += (recall - previous) * (inside / count)
            previous = recall
    return Recovery(
        unit="neuron" if by_neuron else "entry",
        cut=closest,
        total=int(target.numel()),
        truth_size=size,
        selected=selected,
        precision=hits / selected if selected else 0.0,
        recall=hits / size,
        auprc=area,
        points=tuple(found),
    )
