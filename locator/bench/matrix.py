"""The skill x skill matrix and the leaderboard of a matrix experiment.

In a matrix experiment every method localizes each skill's calibration corpus as the target
(against the other skills' corpora as controls), the set is pruned (factor 0) at each proportion
K, and every skill's task is evaluated. A row of the results then belongs to the matrix cell
(removed skill, measured skill): the removed skill is the one whose corpus is the row's target,
the measured skill the one whose (task, metric) the row holds.

**A cell** is the excess harm of `locator.bench.score`: per seed, the harm the method's edit did
to the measured skill minus the harm its matched random baseline (``matched_to`` in the
baseline's method_config) did at the same seed, both relative to the unedited model
(`locator.bench.score.relative_harm`: positive = more harm, in units of the unedited value, so
that skills measured in different units can be compared), summarized by the median over seeds
(the mean of two), so that one random draw far more harmful than the others cannot dominate.
Its 95% interval is a percentile bootstrap: each replicate resamples the evaluated items (the
same items for the method and its baseline, and for every cell measured on the same items, with
`locator.bench.specificity.Bootstrap`'s draws) and the seeds (the same picks for every cell),
where per-item scores were kept (``_samples/``); else the seeds alone. With one seed and no
per-item scores a cell has no interval (NaN bounds), never a made-up one.

**Diagonal dominance** (`locator.bench.score.diagonal_dominance`) of each matrix has the 95%
interval of the same replicates, taken jointly over the cells. **The score** of each method is
`locator.bench.score.score` over the common range of fractions edited of the methods compared
(one model, dtype and sample count), its interval from the same replicates. The **overlap**
matrix holds the Jaccard overlap of the skills' sets at each seed (mean over common seeds), from
the selection files under ``_selections/``.

A method with no matched random baseline has no cells and no score: it is listed as such.
A matched random baseline itself is not ranked (its excess over itself is 0 by construction).
"""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from locator.bench.document import Document
from locator.bench.metrics import groups, higher_is_better, write_csv
from locator.bench.overlap import Selections
from locator.bench.score import (
    Effect,
    Estimate,
    diagonal_dominance,
    dominance_interval,
    fraction_range,
    score,
)
from locator.bench.specificity import Bootstrap, Samples, common_items, matched_labels
from locator.errors import LocatorError

if TYPE_CHECKING:
    from locator.bench.suite import SkillSpec

Row = Mapping[str, Any]
FEW_DRAWS = 3
"""A matched baseline with fewer seeded draws than this gets a note."""
EXPERIMENT = ("model", "dtype", "num_samples")
"""The fields (of a row, a `Matrix`, a `Standing`) that name one experiment."""


@dataclass(frozen=True, kw_only=True)
class Matrix:
    """One method's skill x skill matrix at one proportion (pruned), for one model, dtype and
    sample count. `cells` maps (removed skill, measured skill) to the excess harm with its 95%
    interval (missing: not measured, or no matched baseline); `jaccard` maps a pair of removed
    skills to the overlap of their sets (empty without selection files); `draws` is the fewest
    seeds (draws of the matched baseline) any cell was measured at (0 without a baseline);
    `items` says that every cell's interval resampled the evaluated items as well."""

    model: str
    dtype: str
    num_samples: int
    label: str
    proportion: float
    fraction: float
    skills: tuple[str, ...]
    matched: str | None
    draws: int
    items: bool
    cells: Mapping[tuple[str, str], Estimate]
    dominance: Estimate | None
    jaccard: Mapping[tuple[str, str], float]


@dataclass(frozen=True, kw_only=True)
class Standing:
    """One method's place on the leaderboard of one model, dtype and sample count: its score with
    95% interval (None without a matched baseline), the fewest draws of its baseline, and its
    mean seconds per localization of statistics and of localization (from the rows' timings).
    Without a matched baseline, or where a set's own skill was not measured, there is no score
    (`note` says why)."""

    model: str
    dtype: str
    num_samples: int
    label: str
    matched: str | None
    draws: int
    score: Estimate | None
    low_fraction: float
    high_fraction: float
    statistics_seconds: float
    localization_seconds: float
    edited: bool = True
    """Whether any of its sets selected an entry."""

    @property
    def note(self) -> str:
        """Why the score is missing or weak, empty when it is neither."""
        if self.matched is None:
            return "no matched random baseline"
        if not self.edited:
            return "selected no entry at any K: no score"
        if self.score is None:
            return "a set's own skill was not measured: no score"
        if self.draws < FEW_DRAWS:
            return f"baseline has {self.draws} draw{'s' if self.draws != 1 else ''} (< {FEW_DRAWS})"
        return ""


