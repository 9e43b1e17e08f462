"""Specificity with uncertainty: how much an edit changes the skill and each control, against the
unedited model and against the matched random baseline of the same size, with 95% intervals.

A change is the mean over seeds of (edited value - reference value), where the reference is the
unedited model or the matched random baseline at the same seed (same proportion, factor and
sample count). Where the results folder holds per-item scores (``_samples/*.parquet``, each
metric the weighted mean of ``value`` by ``weight``), the interval is a paired bootstrap: each
replicate resamples the evaluated items (the same items for the edited model and its reference)
and the seeds; otherwise it is a t interval over the seeds alone (none with one seed).

The skill is ``--skill-task``, else the task a matrix suite's ``[[skills]]`` pair with the target
corpus, else the target dataset's task; every other task is a control. "Removes the skill
beyond matched random" compares the skill change of the method and of its matched baseline
in the direction of removal (down for higher-is-better metrics):
**yes** when the 95% interval of (method's removal - random's removal) lies above 0, **no** when
it lies at or below 0, **undecided** otherwise. A control is "harmed beyond matched random" by
the same rule. A method is **specific** when it removes the skill beyond matched random and
harms no control beyond it.
"""

from __future__ import annotations

import json
import math
import statistics
import zlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from locator.bench.metrics import higher_is_better
from locator.bench.score import REPLICATES
from locator.errors import LocatorError

Row = Mapping[str, Any]

_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306}
_T975 |= {9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000, 120: 1.980}


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom (conservative between the
    tabulated ones; 1.96 beyond 120)."""
    return _T975[max(k for k in _T975 if k <= df)] if df <= 120 else 1.96


@dataclass(frozen=True)
class ItemScores:
    """Per-item scores of one (configuration, task, metric), sorted by item."""

    items: np.ndarray
    values: np.ndarray
    weights: np.ndarray

    def mean(self) -> float:
        """The metric: the weighted mean of the values."""
        return float(np.sum(self.values * self.weights) / np.sum(self.weights))


class Samples:
    """Per-item scores of a results folder, looked up by the rows that summarize them.

    `head` is ``(config_hash,)`` for an edited configuration and ``("baseline", model, dtype)``
    for the unedited model. A row of an lm-eval group (``mmlu``) has its items under its
    subtasks (``mmlu_anatomy``, ...): those are joined, each item numbered within its subtask.
    """

    def __init__(self, scores: Mapping[tuple[str, ...], ItemScores]) -> None:
        self.scores = dict(scores)
        self.tasks: dict[tuple[Any, ...], list[str]] = defaultdict(list)
        for key in self.scores:
            self.tasks[(*key[:-2], key[-1])].append(key[-2])

    def __bool__(self) -> bool:
        return bool(self.scores)

    def get(self, head: tuple[str, ...], task: str, metric: str) -> ItemScores | None:
        """The scores behind one row's value, or None when none were kept."""
        key = (*head, task, metric)
        if key not in self.scores:
            subtasks = sorted(
                t for t in self.tasks.get((*head, metric), []) if t.startswith(task + "_")
            )
            if not subtasks:
                return None
            parts = [self.scores[(*head, t, metric)] for t in subtasks]
            items = np.concatenate(
                [
                    (zlib.crc32(t.encode()) << 31) | p.items
                    for t, p in zip(subtasks, parts, strict=True)
                ]
            )
            order = np.argsort(items, kind="stable")
            self.scores[key] = ItemScores(
                items=items[order],
                values=np.concatenate([p.values for p in parts])[order],
                weights=np.concatenate([p.weights for p in parts])[order],
            )
        return self.scores[key]

    def of(self, row: Row) -> ItemScores | None:
        """The scores behind `row`'s value, or None when none were kept or they do not reproduce
        it (an empty selection leaves the model unedited: its items are the unedited model's)."""
        found = self.get((row["config_hash"],), row["task"], row["metric"])
        if found is None and row["selected_count"] == 0:
            found = self.get(("baseline", row["model"], row["dtype"]), row["task"], row["metric"])
        return found if _agrees(found, row["value"]) else None


