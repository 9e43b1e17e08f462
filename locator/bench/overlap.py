"""Consistency and placement of selections, from the localization files beside the results.

Consistency is the MathNeuro paper's overlap analysis: the Jaccard overlap of the selections of
different seeds at one sample count, and of the same seed at two sample counts. Each overlap is
reported next to what two independent, uniformly random selections of the same per-matrix sizes
would share, so that overlap by construction (a random baseline whose positions follow its seed)
is never read as consistency. For matrices of ``n`` entries holding selections of sizes ``a`` and
``b``, the expected intersection is ``a * b / n``; the expected Jaccard is approximated by the
ratio of expectations ``I / (A + B - I)`` with ``I``, ``A``, ``B`` summed over matrices (exact as
the counts grow; within a few percent already at tens of entries per matrix).

Placement: per decoder block and per module kind, the share of all selected entries that falls
there divided by that group's share of the scored entries (1.0 = as a uniform draw would place).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from locator.errors import LocatorError

Row = Mapping[str, Any]


class Selections:
    """Loads selection files on demand, keeping only the most recent few in memory; a damaged
    file is an error saying how to have it saved again."""

    def __init__(self, directory: Path, keep: int = 8) -> None:
        self.directory, self.keep = directory, keep
        self.loaded: dict[str, Any] = {}

    def __call__(self, relative: str) -> Any:
        """The localization saved at `relative` (to the results folder)."""
        from locator.localization import Localization

        if relative not in self.loaded:
            if len(self.loaded) >= self.keep:
                self.loaded.pop(next(iter(self.loaded)))
            try:
                self.loaded[relative] = Localization.load(self.directory / relative)
            except LocatorError as error:
                raise self._damaged(relative, str(error)) from None
        return self.loaded[relative]

    def check(self, relative: str) -> None:
        """Refuse a selection file that is missing or whose header is not a localization's
        (reads the header only)."""
        from safetensors import SafetensorError, safe_open

        path = self.directory / relative
        try:
            with safe_open(str(path), framework="pt") as handle:
                found = "locator" in (handle.metadata() or {})
        except (SafetensorError, OSError) as error:
            raise self._damaged(
                relative, f"{str(path)!r} is not a safetensors file: {error}"
            ) from None
        if not found:
            raise self._damaged(relative, f"{str(path)!r} is not a localization file")

    def _damaged(self, relative: str, problem: str) -> LocatorError:
        return LocatorError(
            f"{problem.rstrip('.')}; delete {relative} and rerun `locator bench` into "
            f"{str(self.directory)!r} to save it again, then rerun the report."
        )


def expected_jaccard(first: Any, second: Any) -> float:
    """The Jaccard overlap expected of two independent uniformly random selections with the
    per-matrix sizes of localizations `first` and `second` (ratio of expectations)."""
    both = either = 0.0
    for name, mine in first.selections.items():
        theirs = second.selections.get(name)
        b = theirs.count if theirs is not None else 0
        common = mine.count * b / mine.numel if mine.numel else 0.0
        both += common
        either += mine.count + b - common
    either += sum(s.count for n, s in second.selections.items() if n not in first.selections)
    return both / either if either else 1.0


@dataclass(frozen=True, kw_only=True)
class Overlap:
    """Jaccard overlaps of pairs of selections of one method at one proportion: across seeds at
    `num_samples`, or (`versus` set) between `num_samples` and `versus` samples at each seed."""

    label: str
    proportion: float
    num_samples: int
    versus: int | None
    values: tuple[float, ...]
    expected: float

    @property
    def mean(self) -> float:
        """Mean over pairs."""
        return statistics.fmean(self.values)

    @property
    def low(self) -> float:
        """Smallest over pairs."""
        return min(self.values)

    @property
    def high(self) -> float:
        """Largest over pairs."""
        return max(self.values)


def selection_files(rows: Iterable[Row]) -> dict[tuple[Any, ...], str]:
    """(label, proportion, num_samples, seed) -> selection file, one per localization."""
    return {
        (r["label"], r["proportion"], r["num_samples"], r["seed"]): r["selection"] for r in rows
    }


def overlaps(rows: Iterable[Row], load: Selections) -> tuple[list[Overlap], list[Overlap]]:
    """Overlaps across seeds (per label, proportion, sample count) and across sample counts
    (each count against the largest, at the same seed). Pairs of empty selections are left
    out (nothing to compare)."""
    files = selection_files(rows)
    cells: dict[tuple[Any, ...], dict[int, dict[int, str]]] = defaultdict(lambda: defaultdict(dict))
    for (label, proportion, num_samples, seed), file in files.items():
        cells[(label, proportion)][num_samples][seed] = file
    across_seeds, across_samples = [], []
    for (label, proportion), by_count in cells.items():
        for num_samples, seeds in sorted(by_count.items()):
            pairs = [(load(a), load(b)) for a, b in combinations(seeds.values(), 2)]
            found = _pairs(label, proportion, num_samples, None, pairs)
            if found:
                across_seeds.append(found)
        largest = max(by_count)
        for num_samples, seeds in sorted(by_count.items()):
            common = sorted(set(seeds) & set(by_count[largest]))
            if num_samples == largest or not common:
                continue
            pairs = [(load(seeds[s]), load(by_count[largest][s])) for s in common]
            found = _pairs(label, proportion, num_samples, largest, pairs)
            if found:
                across_samples.append(found)
    return across_seeds, across_samples


def _pairs(
    label: str,
    proportion: float,
    num_samples: int,
    versus: int | None,
    pairs: list[Any],
    jaccard: Callable[[Any, Any], float] = lambda a, b: a.jaccard(b),
) -> Overlap | None:
    kept = [(a, b) for a, b in pairs if a.count() or b.count()]
    if not kept:
        return None
    return Overlap(
        label=label,
        proportion=proportion,
        num_samples=num_samples,
        versus=versus,
        values=tuple(float(jaccard(a, b)) for a, b in kept),
        expected=statistics.fmean(expected_jaccard(a, b) for a, b in kept),
    )


def variant_overlaps(rows: Iterable[Row], load: Selections) -> list[Overlap]:
    """Overlaps between the variants of one method (configurations with the same method name
    and different labels, such as a faithful and a published mode) at each proportion and
    sample count, one pair per seed; `Overlap.label` names the pair "first / second"."""
    rows = list(rows)
    method = {r["label"]: r["method"] for r in rows}
    files = selection_files(rows)
    cells: dict[tuple[Any, ...], dict[str, str]] = defaultdict(dict)
    for (label, proportion, num_samples, seed), file in files.items():
        cells[(method[label], proportion, num_samples, seed)][label] = file
    pairs: dict[tuple[Any, ...], list[Any]] = defaultdict(list)
    for (_, proportion, num_samples, _), labels in cells.items():
        for a, b in combinations(sorted(labels), 2):
            pairs[(f"{a} / {b}", proportion, num_samples)].append(
                (load(labels[a]), load(labels[b]))
            )
    from locator.localization import selections_jaccard

    def jaccard(a: Any, b: Any) -> float:  # a parameter only one side scores: empty there
        return selections_jaccard(a.selections, b.selections)

    found = [
        _pairs(label, proportion, num_samples, None, kept, jaccard=jaccard)
        for (label, proportion, num_samples), kept in sorted(pairs.items())
    ]
    return [o for o in found if o is not None]


def placement(localization: Any) -> tuple[dict[int, float], dict[str, float]]:
    """Per decoder block and per module kind: its share of the selected entries over its share
    of the scored entries (1.0 = uniform); empty when nothing is selected."""
    from locator.architecture import layer_and_kind

    selected, total = localization.count(), localization.numel()
    if selected == 0:
        return {}, {}
    groups: tuple[dict[Any, list[int]], dict[Any, list[int]]] = ({}, {})
    for name, selection in localization.selections.items():
        for group, key in zip(groups, layer_and_kind(name), strict=True):
            counts = group.setdefault(key, [0, 0])
            counts[0] += selection.count
            counts[1] += selection.numel
    layers, kinds = (
        {k: (c / selected) / (n / total) for k, (c, n) in group.items() if n} for group in groups
    )
    return layers, kinds  # type: ignore[return-value]