@dataclass(frozen=True, kw_only=True)
class MatrixResults:
    """Everything the report shows of a matrix experiment (see `analyze`)."""

    skills: tuple[str, ...]
    matrices: tuple[Matrix, ...]
    standings: tuple[Standing, ...]


@dataclass(frozen=True, kw_only=True)
class _Cell:
    per_seed: dict[int, float]
    replicates: np.ndarray | None  # [replicates] medians over resampled seeds
    fraction: float
    items: bool


def declared_skills(directory: str | Path) -> dict[str, SkillSpec]:
    """The skills of the matrix suite a results folder was run with (its ``_suite.json``), by
    name; empty when the suite declared none (or the folder has no manifest)."""
    from locator.bench.results import read_json
    from locator.bench.suite import declared_skills as parse_skills

    path = Path(directory) / "_suite.json"
    if not path.is_file():
        return {}
    source = read_json(path).get("source")
    if not source:
        return {}
    return {skill.name: skill for skill in parse_skills(source, path)}


def _check(skills: Mapping[str, SkillSpec]) -> None:
    if len(skills) < 2:
        raise LocatorError(f"a skill x skill matrix needs at least two skills, got {len(skills)}.")
    for what, values in (
        ("corpus", [s.corpus for s in skills.values()]),
        ("task and metric", [(s.task, s.metric) for s in skills.values()]),
    ):
        if len(set(values)) < len(values):
            raise LocatorError(f"two matrix skills share one {what}; give each skill its own.")


def _cell(
    method: Mapping[int, Row], random: Mapping[int, Row], samples: Samples, bootstrap: Bootstrap
) -> _Cell | None:
    def measured(row: Row) -> bool:
        return row["value"] is not None and not math.isnan(row["value"])

    # a seed whose evaluation failed on either side is no draw of this cell
    seeds = sorted(
        s for s in set(method) & set(random) if measured(method[s]) and measured(random[s])
    )
    if not seeds:
        return None
    first = method[seeds[0]]
    higher = higher_is_better(first["metric"], first.get("higher_is_better"))
    if higher is None:
        raise LocatorError(
            f"metric {first['metric']!r} of task {first['task']!r} has no known direction; "
            "a matrix skill needs a metric where higher or lower is known to be better."
        )
    reference = first["baseline_value"]
    if not reference:
        raise LocatorError(
            f"task {first['task']!r}, metric {first['metric']!r}: the unedited value is "
            f"{reference}; a matrix skill needs a nonzero unedited value to compare skills."
        )
    scale = (-1.0 if higher else 1.0) / abs(reference)  # relative harm: positive = worse
    # + 0.0: no -0.0 where an accuracy did not move
    per_seed = {s: scale * (method[s]["value"] - random[s]["value"]) + 0.0 for s in seeds}
    fraction = statistics.fmean(method[s]["selected_fraction"] for s in seeds)
    scores = [samples.of(side[s]) for side in (method, random) for s in seeds]
    n, count = len(seeds), bootstrap.replicates
    if all(score is not None for score in scores):
        common, kept = common_items([score for score in scores if score is not None])
        counts = bootstrap.item_counts(common).astype(np.float64)  # [replicates, items]
        means = []
        for score, keep in kept:
            weights = score.weights[keep]
            with np.errstate(invalid="ignore", divide="ignore"):
                means.append((counts @ (score.values[keep] * weights)) / (counts @ weights))
        draws = scale * (np.stack(means[:n], axis=1) - np.stack(means[n:], axis=1))
        items = True
    elif n > 1:
        draws = np.tile([per_seed[s] for s in seeds], (count, 1))
        items = False
    else:
        return _Cell(per_seed=per_seed, replicates=None, fraction=fraction, items=False)
    draws = bootstrap.resample_seeds(draws)
    return _Cell(
        per_seed=per_seed, replicates=np.median(draws, axis=1), fraction=fraction, items=items
    )


def _estimate(cell: _Cell) -> Estimate:
    value = float(statistics.median(cell.per_seed.values()))
    if cell.replicates is None:
        return Estimate(value=value, low=math.nan, high=math.nan)
    low, high = np.nanpercentile(cell.replicates, [2.5, 97.5])
    return Estimate(value=value, low=float(low), high=float(high))


