r"""One threshold-free score per method, and the diagonal dominance of a skill x skill matrix.

**Input.** Long-format rows (`Effect`), one per method, removed skill (the skill whose set was
pruned), evaluated skill, proportion and seed, holding the real fraction of scored entries the
method edited and its **excess harm**: the harm the edit did to the evaluated skill beyond the
matched random selection of the same size at the same seed. Harm is a change in the direction of
damage (up for a loss such as NLL, down for an accuracy); give every skill in one unit, for
example the relative change against the unedited model (`relative_harm`), since skills are
averaged together.

**The curve.** For method *m* and removed skill *s*, at each proportion of the grid, with
:math:`E_{s,e}` the excess harm to skill *e* (the median over seeds, so that one random draw
far more harmful than the others cannot dominate; with two seeds, their mean) and
:math:`\bar E_{s,\neg s}` its mean over the other evaluated skills,

.. math:: G_s = \underbrace{(E_{s,s} - \bar E_{s,\neg s})}_{\text{specificity}}
                - \underbrace{\bar E_{s,\neg s}}_{\text{collateral}}
              = E_{s,s} - 2\,\bar E_{s,\neg s},

placed at the method's real fraction edited *f* (the mean over seeds). Removing the own skill
beyond random raises it; harming the others beyond random lowers it twice: once because the set
is then less specific, once as collateral damage, so a set that costs every skill alike (a
method that destroys everything) scores below zero rather than high. With no other skill
evaluated, :math:`G_s = E_{s,s}`.

**The score** is the mean height of the curve over a common range of fractions
:math:`[f_\mathrm{lo}, f_\mathrm{hi}]` on a log axis (the area under it, as MIB's CPR and CMD
are areas under a faithfulness curve over circuit sizes, divided by the width):

.. math:: S_m = \frac{1}{|\mathcal S|} \sum_{s} \frac{1}{\log f_\mathrm{hi} - \log f_\mathrm{lo}}
          \int_{\log f_\mathrm{lo}}^{\log f_\mathrm{hi}} \tilde G_s(u)\,du,

where :math:`\tilde G_s` interpolates :math:`G_s` linearly in :math:`\log f` between the measured
fractions, is 0 below the smallest (nothing measured is credited) and keeps its last value above
the largest. The range is the same for every method compared (`fraction_range`: the smallest
and largest fraction any of them edited), so a method that needs more entries for the same
effect covers less area: padding a set with random entries shifts its curve right and lowers
the score, dropping part of it lowers the curve. Matched random scores 0 in expectation, since
its excess harm is a difference of two random draws of one size. Rows with a fraction of 0
(nothing selected) place no point.

**Diagonal dominance** of an N x N matrix (row: removed skill, column: evaluated skill, cell:
excess harm) is the mean of the diagonal minus the mean off the diagonal
(`diagonal_dominance`); `dominance_interval` gives its 95% percentile bootstrap interval over
the first axis of per-seed matrices (or takes ready-made bootstrap replicates, for example of a
paired bootstrap over items and seeds).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from locator.errors import LocatorError

REPLICATES = 2000
"""Bootstrap replicates per interval."""


@dataclass(frozen=True, kw_only=True)
class Effect:
    """One measurement: `method`'s set for skill `removed` pruned at `proportion` under `seed`
    (editing `fraction` of the scored entries), evaluated on skill `evaluated`; `excess` is the
    harm beyond the matched random selection of the same size and seed (positive: more harm)."""

    method: str
    removed: str
    evaluated: str
    proportion: float
    seed: int
    fraction: float
    excess: float


def relative_harm(value: float, reference: float, higher_is_better: bool) -> float:
    """The harm of moving a metric from `reference` to `value`, relative to the reference:
    ``(value - reference) / |reference|`` for a loss, the opposite for a score."""
    if reference == 0:
        raise LocatorError("relative harm needs a nonzero reference value.")
    change = (value - reference) / abs(reference)
    return -change if higher_is_better else change


@dataclass(frozen=True, kw_only=True)
class Curve:
    """The points ``(fraction, G)`` of one method and removed skill, by increasing fraction."""

    fractions: tuple[float, ...]
    heights: tuple[float, ...]

    def area(self, low: float, high: float) -> float:
        """The mean height over ``[low, high]`` on a log axis (see the module docs)."""
        if not self.fractions:
            return 0.0
        logs = [math.log(f) for f in self.fractions]
        lo, hi = math.log(low), math.log(high)
        if lo == hi:
            return float(np.interp(lo, logs, self.heights)) if lo >= logs[0] else 0.0
        start = max(lo, logs[0])  # below the first measured fraction the curve is 0
        if start >= hi:
            return 0.0
        # piecewise linear between the measured fractions, constant beyond: the trapezoid
        # rule over its breakpoints is exact
        grid = [start, *(u for u in logs if start < u < hi), hi]
        heights = np.interp(grid, logs, self.heights)
        total = float(np.sum(np.diff(grid) * (heights[1:] + heights[:-1]) / 2))
        return total / (hi - lo)


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values)


def curves(effects: Sequence[Effect], method: str) -> dict[str, Curve]:
    """The curve of `method` for each removed skill (see the module docs)."""
    cells: dict[tuple[str, float], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    fractions: dict[tuple[str, float], list[float]] = defaultdict(list)
    for effect in effects:
        if effect.method != method:
            continue
        key = (effect.removed, effect.proportion)
        cells[key][effect.evaluated].append(effect.excess)
        if effect.evaluated == effect.removed:
            fractions[key].append(effect.fraction)
    if not cells:
        raise LocatorError(f"no effects of method {method!r} to score.")
    points: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for (removed, proportion), by_skill in sorted(cells.items()):
        if removed not in by_skill:
            raise LocatorError(
                f"method {method!r}, skill {removed!r} at proportion {proportion}: its own skill "
                "was not evaluated; the score needs each set's effect on its own skill."
            )
        fraction = _mean(fractions[(removed, proportion)])
        if fraction <= 0:
            continue  # nothing selected: no point on a log axis
        own = statistics.median(by_skill[removed])
        others = [statistics.median(v) for skill, v in by_skill.items() if skill != removed]
        height = own - 2 * _mean(others) if others else own
        points[removed].append((fraction, height))
    found = {}
    for removed in sorted({removed for removed, _ in cells}):
        ordered = sorted(points.get(removed, []))
        found[removed] = Curve(
            fractions=tuple(f for f, _ in ordered), heights=tuple(g for _, g in ordered)
        )
    return found


def fraction_range(effects: Sequence[Effect]) -> tuple[float, float]:
    """The smallest and largest nonzero fraction edited in `effects` (all methods): the common
    range of the scores."""
    edited = [effect.fraction for effect in effects if effect.fraction > 0]
    if not edited:
        raise LocatorError("no effect edited any entry: nothing to score.")
    return min(edited), max(edited)


def score(effects: Sequence[Effect], method: str, low: float, high: float) -> float:
    """The score of `method` over the fractions ``[low, high]`` (see the module docs)."""
    if not 0 < low <= high:
        raise LocatorError(f"the fraction range must satisfy 0 < low <= high, got {low}, {high}.")
    return _mean(curve.area(low, high) for curve in curves(effects, method).values())


@dataclass(frozen=True, kw_only=True)
class Estimate:
    """A value with its 95% interval (NaN bounds when there is nothing to resample)."""

    value: float
    low: float
    high: float


def _percentiles(values: Sequence[float]) -> tuple[float, float]:
    low, high = np.percentile(np.asarray(values, dtype=float), [2.5, 97.5])
    return float(low), float(high)


def scores(
    effects: Sequence[Effect],
    *,
    replicates: int = REPLICATES,
    seed: int = 0,
    bootstrap: Sequence[Sequence[Effect]] | None = None,
) -> dict[str, Estimate]:
    """Every method's score over the common `fraction_range`, best first, with a 95%
    percentile interval: over the scores of the `bootstrap` replicates of `effects` when given
    (for example a paired bootstrap over items and seeds, each replicate scored over the same
    range), else over `replicates` resamplings of the seeds, drawn with replacement per method,
    removed skill and proportion (the same seeds for every evaluated skill). One seed everywhere
    and no replicates give NaN bounds."""
    low, high = fraction_range(effects)
    methods = sorted({effect.method for effect in effects})
    groups: dict[tuple[str, str, float], dict[int, list[Effect]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for effect in effects:
        groups[(effect.method, effect.removed, effect.proportion)][effect.seed].append(effect)
    rng = np.random.default_rng(seed)
    found = {}
    for method in methods:
        value = score(effects, method, low, high)
        mine = [by_seed for key, by_seed in groups.items() if key[0] == method]
        if bootstrap is not None:
            draws = [score(replicate, method, low, high) for replicate in bootstrap]
        elif any(len(by_seed) > 1 for by_seed in mine):
            draws = []
            for _ in range(replicates):
                resampled: list[Effect] = []
                for by_seed in mine:
                    seeds = sorted(by_seed)
                    for pick in rng.integers(len(seeds), size=len(seeds)):
                        resampled += by_seed[seeds[pick]]
                draws.append(score(resampled, method, low, high))
        else:
            found[method] = Estimate(value=value, low=math.nan, high=math.nan)
            continue
        bounds = _percentiles(draws)
        found[method] = Estimate(value=value, low=bounds[0], high=bounds[1])
    return dict(sorted(found.items(), key=lambda item: -item[1].value))


def diagonal_dominance(matrix: np.ndarray | Sequence[Sequence[float]]) -> float:
    """Mean of the diagonal minus mean of the off-diagonal cells of an N x N matrix (N >= 2)
    whose cell (i, j) is the harm that removing skill i's set did to skill j."""
    cells = np.asarray(matrix, dtype=float)
    if cells.ndim != 2 or cells.shape[0] != cells.shape[1] or cells.shape[0] < 2:
        raise LocatorError(
            f"diagonal dominance needs an N x N matrix with N >= 2, got {cells.shape}."
        )
    n = cells.shape[0]
    diagonal = float(np.trace(cells)) / n
    return diagonal - (float(cells.sum()) - diagonal * n) / (n * (n - 1))


