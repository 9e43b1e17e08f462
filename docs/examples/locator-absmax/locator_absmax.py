"""A third-party method with its own statistic: |W| x the largest |input| seen per channel."""

from dataclasses import dataclass

import torch

import locator


@dataclass(frozen=True, kw_only=True)
class InputAbsMax(locator.StatisticKind):
    """Per input channel of each scored linear, the largest |x| on a real token."""

    def batch(self, observed):
        real = observed.wide().abs() * observed.real()  # [batch, seq, d_in], padding 0
        return real.amax(dim=(0, 1)).double()  # [d_in]

    def merge(self, total, value):
        return value if total is None else torch.maximum(total, value)


class AbsMaxLocalizer(locator.Localizer):
    """Top-K of |W| x max |x_j| per matrix."""

    name = "absmax"
    statistics = frozenset({"input_abs_max"})
    uses_controls = False

    def localize(self, context, proportion):
        selections = {}
        for name, parameter in context.parameters.items():
            peak = context.target.get("input_abs_max", name).float()  # [d_in]
            scores = context.matrix(name).abs() * peak  # [d_out, d_in]
            top = locator.top_indices(scores, locator.top_count(proportion, parameter.numel))
            selections[name] = locator.Selection.from_indices(
                context.stored_indices(name, top), parameter.shape
            )
        return selections


@locator.hookimpl
def register_statistics(register):
    """Make the statistic kind known: methods declare it by name."""
    register(
        InputAbsMax(
            name="input_abs_max",
            site="linear_input",
            description="per input channel, the largest |x| on a real token",
        )
    )


@locator.hookimpl
def register_localizers(register):
    """Make the method known to locator."""
    register(AbsMaxLocalizer)