def _jaccard(
    files: Mapping[str, Mapping[int, str]], skills: Sequence[str], load: Selections | None
) -> dict[tuple[str, str], float]:
    if load is None:
        return {}
    found: dict[tuple[str, str], list[float]] = defaultdict(list)
    seeds = sorted({seed for by_seed in files.values() for seed in by_seed})
    for seed in seeds:  # seed outermost: the loader keeps the few most recent sets
        present = [s for s in skills if seed in files.get(s, {})]
        if not all((load.directory / files[s][seed]).is_file() for s in present):
            continue
        for i, first in enumerate(present):
            for second in present[i:]:
                value = load(files[first][seed]).jaccard(load(files[second][seed]))
                found[(first, second)].append(value)
                found[(second, first)].append(value)
    return {pair: statistics.fmean(values) for pair, values in found.items()}


def analyze(
    rows: Sequence[Row],
    skills: Mapping[str, SkillSpec],
    samples: Samples,
    *,
    load: Selections | None = None,
    bootstrap: Bootstrap | None = None,
) -> MatrixResults:
    """The matrices and the leaderboard of the pruning rows (factor 0) of `rows` (as
    `locator.bench.results.read_results(DIR).to_pylist()` gives them) whose target is a skill's
    corpus and whose (task, metric) is a skill's, with per-item scores `samples`
    (`locator.bench.specificity.read_samples`) and selection files read by `load` (no overlap
    without it). See the module docs."""
    _check(skills)
    names = tuple(skills)
    by_corpus = {skill.corpus: name for name, skill in skills.items()}
    by_measure = {(skill.task, skill.metric): name for name, skill in skills.items()}
    bootstrap = bootstrap or Bootstrap()
    matches = matched_labels(rows)
    baselines = set(matches.values())
    sides: dict[tuple[Any, ...], dict[int, Row]] = defaultdict(dict)
    files: dict[tuple[Any, ...], dict[str, dict[int, str]]] = defaultdict(lambda: defaultdict(dict))
    configurations: dict[tuple[Any, ...], dict[str, Row]] = defaultdict(dict)
    order: dict[tuple[Any, ...], None] = {}
    for row in rows:
        removed = by_corpus.get(row["target"])
        measured = by_measure.get((row["task"], row["metric"]))
        if row["factor"] != 0 or removed is None or measured is None:
            continue
        experiment = tuple(row[field] for field in EXPERIMENT)
        sides[(*experiment, row["label"], row["proportion"], removed, measured)][row["seed"]] = row
        files[(*experiment, row["label"], row["proportion"])][removed][row["seed"]] = row[
            "selection"
        ]
        configurations[(*experiment, row["label"])][row["config_hash"]] = row
        if row["label"] not in baselines:
            order[(*experiment, row["label"], row["proportion"])] = None
    if not order:
        raise LocatorError(
            "no pruning rows of these results belong to the matrix: none has a skill's corpus "
            f"({', '.join(s.corpus for s in skills.values())}) as target and a skill's task and "
            "metric."
        )
    labels = {key[3]: None for key in order}  # first seen first
    ranks = {label: i for i, label in enumerate(labels)}
    matrices, found_cells = [], {}
    for key in sorted(order, key=lambda k: (str(k[:3]), ranks[k[3]], k[4])):
        experiment, label, proportion = key[:3], key[3], key[4]
        matched = matches.get(label)
        cells: dict[tuple[str, str], _Cell] = {}
        fractions = []
        for removed in names:
            for measured in names:
                mine = sides.get((*experiment, label, proportion, removed, measured))
                if not mine:
                    continue
                fractions += [r["selected_fraction"] for r in mine.values()]
                theirs = sides.get((*experiment, matched, proportion, removed, measured))
                cell = _cell(mine, theirs, samples, bootstrap) if theirs else None
                if cell is not None:
                    cells[(removed, measured)] = cell
        found_cells[key] = cells
        estimates = {pair: _estimate(cell) for pair, cell in cells.items()}
        dominance = None
        if len(cells) == len(names) ** 2:
            values = [[estimates[(i, j)].value for j in names] for i in names]
            if all(cell.replicates is not None for cell in cells.values()):
                replicates = np.stack(
                    [
                        np.stack([cells[(i, j)].replicates for j in names], axis=1)  # type: ignore[misc]
                        for i in names
                    ],
                    axis=1,
                )  # [replicates, N, N]
                dominance = dominance_interval([values], bootstrap=replicates)
            else:
                dominance = Estimate(value=diagonal_dominance(values), low=math.nan, high=math.nan)
        draws = [len(cell.per_seed) for cell in cells.values()]
        matrices.append(
            Matrix(
                **dict(zip(EXPERIMENT, experiment, strict=True)),
                label=label,
                proportion=proportion,
                fraction=statistics.fmean(fractions) if fractions else math.nan,
                skills=names,
                matched=matched if cells else None,
                draws=min(draws, default=0),
                items=bool(cells) and all(cell.items for cell in cells.values()),
                cells=estimates,
                dominance=dominance,
                jaccard=_jaccard(files[key], names, load),
            )
        )
    standings = _standings(matrices, found_cells, configurations, bootstrap.replicates)
    return MatrixResults(skills=names, matrices=tuple(matrices), standings=tuple(standings))