def dominance_interval(
    per_seed: np.ndarray | Sequence[Sequence[Sequence[float]]],
    *,
    replicates: int = REPLICATES,
    seed: int = 0,
    bootstrap: np.ndarray | Sequence[Sequence[Sequence[float]]] | None = None,
) -> Estimate:
    """The diagonal dominance of the mean of `per_seed` (shape seeds x N x N) with a 95%
    interval: percentiles of the dominance of `bootstrap` replicate matrices when given (for
    example a paired bootstrap over items and seeds), else of `replicates` resamplings of the
    seeds with replacement (NaN bounds with one seed)."""
    matrices = np.asarray(per_seed, dtype=float)
    if matrices.ndim != 3:
        raise LocatorError(f"per_seed must have shape (seeds, N, N), got {matrices.shape}.")
    value = diagonal_dominance(matrices.mean(axis=0))
    if bootstrap is not None:
        low, high = _percentiles([diagonal_dominance(m) for m in np.asarray(bootstrap, float)])
        return Estimate(value=value, low=low, high=high)
    if matrices.shape[0] < 2:
        return Estimate(value=value, low=math.nan, high=math.nan)
    rng = np.random.default_rng(seed)
    picks = rng.integers(matrices.shape[0], size=(replicates, matrices.shape[0]))
    low, high = _percentiles([diagonal_dominance(matrices[p].mean(axis=0)) for p in picks])
    return Estimate(value=value, low=low, high=high)
