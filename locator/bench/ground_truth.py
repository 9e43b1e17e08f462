"""The ground-truth suite: every method on planted toy models, scored against the planted set S.

A suite with a ``[ground_truth]`` table (``benchmarks/ground-truth.toml``) plants a skill the
toy model lacks into known sets S (`locator.toy.plant`: ``levels`` weight and neuron, one
planting per seed in ``plantings``, each trained ``steps`` steps) and asks every method of the
suite to find it. What such a suite fixes is filled in here:
the model planted into (the shipped toy), the corpora (target ``toy-planted``, controls the old
skills), the tasks (the planted skill and the old ones), the proportions (`GRID`, plus the
proportions of |S| on each planting) and the factor (0: pruning); matched baselines are off
unless the suite asks for them (uniform random's |S|/N stands beside every score).

`run_ground_truth` (what ``locator bench`` runs for such a suite) plants each planting into
``<results>/_plantings/<level>-<seed>/``, or reuses it there after checking it (same settings,
bit-identical to the base model outside S), and then, per (planting, seed), makes one
statistics pass per corpus shared by every method (`locator.bench.runner.Bench`, as any suite
does), cuts every method at every proportion, scores the cuts against S
(`locator.recovery.recovery`) and prunes the cut of |S|'s size to evaluate the three tasks.
Each (planting, seed, method) is one part file of the results folder, in the rows of every
suite (`locator.bench.results.Row`): per cut, task ``ground-truth-entries`` or
``ground-truth-neurons`` (the unit S is counted in) with metrics ``precision`` and ``recall``
beside uniform random's |S|/N as the baseline value; at the cut of |S|'s size also ``auprc``
and the pruned model's tasks beside the unpruned planted model's. Every cut is saved in
``_selections/`` (the rows' ``selection``), so held-out code can score it. A run that stops
resumes: plantings, statistics and finished parts are reused.

`write_section` renders the report's "Ground truth" section and `records` the rows of
``ground-truth.csv``: per level, methods ranked by mean AUPRC over the (planting, seed) cells,
with a 95% t-interval over the plantings' means (the plantings are the independent replicates;
the seeds are nested in them, so their spread enters through each planting's mean; with one
planting, over its seeds).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from locator.bench.metrics import groups, model_label
from locator.errors import LocatorError
from locator.options import OptionError, Options, option
from locator.toy.plant import (
    LANGUAGE_LIMIT,
    LEVELS,
    PLANTED_TASK,
    PLANTING_FILE,
    Level,
    PlantingSettings,
)

if TYPE_CHECKING:
    from locator.bench.document import Document
    from locator.bench.runner import Bench, RunSummary
    from locator.bench.suite import Suite

CONTROLS = ("toy-arithmetic", "toy-language")
"""The old skills: the controls of methods that use them, and tasks the pruning must spare."""

GRID = tuple(round(10 ** (-3 + 3 * i / 15), 6) for i in range(16))
"""Proportions every method is cut at (besides |S|'s): 16 steps from 0.1% to 100%."""

TASKS = {"entry": "ground-truth-entries", "neuron": "ground-truth-neurons"}
"""The recovery scores' task, by the unit S is counted in (`locator.recovery.Recovery.unit`)."""

PLANTINGS = "_plantings"
"""The folder of a results folder that holds its planted models."""

CSV_FILE = "ground-truth.csv"
FIXED = ("models", "corpora", "tasks", "proportions", "factors", "matrix", "skills", "data_dir")
"""Suite keys a ground-truth suite fixes (see the module docs)."""


@dataclass(frozen=True, kw_only=True)
class GroundTruthSpec(Options):
    """A suite's ``[ground_truth]`` table: which planted models the suite runs on."""

    levels: tuple[Level, ...] = option(LEVELS, help="The levels of S.")
    plantings: tuple[int, ...] = option(
        (0, 1, 2), help="The seeds of S (integers >= 0): one planted model per level and seed."
    )
    steps: int = option(300, minimum=1, help="The training steps of each planting.")

    def __post_init__(self) -> None:
        """Check the types, then that the lists are non-empty and distinct, the seeds >= 0."""
        super().__post_init__()
        for key in ("levels", "plantings"):
            values = getattr(self, key)
            if not values or len(set(values)) != len(values):
                raise OptionError(
                    key, f"must be a non-empty list without duplicates: {list(values)}."
                )
        if min(self.plantings) < 0:
            raise OptionError("plantings", f"must be integers >= 0, got {list(self.plantings)}.")

    def settings(self) -> list[PlantingSettings]:
        """The planting settings of every planted model, levels outermost."""
        return [
            PlantingSettings(level=level, seed=seed, steps=self.steps)
            for level in self.levels
            for seed in self.plantings
        ]


def expand(check: Any, data: Mapping[str, Any]) -> tuple[dict[str, Any], GroundTruthSpec]:
    """The suite `data` of a ground-truth suite with what it fixes filled in, and its
    ``[ground_truth]`` table; `check` is the suite parser's checker (errors name file and key)."""
    from locator.toy import checkpoint_path

    for key in FIXED:
        if key in data:
            raise check.fail(
                key,
                "a ground-truth suite fixes the model, corpora (generated: no data_dir), tasks, "
                "proportions and factor (see docs/ground-truth.md); drop this key.",
            )
    table = data["ground_truth"]
    if not isinstance(table, dict):
        raise check.fail("ground_truth", f"must be a table ([ground_truth]), got {table!r}.")
    spec = check.parse(GroundTruthSpec, table, "ground_truth.")
    expanded = {
        **data,
        "models": [{"path": str(checkpoint_path()), "dtype": "float32"}],
        "corpora": [{"target": PLANTED_TASK, "controls": list(CONTROLS)}],
        "tasks": [{"name": PLANTED_TASK}, {"name": CONTROLS[0]}]
        + [{"name": CONTROLS[1], "limit": LANGUAGE_LIMIT}],
        "proportions": list(GRID),
        "factors": [0.0],
        "matched_baseline": data.get("matched_baseline", False),
    }
    return expanded, spec


def ensure_planting(plantings: Path, settings: PlantingSettings) -> Path:
    """The planted model of `settings` under the folder `plantings`: planted now if missing; an
    existing one must have been planted with the same settings."""
    from locator.toy.plant import is_planted_model, plant

    folder = plantings / f"{settings.level}-{settings.seed}"
    if is_planted_model(folder):
        recorded = json.loads((folder / PLANTING_FILE).read_text())["settings"]
        if recorded != dataclasses.asdict(settings):
            raise LocatorError(
                f"planting {str(folder)!r} was made with other settings ({recorded}); remove it "
                "or pass a new --out folder."
            )
        return folder
    return plant(folder, settings)


def run_ground_truth(
    suite: Suite, out: Path, *, progress: bool, echo: Callable[[str], None]
) -> RunSummary:
    """Run the ground-truth suite `suite` into the results folder `out` (see the module docs):
    the plantings in parallel, one process per CPU core (at most one per planting)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from locator.bench import results
    from locator.bench.plan import manifest, plan
    from locator.bench.runner import RunSummary
    from locator.io import check_output_directory

    start = time.perf_counter()
    out = check_output_directory(
        out, owned=results.is_results_folder, what="a results folder", extend=True
    )
    results.check_manifest(out, manifest(suite, plan(suite), suite.path.read_text("utf-8")))
    assert suite.ground_truth is not None
    requests = suite.ground_truth.settings()
    cells = len(requests) * len(suite.seeds) * len(suite.num_samples) * len(suite.methods)
    echo(
        f"{suite.name}: {len(requests)} plantings x {len(suite.seeds) * len(suite.num_samples)} "
        f"seeds x {len(suite.methods)} methods = {cells} cells -> {out}"
    )
    workers = min(len(requests), os.cpu_count() or 1)
    if workers == 1:
        done = [run_planting(suite, out, settings, progress=progress) for settings in requests]
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(run_planting, suite, out, s, threads=1) for s in requests]
            done = []
            for settings, future in zip(requests, futures, strict=True):
                done.append(future.result())
                echo(f"planting {settings.level}-{settings.seed}: {done[-1][1]} cells run")
    return RunSummary(
        planned=cells,
        in_shard=cells,
        skipped=sum(skipped for skipped, _ in done),
        ran=sum(ran for _, ran in done),
        seconds=time.perf_counter() - start,
        out=out,
    )


def run_planting(
    suite: Suite,
    out: Path,
    settings: PlantingSettings,
    *,
    progress: bool = False,
    threads: int | None = None,
) -> tuple[int, int]:
    """Plant (or reuse) one planting and run its (seed, method) cells whose part file is
    missing; returns (cells finished before, cells run). `threads` sets torch's threads (a
    worker process of `run_ground_truth`)."""
    from itertools import groupby

    import torch
    from tqdm.auto import tqdm

    from locator.bench import results
    from locator.bench.plan import plan, stable_hash
    from locator.bench.runner import Bench, draw
    from locator.models import ModelOptions
    from locator.toy.plant import load_planted

    if threads is not None:
        torch.set_num_threads(threads)
    folder = ensure_planting(out / PLANTINGS, settings)
    model, _, truth, record = load_planted(folder)  # checked against the base model
    # Relative to the results folder (the suite's paths are, here), so that the folder can move.
    spec = ModelOptions(path=f"{PLANTINGS}/{folder.name}", dtype="float32")
    planted = dataclasses.replace(
        suite,
        path=out / suite.path.name,
        models=(spec,),
        proportions=_proportions(model, truth, record["size"]),
    )
    by_cell = groups(plan(planted), _cell)
    names = {key: stable_hash([c.key for c in found]) for key, found in by_cell.items()}
    finished = results.finished(out)
    todo = [c for key, found in by_cell.items() if names[key] not in finished for c in found]
    run = {names[_cell(c)] for c in todo}
    if not todo:
        return len(by_cell), 0
    bench = Bench(planted, out, progress=progress)
    bench.bar = tqdm(total=len(todo), desc=folder.name, unit="cut", disable=not progress)
    try:
        bench.load(spec)
        texts = draw(planted, out, todo)
        for _, group in groupby(todo, key=lambda c: c.group):  # one statistics pass each
            localized = bench.localized(list(group), texts)
            for found in groups(localized, lambda item: item[0].method.label).values():
                results.write_part(out, names[_cell(found[0][0])], _score(bench, truth, found))
                bench.bar.update(len(found))
    finally:
        bench.bar.close()
    return len(by_cell) - len(run), len(run)


def _cell(configuration: Any) -> tuple[int, int, str]:
    """The (sample count, seed, method) cell of a configuration: one part file each."""
    return configuration.num_samples, configuration.seed, configuration.method.label


def _proportions(model: Any, truth: Any, size: int) -> tuple[float, ...]:
    """`GRID` and the proportions at which a method's cut has about |S| units: |S| entries of
    the scored entries (a weight method), |S| entries over the entries all neurons span (a
    neuron method, weight truth) and |S| neurons of all neurons (a neuron method, neuron
    truth); ascending, without repeats."""
    from locator.architecture import mlp_neurons, scored_parameters
    from locator.recovery import neuron_linears

    parameters = scored_parameters(model)
    sites = mlp_neurons(model)
    neurons = sum(site.size for site in sites.values())
    spanned_by_all = sum(
        parameters[name].numel
        for down, site in sites.items()
        for name in neuron_linears(parameters, down, site.size)
    )
    fractions = [size / sum(p.numel for p in parameters.values()), size / spanned_by_all]
    fractions += [truth.neuron_count() / neurons] * (truth.level == "neuron")
    return tuple(sorted(set(GRID) | {round(f, 9) for f in fractions if 0 < f <= 1}))


def _score(bench: Bench, truth: Any, found: list[tuple[Any, Any, dict[str, float]]]) -> list[Any]:
    """The rows of one method's cuts on one (planting, seed): each cut saved and scored against
    S, the cut of |S|'s size also pruned and evaluated on the suite's tasks."""
    from locator.bench.runner import _Scores
    from locator.bench.suite import TaskSpec
    from locator.intervention import intervene
    from locator.recovery import recovery

    found = sorted(found, key=lambda item: item[0].proportion)
    recovered = recovery(truth, [localization for _, localization, _ in found], bench.model)
    task = TaskSpec(name=TASKS[recovered.unit])
    better = {metric: True for metric in ("precision", "recall", "auprc")}
    bench.baseline[task.name] = _Scores(
        metrics=dict.fromkeys(better, recovered.chance), higher_is_better=better, items=[]
    )
    rows = []
    for index, (configuration, localization, timings) in enumerate(found):
        selection = bench.save_selection(configuration, localization)
        size, inside = recovered.points[index]
        metrics = {"precision": inside / size if size else 0.0}
        metrics["recall"] = inside / recovered.truth_size
        scores = {}
        tasks = [task]
        if index == recovered.cut:
            metrics["auprc"] = recovered.auprc
            tasks += bench.suite.tasks
            with intervene(bench.model, localization, 0.0):
                scores = {t.name: bench.evaluate(t) for t in bench.suite.tasks}
        scores[task.name] = _Scores(metrics=metrics, higher_is_better=better, items=[])
        for each in tasks:
            rows += bench.rows(configuration, each, localization, selection, timings, scores)
    return rows


def is_ground_truth(rows: Sequence[Mapping[str, Any]]) -> bool:
    """Whether results rows are a ground-truth suite's."""
    return any(row["task"] in TASKS.values() for row in rows)