def _effects(
    label: str,
    proportion: float,
    cells: Mapping[tuple[str, str], _Cell],
    replicate: int | None = None,
) -> list[Effect]:
    """The effects of one method's cells at one proportion: one per seed, or with `replicate`
    one per cell, that replicate's median over seeds."""
    return [
        Effect(
            method=label,
            removed=removed,
            evaluated=measured,
            proportion=proportion,
            seed=seed,
            fraction=cell.fraction,
            excess=excess,
        )
        for (removed, measured), cell in cells.items()
        for seed, excess in (
            cell.per_seed.items() if replicate is None else [(0, float(cell.replicates[replicate]))]  # type: ignore[index]
        )
    ]


def _standings(
    matrices: Sequence[Matrix],
    cells: Mapping[tuple[Any, ...], Mapping[tuple[str, str], _Cell]],
    configurations: Mapping[tuple[Any, ...], Mapping[str, Row]],
    replicates: int,
) -> list[Standing]:
    experiments = groups(matrices, lambda m: (m.model, m.dtype, m.num_samples))
    standings = []
    for experiment, found in experiments.items():
        labels = list(dict.fromkeys(m.label for m in found))
        effects: dict[str, list[Effect]] = defaultdict(list)
        for matrix in found:
            key = (*experiment, matrix.label, matrix.proportion)
            effects[matrix.label] += _effects(matrix.label, matrix.proportion, cells[key])
        scored = [effect for label in labels for effect in effects[label]]
        low, high = fraction_range(scored) if scored else (math.nan, math.nan)
        ranked = []
        for label in labels:
            mine = [m for m in found if m.label == label]
            rows = configurations[(*experiment, label)].values()
            estimate = None
            own = all(
                (removed, removed) in cells[(*experiment, label, m.proportion)]
                for m in mine
                for removed, _ in cells[(*experiment, label, m.proportion)]
            )
            if own and any(e.fraction > 0 for e in effects[label]):
                bounds = _bounds(label, mine, cells, experiment, low, high, replicates)
                value = score(effects[label], label, low, high)
                estimate = Estimate(value=value, low=bounds[0], high=bounds[1])
            ranked.append(
                Standing(
                    **dict(zip(EXPERIMENT, experiment, strict=True)),
                    label=label,
                    matched=next((m.matched for m in mine if m.matched), None),
                    draws=min((m.draws for m in mine if m.matched), default=0),
                    score=estimate,
                    low_fraction=low,
                    high_fraction=high,
                    statistics_seconds=statistics.fmean(r["statistics_seconds"] for r in rows),
                    localization_seconds=statistics.fmean(r["localization_seconds"] for r in rows),
                    edited=any(r["selected_fraction"] > 0 for r in rows),
                )
            )
        ranked.sort(key=lambda s: -s.score.value if s.score is not None else math.inf)
        standings += ranked
    return standings


def _bounds(
    label: str,
    mine: Sequence[Matrix],
    cells: Mapping[tuple[Any, ...], Mapping[tuple[str, str], _Cell]],
    experiment: tuple[Any, ...],
    low: float,
    high: float,
    replicates: int,
) -> tuple[float, float]:
    """The bounds of the score's 95% interval from the cells' replicates: each replicate
    places one effect per cell, the cell's replicate median over seeds (NaN without)."""
    chosen = [(m.proportion, cells[(*experiment, label, m.proportion)]) for m in mine]
    found = [cell for _, pairs in chosen for cell in pairs.values()]
    if not found or any(cell.replicates is None for cell in found):
        return math.nan, math.nan
    draws = [
        score([e for p, pairs in chosen for e in _effects(label, p, pairs, r)], label, low, high)
        for r in range(replicates)
    ]
    bounds = np.nanpercentile(draws, [2.5, 97.5])
    return float(bounds[0]), float(bounds[1])


