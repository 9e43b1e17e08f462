"""Random baselines: uniform selections under a seed, optionally matched to a reference.

Without a reference, each matrix gets floor(K * numel) entries uniformly without replacement.
With a reference localization (the paper's matched baseline), each matrix gets exactly as many
entries as the reference selected there, at uniform positions. Each matrix draws from its own
generator seeded by (seed, parameter name), so a selection does not depend on which other
parameters exist, and the sets for growing proportions are nested.

A neuron-level reference (LAPE's) gets a neuron-level baseline: in each MLP, as many neurons as
the reference selected there, uniformly without replacement.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import torch

import locator


class RandomLocalizer(locator.Localizer):
    """Uniformly random entries per matrix; matched counts when given a reference."""

    name = "random"
    accepts_reference = True
    uses_controls = False

    def localize_many(
        self, context: locator.LocalizationContext, proportions: Sequence[float]
    ) -> list[dict[str, locator.Selection]] | list[locator.Neurons]:
        """One permutation per matrix, cut at every proportion's count."""
        reference = context.reference
        if reference is not None and reference.level == "neuron":
            return [_matched_neurons(context, reference)] * len(proportions)
        selections: list[dict[str, locator.Selection]] = [{} for _ in proportions]
        for name, parameter in context.parameters.items():
            if reference is not None:
                matched = reference.selections.get(name)
                counts = [matched.count if matched is not None else 0] * len(proportions)
            else:
                counts = [locator.top_count(p, parameter.numel) for p in proportions]
            generator = torch.Generator().manual_seed(zlib.crc32(f"{context.seed}:{name}".encode()))
            order = torch.randperm(parameter.numel, generator=generator)
            for i, count in enumerate(counts):
                selections[i][name] = locator.Selection.from_indices(order[:count], parameter.shape)
        return selections


def _matched_neurons(
    context: locator.LocalizationContext, reference: locator.Localization
) -> locator.Neurons:
    """The reference's neuron count in each MLP, at uniform neurons."""
    neurons = locator.Neurons()
    for name, chosen in reference.neurons.items():
        if name not in context.parameters:
            raise locator.LocatorError(
                f"the reference localization selects neurons of {name!r}, which this model "
                "does not have; localize the reference on the same model."
            )
        seed = zlib.crc32(f"{context.seed}:{name}:neurons".encode())
        generator = torch.Generator().manual_seed(seed)
        size = context.parameters[name].d_in  # the MLP's neurons
        neurons[name] = torch.randperm(size, generator=generator)[: chosen.numel()]
    return neurons


@locator.hookimpl
def register_localizers(register):  # type: ignore[no-untyped-def]
    """Register the random baseline."""
    register(RandomLocalizer)
