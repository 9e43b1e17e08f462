"""Ranking: the top entries of a score, one sort and many cuts, under one tie rule.

Methods rank scores per matrix, per output row or over all neurons and cut every proportion
from one ranking (`top_cuts`, `ranked_selections`, `split_neurons`); a cut keeps ``floor(K *
n)`` entries (`top_count`) unless a method counts otherwise. Ties go to the lower index,
whatever the device (`top_indices`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from locator.localization import Neurons, Selection

if TYPE_CHECKING:
    from locator.localizer import LocalizationContext


def top_count(proportion: float, numel: int) -> int:
    """``floor(proportion * numel)``, robust to the binary rounding of decimal proportions."""
    return math.floor(proportion * numel * (1 + 1e-12))


def _ranked(scores: Tensor, count: int) -> Tensor:
    """Column indices ``[rows, count]`` of the `count` largest entries of each row of `scores`
    (``[rows, n]``), in the tie rule's order: score descending, then column ascending.

    `torch.topk` picks among equal scores in no defined order (it differs between devices and
    versions), so only its boundary value is used: every entry above it is taken, and of the
    entries equal to it, those of lowest column until the count is reached. The result does
    not depend on the device, and any prefix is the top of a smaller count under the same rule.
    """
    rows, n = scores.shape
    count = min(count, n)
    if count == 0:
        return torch.empty(rows, 0, dtype=torch.long, device=scores.device)
    boundary = torch.topk(scores, count, dim=1, sorted=False).values.amin(1, keepdim=True)
    taken = scores > boundary  # [rows, n]
    room = count - taken.sum(1)  # [rows]: how many tied entries each row takes
    tied = (scores == boundary).nonzero()  # [ties, 2], row-major: columns ascending per row
    per_row = torch.bincount(tied[:, 0], minlength=rows)
    first = per_row.cumsum(0) - per_row  # where each row's ties start in `tied`
    rank = torch.arange(tied.shape[0], device=tied.device) - first[tied[:, 0]]
    kept = tied[rank < room[tied[:, 0]]]
    taken[kept[:, 0], kept[:, 1]] = True  # now exactly `count` per row
    columns = taken.nonzero()[:, 1].view(rows, count)  # ascending within each row
    values = scores.gather(1, columns)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    return columns.gather(1, order)


def top_indices(scores: Tensor, count: int) -> Tensor:
    """Flat indices of the `count` largest scores, largest first, so that every prefix is the
    top of a smaller count. Ties go to the lower flat index (the tie rule, see `_ranked`)."""
    return _ranked(scores.reshape(1, -1), count)[0]


def top_cuts(
    scores: Tensor,
    proportions: Sequence[float],
    group: Literal["matrix", "row"] = "matrix",
    count: Callable[[float, int], int] = top_count,
) -> list[Tensor]:
    """For each proportion K, flat CPU indices into ``scores`` (``[d_out, d_in]``) of its
    largest entries: the top ``count(K, numel)`` of the matrix (``group="matrix"``) or the top
    ``count(K, d_in)`` of every row (``"row"``), all cut from one ranking. `count` is
    `top_count` (floor) unless a method counts otherwise. Ties go to the lower index."""
    if group == "row":
        d_out, d_in = scores.shape
        counts = [count(p, d_in) for p in proportions]
        # Columns of each row's largest scores, best first: [d_out, max count].
        columns = _ranked(scores, max(counts)).cpu()
        row_starts = torch.arange(d_out)[:, None] * d_in  # [d_out, 1]
        return [(row_starts + columns[:, :k]).flatten() for k in counts]
    counts = [count(p, scores.numel()) for p in proportions]
    ranked = top_indices(scores, max(counts)).cpu()
    return [ranked[:k] for k in counts]


def ranked_selections(
    context: LocalizationContext,
    proportions: Sequence[float],
    score: Callable[[str], Tensor],
    group: Literal["matrix", "row"] = "matrix",
    count: Callable[[float, int], int] = top_count,
) -> list[dict[str, Selection]]:
    """The selections of each proportion from one ranking per scored matrix: `score(name)` is
    parameter `name`'s ``[d_out, d_in]`` score, cut at every proportion by `top_cuts` (`count`:
    the entries kept of a group of n)."""
    selections: list[dict[str, Selection]] = [{} for _ in proportions]
    for name, parameter in context.parameters.items():
        for i, top in enumerate(top_cuts(score(name), proportions, group, count)):
            selections[i][name] = Selection.from_indices(
                context.stored_indices(name, top), parameter.shape
            )
    return selections


def split_neurons(found: Tensor, sizes: Mapping[str, int]) -> Neurons:
    """Neurons `found` by their index among all the MLPs' neurons laid end to end, in the order
    of `sizes` (each MLP's neuron count by down-projection parameter name), as each MLP's own
    neuron indices."""
    starts = torch.tensor([0, *sizes.values()]).cumsum(0)
    return Neurons(
        {
            name: found[(found >= starts[i]) & (found < starts[i + 1])] - starts[i]
            for i, name in enumerate(sizes)
        }
    )