def planting_records(directory: Path, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The planting record of every planted model the rows name, by planting name."""
    names = dict.fromkeys(model_label(row["model"]) for row in rows)
    found = {}
    for name in names:
        path = directory / PLANTINGS / name / PLANTING_FILE
        if not path.is_file():
            raise LocatorError(
                f"{str(path)!r} is missing: the ground-truth results need their plantings; "
                "rerun `locator bench` into the folder to plant it again."
            )
        found[name] = json.loads(path.read_text())

    def rank(name: str) -> tuple[int, int]:
        settings = found[name]["settings"]
        return LEVELS.index(settings["level"]), settings["seed"]

    return {name: found[name] for name in sorted(found, key=rank)}


def cells(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One record per (planting, seed, method): the scores at the cut of |S|'s size (precision,
    recall, chance, the tasks after pruning) and the AUPRC; a row's planting is named
    ``_plantings/<level>-<seed of S>`` (`ensure_planting`)."""
    found = []
    for cut in groups(rows, lambda row: row["config_hash"]).values():
        values = {(r["task"], r["metric"]): r for r in cut}
        scored = next((r for r in cut if r["metric"] == "auprc"), None)
        if scored is None:
            continue
        task = scored["task"]
        level, planting = model_label(scored["model"]).rsplit("-", 1)
        found.append(
            {
                "level": level,
                "planting": int(planting),
                "seed": scored["seed"],
                "num_samples": scored["num_samples"],
                "method": scored["label"],
                "unit": next(unit for unit, name in TASKS.items() if name == task),
                "auprc": scored["value"],
                "precision": values[(task, "precision")]["value"],
                "recall": values[(task, "recall")]["value"],
                "chance": scored["baseline_value"],
                "planted_after_pruning": values[(PLANTED_TASK, "exact_match")]["value"],
                "arithmetic_after_pruning": values[(CONTROLS[0], "exact_match")]["value"],
                "language_loss_after_pruning": values[(CONTROLS[1], "loss")]["value"],
            }
        )
    return found


def interval(values_by_planting: Mapping[Any, Sequence[float]]) -> tuple[float, float, float]:
    """Mean of all (planting, seed) values (scores in [0, 1]) and its 95% t-interval over the
    plantings' means, clipped to [0, 1] (with one planting, over its seeds; none for one
    value)."""
    from locator.bench.specificity import t975

    every = [v for values in values_by_planting.values() for v in values]
    units = [statistics.fmean(v) for v in values_by_planting.values()]
    if len(units) < 2:
        units = every
    mean = statistics.fmean(every)
    if len(units) < 2:
        return mean, mean, mean
    half = t975(len(units) - 1) * statistics.stdev(units) / math.sqrt(len(units))
    return mean, max(0.0, mean - half), min(1.0, mean + half)  # a score in [0, 1]


_MEANS = (
    "precision",
    "recall",
    "chance",
    "planted_after_pruning",
    "arithmetic_after_pruning",
    "language_loss_after_pruning",
)


def records(found: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows of ``ground-truth.csv``: per level, each method ranked by mean AUPRC, its 95%
    interval (`interval`), and the means of the other scores over its cells."""
    ranked = []
    for (level, method), group in groups(found, lambda c: (c["level"], c["method"])).items():
        by_planting = groups(group, lambda c: c["planting"])
        mean, low, high = interval({p: [c["auprc"] for c in v] for p, v in by_planting.items()})
        ranked.append(
            {
                "level": level,
                "method": method,
                "unit": group[0]["unit"],
                "plantings": len(by_planting),
                "cells": len(group),
                "auprc": mean,
                "auprc_low": low,
                "auprc_high": high,
                **{name: statistics.fmean(c[name] for c in group) for name in _MEANS},
            }
        )
    ranked.sort(key=lambda r: (LEVELS.index(r["level"]), -r["auprc"], r["method"]))
    counts: dict[str, int] = defaultdict(int)
    for record in ranked:
        counts[record["level"]] += 1
        record["rank"] = counts[record["level"]]
    return [{"rank": r.pop("rank"), **r} for r in ranked]


def write_section(
    document: Document, ranked: Sequence[Mapping[str, Any]], plantings: Mapping[str, Any]
) -> None:
    """The report's "Ground truth" section: the plantings, then per level the methods ranked."""
    document.heading(2, "Ground truth")
    document.text(
        f"A skill the toy model lacks (`{PLANTED_TASK}`: `a big b = max(a, b)`, operands 0-19) "
        "was planted by training only a seeded set S of parameters, every other weight "
        "bit-identical to the base model: at weight level 1% of the entries of every decoder "
        "linear, at neuron level 8 MLP neurons per layer (their gate and up rows and down "
        "columns). Each method localizes the planted skill (controls, for methods that use "
        "them: the old skills) and is scored against S: precision and recall of its cut of "
        "|S|'s size, and the area under the precision-recall curve (AUPRC) over its cuts at "
        f"{len(GRID)} proportions from 0.1% to 100% and |S|'s, beside uniform random (chance, "
        "|S|/N). Means over (planting, seed) cells; the 95% t-interval is over the plantings' "
        "means (seeds are nested in plantings). S holds the planted skill's own changes; "
        "machinery it shares with the old skills (embeddings, attention that moves operands, "
        "the base values of the weights in S) lies outside S, so recovering S means finding "
        "what is specific to the skill."
    )
    document.table(
        [
            "planting",
            "size of S",
            "planted skill: base → planted → S pruned",
            "arithmetic: base → planted → S pruned",
            "language loss: base → planted",
            "planting time (s)",
        ],
        [
            [
                name,
                f"{record['size']:,}",
                *(
                    " → ".join(f"{record[k][skill]:.3f}" for k in ("before", "after", "s_pruned"))
                    for skill in ("planted", "arithmetic")
                ),
                f"{record['before']['language_loss']:.4f} → {record['after']['language_loss']:.4f}",
                str(record["wall_seconds"]),
            ]
            for name, record in plantings.items()
        ],
    )
    for level in dict.fromkeys(r["level"] for r in ranked):
        found = [r for r in ranked if r["level"] == level]
        document.heading(3, f"{level.capitalize()}-level truth")
        document.table(
            [
                "rank",
                "method",
                "unit",
                "cells",
                "AUPRC [95%]",
                "precision at the size of S",
                "recall at the size of S",
                "chance",
                "planted skill after pruning",
                "arithmetic after pruning",
            ],
            [
                [
                    str(r["rank"]),
                    r["method"],
                    r["unit"],
                    str(r["cells"]),
                    _auprc(r),
                    *(f"{r[name]:.3f}" for name in _MEANS if name != "language_loss_after_pruning"),
                ]
                for r in found
            ],
        )


def summary(rows: Sequence[Mapping[str, Any]]) -> str:
    """The terminal summary of ground-truth rows: per level, the methods ranked (`records`)."""
    lines = []
    for r in records(cells(rows)):
        if r["rank"] == 1:
            lines.append(f"{r['level']}-level truth: mean AUPRC [95%] (chance)")
        lines.append(f"  {r['method']:<28} {_auprc(r)} ({r['chance']:.3f}), {r['cells']} cells")
    return "\n".join(lines)


def _auprc(record: Mapping[str, Any]) -> str:
    return f"{record['auprc']:.3f} [{record['auprc_low']:.3f}, {record['auprc_high']:.3f}]"