# Writers.


def _number(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else repr(float(value))


def matrix_records(results: MatrixResults) -> list[dict[str, Any]]:
    """One record per model, dtype, sample count, method, proportion, removed skill and measured
    skill (``matrix.csv``): the excess harm (relative to the unedited value) with its 95%
    interval, blank where not measured or without a matched baseline, and the Jaccard overlap of
    the two skills' sets."""
    records = []
    for matrix in results.matrices:
        for removed in matrix.skills:
            for measured in matrix.skills:
                cell = matrix.cells.get((removed, measured))
                records.append(
                    {
                        "model": matrix.model,
                        "dtype": matrix.dtype,
                        "num_samples": matrix.num_samples,
                        "method": matrix.label,
                        "matched_baseline": matrix.matched or "",
                        "proportion": matrix.proportion,
                        "fraction_edited": _number(matrix.fraction),
                        "removed_skill": removed,
                        "measured_skill": measured,
                        "value": _number(cell.value if cell else None),
                        "low": _number(cell.low if cell else None),
                        "high": _number(cell.high if cell else None),
                        "jaccard": _number(matrix.jaccard.get((removed, measured))),
                    }
                )
    return records


def leaderboard_records(results: MatrixResults) -> list[dict[str, Any]]:
    """One record per model, dtype, sample count and method, best first (``leaderboard.csv``)."""
    records: list[dict[str, Any]] = []
    ranks: dict[tuple[Any, ...], int] = defaultdict(int)
    for standing in results.standings:
        experiment = (standing.model, standing.dtype, standing.num_samples)
        ranks[experiment] += 1
        estimate = standing.score
        records.append(
            {
                "rank": ranks[experiment] if estimate is not None else "",
                "model": standing.model,
                "dtype": standing.dtype,
                "num_samples": standing.num_samples,
                "method": standing.label,
                "score": _number(estimate.value if estimate else None),
                "low": _number(estimate.low if estimate else None),
                "high": _number(estimate.high if estimate else None),
                "matched_baseline": standing.matched or "",
                "baseline_draws": standing.draws,
                "statistics_seconds": _number(standing.statistics_seconds),
                "localization_seconds": _number(standing.localization_seconds),
                "note": standing.note,
            }
        )
    return records


def write_csvs(out: str | Path, results: MatrixResults) -> tuple[Path, Path]:
    """Write ``leaderboard.csv`` and ``matrix.csv`` into `out`; return their paths."""
    out = Path(out)
    return (
        write_csv(out / "leaderboard.csv", leaderboard_records(results)),
        write_csv(out / "matrix.csv", matrix_records(results)),
    )


def _percent(value: float) -> str:
    return f"{value * 100:+.2f}%"


def interval(estimate: Estimate | None, *, percent: bool = True) -> str:
    """``value [low, high]`` (the bounds left out when there is no interval; blank for None)."""
    if estimate is None:
        return ""
    show = _percent if percent else (lambda v: f"{v:+.4f}")
    if math.isnan(estimate.low) or math.isnan(estimate.high):
        return show(estimate.value)
    return f"{show(estimate.value)} [{show(estimate.low)}, {show(estimate.high)}]"


def _title(model: str, dtype: str, num_samples: int) -> str:
    return f"{model} ({dtype}), {num_samples} calibration samples"


def leaderboard_section(document: Document, results: MatrixResults) -> None:
    """The "Leaderboard" section (meant to open the report): per model, dtype and sample count,
    the methods ranked by their score with its 95% interval, beside their cost."""
    document.heading(2, "Leaderboard")
    document.text(
        "Methods ranked by one threshold-free score: for each skill's set, the excess harm "
        "(beyond the matched random baseline, relative to the unedited model) to the own skill "
        "minus twice its mean over the other skills, averaged over the fractions edited on a "
        "log axis (the area under that curve over the common range, divided by its width), "
        "then over skills. Higher is better; matched random scores about 0 and a method that "
        "harms every skill alike scores below 0. Intervals are 95% percentile bootstraps over "
        "the evaluated items and the seeds (over seeds alone where no per-item scores were "
        "kept). Seconds are means per localization."
    )
    experiments = groups(results.standings, lambda s: (s.model, s.dtype, s.num_samples))
    for experiment, standings in experiments.items():
        if len(experiments) > 1:
            document.heading(3, _title(*experiment))
        first = standings[0]
        if not math.isnan(first.low_fraction):
            document.text(
                f"Fractions edited compared: {first.low_fraction:.3g} to "
                f"{first.high_fraction:.3g} of the scored parameters."
            )
        body, rank = [], 0
        for standing in standings:
            rank += standing.score is not None
            body.append(
                [
                    standing.label,
                    str(rank) if standing.score is not None else "",
                    interval(standing.score, percent=False),
                    f"{standing.matched or 'none'} ({standing.draws})",
                    f"{standing.statistics_seconds:.1f}",
                    f"{standing.localization_seconds:.1f}",
                    standing.note,
                ]
            )
        document.table(
            [
                "method",
                "rank",
                "score [95% interval]",
                "matched baseline (draws)",
                "statistics s",
                "localization s",
                "note",
            ],
            body,
        )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")


def matrix_section(document: Document, results: MatrixResults) -> None:
    """The "Skill x skill matrix" section: per model, dtype, sample count, method and proportion,
    the heat map and table of the excess harm with 95% intervals, the diagonal dominance, and
    the Jaccard overlap of the skills' sets."""
    from locator.bench.figures import matrix_figure

    document.heading(2, "Skill x skill matrix")
    document.text(
        "Row: the skill whose set was removed (pruned); column: the skill measured; cell: the "
        "harm beyond the matched random baseline at the same seed, relative to the unedited "
        "model's value (+10% = 10% of the unedited value worse than random did), median over "
        "seeds, with its 95% interval. **Diagonal dominance** is the mean of the diagonal minus "
        "the mean off it: how much more a skill's set costs its own skill than the others. "
        "The overlap table is the Jaccard overlap of the skills' sets (mean over seeds)."
    )
    names = results.skills
    lacking = [m.label for m in results.matrices if m.matched is None]
    if lacking:
        document.text(
            "Without a matched random baseline (at one K or more), so without a matrix there: "
            + ", ".join(f"`{label}`" for label in dict.fromkeys(lacking))
            + "."
        )
    for matrix in results.matrices:
        if matrix.matched is None and not matrix.jaccard:
            continue
        heading = f"{matrix.label}, K = {matrix.proportion:g}"
        if len({(m.model, m.dtype, m.num_samples) for m in results.matrices}) > 1:
            heading += f" ({_title(matrix.model, matrix.dtype, matrix.num_samples)})"
        document.heading(3, heading)
        if matrix.matched is not None:
            fraction = "" if math.isnan(matrix.fraction) else f"{matrix.fraction:.3g}"
            note = (
                f" The baseline has {matrix.draws} draw(s) only (fewer than {FEW_DRAWS})."
                if matrix.draws < FEW_DRAWS
                else ""
            )
            document.text(
                f"Fraction edited {fraction}; baseline `{matrix.matched}`, {matrix.draws} "
                f"draw(s) per cell.{note} Diagonal dominance: "
                f"{interval(matrix.dominance) or 'not computed (cells missing)'}."
            )
            values = [
                [(cell.value * 100 if (cell := matrix.cells.get((i, j))) else None) for j in names]
                for i in names
            ]
            stem = _slug(
                f"matrix-{matrix.model}-{matrix.num_samples}-{matrix.label}-{matrix.proportion:g}"
            )
            document.figure(
                matrix_figure(
                    values,
                    names,
                    heading,
                    document.out / stem,
                    unit="% of unedited, beyond random",
                ),
                f"{heading}: harm beyond matched random, % of the unedited value",
            )
            document.table(
                ["removed / measured", *names],
                [[i, *(interval(matrix.cells.get((i, j))) for j in names)] for i in names],
            )
        if matrix.jaccard:
            document.table(
                ["overlap (Jaccard)", *names],
                [
                    [
                        i,
                        *(
                            f"{matrix.jaccard[(i, j)]:.3f}" if (i, j) in matrix.jaccard else ""
                            for j in names
                        ),
                    ]
                    for i in names
                ],
            )
