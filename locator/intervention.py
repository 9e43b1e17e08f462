"""The intervention engine: the only code in locator that edits weights.

`intervene` multiplies the selected entries by a factor (0 prunes, 1.1 scales) inside a `with`
block and restores them bit for bit on exit, also when the block raises. It saves only the touched
entries, so a small localization on a large model costs little memory and time. `apply` makes the
same edit permanently, for exporting an edited model with `save_pretrained`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from locator.errors import LocatorError
from locator.localization import Localization


def check_factor(factor: Any) -> float:
    """The intervention factor as a float; raise unless it is a finite real number (not bool).

    The one rule for factors, applied by `intervene`, `apply`, the CLI and suites alike.
    """
    if (
        isinstance(factor, bool)
        or not isinstance(factor, (int, float))
        or not math.isfinite(factor)
    ):
        raise LocatorError(
            f"factor must be a finite number (0 prunes, 1.1 scales by 10%), got {factor!r}."
        )
    return float(factor)


def _edit(
    model: nn.Module, localization: Localization, factor: float
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Scale the selected entries in place; return (flat weight, indices, old values) per edit."""
    factor = check_factor(factor)
    if not isinstance(localization, Localization):
        raise LocatorError(
            f"expected a Localization, got {type(localization).__name__}; read a file with "
            "locator.Localization.load(path)."
        )
    localization.check(model)
    parameters = dict(model.named_parameters())
    saved = []
    try:
        with torch.no_grad():
            for name, selection in localization.selections.items():
                if selection.count == 0:
                    continue
                weight = parameters[name].data
                if not weight.is_contiguous():
                    raise RuntimeError(f"{name} is not contiguous; cannot edit it in place")
                flat = weight.view(-1)
                indices = selection.indices().to(flat.device)
                old = flat.index_select(0, indices)  # a copy: the saved entries
                saved.append((flat, indices, old))
                if factor == 0:  # pruning: no scaled copy to build
                    flat.index_fill_(0, indices, 0.0)
                else:
                    flat.index_copy_(0, indices, old * factor)
    except BaseException:
        _restore(saved)
        raise
    return saved


def _restore(saved: list[tuple[Tensor, Tensor, Tensor]]) -> None:
    with torch.no_grad():
        for flat, indices, old in reversed(saved):
            flat.index_copy_(0, indices, old)


@contextmanager
def intervene(model: nn.Module, localization: Localization, factor: float) -> Iterator[nn.Module]:
    """Multiply the selected entries by `factor` inside the block; restore them exactly after.

    Example::

        with locator.intervene(model, localization, 0.0):  # prune
            evaluate(model)
    """
    saved = _edit(model, localization, factor)
    try:
        yield model
    finally:
        _restore(saved)


def apply(model: nn.Module, localization: Localization, factor: float) -> nn.Module:
    """Multiply the selected entries by `factor` permanently and return the model."""
    _edit(model, localization, factor)
    return model
