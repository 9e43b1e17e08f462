"""A third-party method: the largest-magnitude weights of each matrix."""

from dataclasses import dataclass

import locator


@dataclass(frozen=True, kw_only=True)
class MagnitudeConfig(locator.Options):
    """The options: `-o power 2` on the command line, `options = { power = 2 }` in a suite."""

    power: float = locator.option(1.0, help="the exponent of |W|")


class MagnitudeLocalizer(locator.Localizer):
    """Top-K of |W| ** power per matrix."""

    name = "magnitude"
    Config = MagnitudeConfig
    uses_controls = False  # reads the weights alone: control corpora are refused

    def localize(self, context, proportion):
        selections = {}
        for name, parameter in context.parameters.items():
            scores = context.weights[name].abs() ** self.config.power
            chosen = locator.top_indices(scores, locator.top_count(proportion, parameter.numel))
            selections[name] = locator.Selection.from_indices(chosen, parameter.shape)
        return selections


@locator.hookimpl
def register_localizers(register):
    """Make the method known to locator."""
    register(MagnitudeLocalizer)