def _read_scores(path: Path) -> dict[str, list[Any]]:
    """One per-item scores file as columns; a damaged one, or one of another schema, is a
    one-line `LocatorError` saying how to have it recomputed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from locator.bench.results import SAMPLES_SCHEMA, has_columns

    if path.stem.startswith("baseline-"):
        advice = (
            "delete it and rerun `locator bench` into the folder to evaluate the baseline anew."
        )
    else:
        advice = (
            f"delete it and part-{path.stem}.parquet, then rerun `locator bench` into the folder "
            "to recompute them."
        )
    try:
        if has_columns(pq.read_schema(path), SAMPLES_SCHEMA):
            return pq.read_table(path, schema=SAMPLES_SCHEMA).to_pydict()
        problem = "holds other columns than per-item scores"
    except (pa.ArrowException, OSError) as error:
        text = str(error).strip()
        problem = f"is damaged ({text.splitlines()[0] if text else type(error).__name__})"
    raise LocatorError(f"per-item scores {str(path)!r} {problem}; {advice}")


def read_samples(directory: str | Path) -> Samples:
    """Per-item scores under ``DIR/_samples`` (none when the folder was written before they
    were kept)."""

    found: dict[tuple[str, ...], ItemScores] = {}
    for path in sorted(Path(directory, "_samples").glob("*.parquet")):
        table = _read_scores(path)
        grouped: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for i, (config, task, metric) in enumerate(
            zip(table["config_hash"], table["task"], table["metric"], strict=True)
        ):
            key: tuple[str, ...] = (
                ("baseline", table["model"][i], table["dtype"][i], task, metric)
                if config == "baseline"
                else (config, task, metric)
            )
            grouped[key].append(i)
        for key, positions in grouped.items():
            items = np.asarray([table["item"][i] for i in positions], dtype=np.int64)
            order = np.argsort(items, kind="stable")
            found[key] = ItemScores(
                items=items[order],
                values=np.asarray([table["value"][i] for i in positions], dtype=float)[order],
                weights=np.asarray([table["weight"][i] for i in positions], dtype=float)[order],
            )
    return Samples(found)


@dataclass(frozen=True)
class Estimate:
    """A change (edited - reference, in the metric's units): mean over seeds with a 95% interval
    (NaN when there is none); `items` is the number of items resampled (0: seeds only)."""

    mean: float
    low: float
    high: float
    seeds: int
    items: int

    def removal(self, higher: bool) -> Estimate:
        """The same change in the direction of removal: positive = worse."""
        if not higher:
            return self
        return Estimate(
            mean=-self.mean, low=-self.high, high=-self.low, seeds=self.seeds, items=self.items
        )

    def verdict(self) -> str:
        """``yes`` when the interval lies above 0, ``no`` at or below 0, else ``undecided``."""
        if math.isnan(self.low):
            return "undecided"
        if self.low > 0:
            return "yes"
        return "no" if self.high <= 0 else "undecided"


Side = Mapping[int, tuple[float, ItemScores | None]]
"""Per seed: the row's value and its per-item scores (None when not kept)."""


class Bootstrap:
    """Paired bootstrap draws, shared by every estimate on the same items (so that estimates
    over one item set are resampled alike), reproducible (fixed seed)."""

    def __init__(self, replicates: int = REPLICATES, seed: int = 0) -> None:
        self.replicates, self.seed = replicates, seed
        self.counts: dict[bytes, np.ndarray] = {}

    def item_counts(self, items: np.ndarray) -> np.ndarray:
        """[replicates, items] multiplicities of one resampling of the items each."""
        key = items.tobytes()
        if key not in self.counts:
            generator = np.random.default_rng(self.seed)
            uniform = np.full(len(items), 1.0 / len(items))
            counts = generator.multinomial(len(items), uniform, size=self.replicates)
            self.counts[key] = counts.astype(np.uint8 if counts.max() < 256 else np.int32)
        return self.counts[key]

    def resample_seeds(self, draws: np.ndarray) -> np.ndarray:
        """[replicates, seeds] `draws` with the seeds resampled: the same picks for every
        estimate over as many seeds (so that they are resampled jointly)."""
        n = draws.shape[1]
        if n < 2:
            return draws
        picks = np.random.default_rng(self.seed + 1).integers(0, n, (self.replicates, n))
        return np.take_along_axis(draws, picks, axis=1)

    def change(self, edited: Side, reference: Side) -> Estimate:
        """Mean over common seeds of edited - reference, with a 95% interval."""
        seeds = sorted(set(edited) & set(reference))
        if not seeds:
            return Estimate(mean=math.nan, low=math.nan, high=math.nan, seeds=0, items=0)
        differences = [edited[s][0] - reference[s][0] for s in seeds]
        mean = statistics.fmean(differences)
        scores = [edited[s][1] for s in seeds] + [reference[s][1] for s in seeds]
        values = [edited[s][0] for s in seeds] + [reference[s][0] for s in seeds]
        if all(_agrees(score, value) for score, value in zip(scores, values, strict=True)):
            return self._paired(mean, seeds, scores)  # type: ignore[arg-type]
        if len(seeds) < 2:
            return Estimate(mean=mean, low=math.nan, high=math.nan, seeds=1, items=0)
        half = t975(len(seeds) - 1) * statistics.stdev(differences) / math.sqrt(len(seeds))
        return Estimate(mean=mean, low=mean - half, high=mean + half, seeds=len(seeds), items=0)

    def _paired(self, mean: float, seeds: Sequence[int], scores: Sequence[ItemScores]) -> Estimate:
        common, kept = common_items(scores)
        columns_wv = [score.values[keep] * score.weights[keep] for score, keep in kept]
        columns_w = [score.weights[keep] for score, keep in kept]
        counts = self.item_counts(common)
        replicates = np.empty((self.replicates, len(scores)))
        wv, w = np.stack(columns_wv, axis=1), np.stack(columns_w, axis=1)
        for start in range(0, self.replicates, 250):
            chunk = counts[start : start + 250].astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                replicates[start : start + 250] = (chunk @ wv) / (chunk @ w)
        n = len(seeds)
        differences = self.resample_seeds(replicates[:, :n] - replicates[:, n:])
        low, high = np.nanpercentile(differences.mean(axis=1), [2.5, 97.5])
        return Estimate(mean=mean, low=float(low), high=float(high), seeds=n, items=len(common))


def common_items(
    scores: Sequence[ItemScores],
) -> tuple[np.ndarray, list[tuple[ItemScores, np.ndarray]]]:
    """The items every one of `scores` holds, and each score with its mask of those items."""
    common = scores[0].items
    for score in scores[1:]:
        common = np.intersect1d(common, score.items, assume_unique=True)
    return common, [(s, np.isin(s.items, common, assume_unique=True)) for s in scores]


def _agrees(score: ItemScores | None, value: float) -> bool:
    """Per-item scores exist and reproduce the row's value (else they describe something else)."""
    if score is None or len(score.items) == 0 or value is None or math.isnan(value):
        return False
    return math.isclose(score.mean(), value, rel_tol=1e-6, abs_tol=1e-9)


# Which task is the skill.


def skill_task(
    target: str,
    tasks: Sequence[str],
    explicit: str | None = None,
    declared: Mapping[str, str] | None = None,
) -> str | None:
    """The task that measures the skill of corpus `target`: `explicit` when given (it must be one
    of `tasks`), else the task a matrix suite's skill pairs with that corpus (`declared`: corpus
    -> task, its ``[[skills]]``), else the target dataset's task when installed, else a task
    named as the target; None when none of these is evaluated."""
    if explicit is not None:
        if explicit not in tasks:
            raise LocatorError(
                f"--skill-task {explicit!r} is not a task of these results; "
                f"choose one of: {', '.join(tasks)}."
            )
        return explicit
    try:
        from locator.data import get_dataset

        dataset_task = get_dataset(target).task
    except LocatorError:
        dataset_task = None
    for candidate in ((declared or {}).get(target), dataset_task, target):
        if candidate in tasks:
            return candidate
    return None


# The analysis: one record per (sample count, factor, method, proportion, task, metric).


@dataclass(frozen=True, kw_only=True)
class Change:
    """What editing did to one measure in one cell of an experiment."""

    num_samples: int
    factor: float
    label: str
    proportion: float
    fraction: float
    task: str
    metric: str
    role: str
    higher: bool | None
    value: float
    baseline: float
    unedited: Estimate
    matched_label: str | None
    matched: Estimate | None

    def beyond_matched(self) -> str:
        """Does the method remove (skill) or harm (control) this measure beyond its matched
        random baseline: yes / no / undecided, or n/a (no baseline or unknown direction)."""
        if self.matched is None or self.higher is None:
            return "n/a"
        return self.matched.removal(self.higher).verdict()


def matched_labels(rows: Sequence[Row]) -> dict[str, str]:
    """Method label -> the label of the random baseline matched to it (``matched_to`` in the
    baseline's method_config)."""
    found = {}
    for row in rows:
        matched_to = json.loads(row["method_config"]).get("matched_to")
        if matched_to is not None:
            found[matched_to] = row["label"]
    return found


# The fields of a row that name its cell (whose rows differ by seed only).
_CELL = ("num_samples", "factor", "label", "proportion", "task", "metric")


def changes(
    rows: Sequence[Row],
    samples: Samples,
    skill: str | None,
    bootstrap: Bootstrap,
) -> list[Change]:
    """Every cell of one experiment's rows (one model, dtype, target and controls) against the
    unedited model and against its matched random baseline."""
    matches = matched_labels(rows)
    cells: dict[tuple[Any, ...], dict[int, Row]] = defaultdict(dict)
    for row in rows:
        if "stderr" in row["metric"]:
            continue
        cells[tuple(row[field] for field in _CELL)][row["seed"]] = row

    def side(cell: Mapping[int, Row]) -> dict[int, tuple[float, ItemScores | None]]:
        return {seed: (r["value"], samples.of(r)) for seed, r in cell.items()}

    found = []
    for key, cell in cells.items():
        num_samples, factor, label, proportion, task, metric = key
        first = next(iter(cell.values()))
        base_scores = samples.get(("baseline", first["model"], first["dtype"]), task, metric)
        unedited = {seed: (first["baseline_value"], base_scores) for seed in cell}
        matched_label = matches.get(label)
        matched_cell = cells.get((num_samples, factor, matched_label, proportion, task, metric))
        found.append(
            Change(
                num_samples=num_samples,
                factor=factor,
                label=label,
                proportion=proportion,
                fraction=statistics.fmean(r["selected_fraction"] for r in cell.values()),
                task=task,
                metric=metric,
                role="skill" if task == skill else "control",
                higher=higher_is_better(metric, first.get("higher_is_better")),
                value=statistics.fmean(r["value"] for r in cell.values()),
                baseline=first["baseline_value"],
                unedited=bootstrap.change(side(cell), unedited),
                matched_label=matched_label if matched_cell else None,
                matched=bootstrap.change(side(cell), side(matched_cell)) if matched_cell else None,
            )
        )
    return found


def specific(skill: Sequence[Change], controls: Sequence[Change]) -> str:
    """The combined verdict of one (method, proportion, factor, sample count): ``yes`` when it
    removes the skill beyond matched random and harms no control beyond it; ``no`` when it does
    not remove the skill beyond matched random or harms a control beyond it; else undecided."""
    verdicts = [c.beyond_matched() for c in skill]
    if not verdicts or "n/a" in verdicts:
        return "n/a"
    if "no" in verdicts:
        return "no"
    if "undecided" in verdicts:
        return "undecided"
    if any(c.beyond_matched() == "yes" for c in controls):
        return "no (harms a control)"
    return "yes"
