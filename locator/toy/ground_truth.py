"""The ground-truth benchmark: every installed method on every planted toy model.

For each level (weight, neuron) and planting seed, a planted model (`locator.toy.plant`) is
made, or reused from the plantings folder after checking it against the base model. Each
installed method then localizes the planted skill (target corpus ``toy-planted``; methods that
use controls get the old skills, ``toy-arithmetic`` and ``toy-language``) at a grid of
proportions from 0.1% to 100% plus the proportions of |S|, from one statistics pass per corpus.
Its cuts are scored against S (`locator.recovery.recovery`) and its cut at |S| is pruned
(multiplied by 0) to see how much of the planted skill it leaves; pruning S itself is the
removal check of the truth.

Written to the output folder: ``ground-truth.csv`` (one row per planting and method, with the
removal rows ``(none)`` and ``(S)``), ``ground-truth.md`` (the "Ground truth" section: methods
ranked by AUPRC, mean and 95% t-interval over the plantings), and every method's cuts under
``selections/<level>-<seed>/<method>/`` so that other code can score them.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from locator.errors import LocatorError
from locator.toy.plant import (
    LEVELS,
    PLANTED_TASK,
    PlantingSettings,
    is_planted_model,
    load_planted,
    plant,
    skill_scores,
)

CONTROLS = ("toy-arithmetic", "toy-language")
"""The old skills, given as controls to methods that use them."""

GRID = tuple(round(10 ** (-3 + 3 * i / 15), 6) for i in range(16))
"""Proportions every method is cut at (besides |S|'s): 16 steps from 0.1% to 100%."""

CSV_FILE = "ground-truth.csv"
MARKDOWN_FILE = "ground-truth.md"
COLUMNS = (
    "level",
    "planting_seed",
    "method",
    "method_level",
    "unit",
    "truth_size",
    "total",
    "selected",
    "precision",
    "recall",
    "auprc",
    "chance",
    "planted_after_pruning",
    "arithmetic_after_pruning",
    "language_loss_after_pruning",
)


def planting_folder(plantings: Path, settings: PlantingSettings) -> Path:
    """Where the planting of `settings` lives under the plantings folder."""
    return plantings / f"{settings.level}-{settings.seed}"


def ensure_planting(plantings: Path, settings: PlantingSettings) -> Path:
    """The planted model of `settings`: planted now if missing; an existing one must have been
    planted with the same settings."""
    folder = planting_folder(plantings, settings)
    if is_planted_model(folder):
        recorded = json.loads((folder / "planting.json").read_text())["settings"]
        if recorded != asdict(settings):
            raise LocatorError(
                f"planting {str(folder)!r} was made with other settings ({recorded}); remove it "
                "or choose another plantings folder."
            )
        return folder
    return plant(folder, settings)


def _proportions(truth_fraction: Sequence[float]) -> list[float]:
    """The grid plus the truth's own fractions, ascending, without duplicates."""
    return sorted(set(GRID) | {round(f, 9) for f in truth_fraction if 0 < f <= 1})


def _truth_fractions(model: Any, truth: Any, size: int) -> list[float]:
    """The proportions at which a method's cut has about |S| units: |S| entries of the scored
    entries (a weight method), |S| neurons of all neurons (a neuron method, neuron truth), and
    |S| entries over the entries all neurons span (a neuron method, weight truth)."""
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
    return fractions + [truth.neuron_count() / neurons] * (truth.level == "neuron")


def score_planting(
    folder: Path, *, num_samples: int, progress: bool = False
) -> tuple[list[dict[str, Any]], dict[str, list[Any]]]:
    """Run every installed method on the planted model in `folder`: the CSV rows (removal rows
    first) and each method's cuts, by method name."""
    import locator
    from locator.data import resolve_corpus
    from locator.intervention import intervene
    from locator.localizer import build_context, check_request, get_localizer, list_localizers
    from locator.passes import collect_statistics
    from locator.provenance import model_identity, with_provenance
    from locator.recovery import recovery

    model, tokenizer, truth, record = load_planted(folder)
    settings = record["settings"]
    seed = int(settings["seed"])
    base_row = {"level": settings["level"], "planting_seed": seed}
    rows = [{**base_row, "method": "(none)", **_pruned(skill_scores(model, tokenizer))}]
    with intervene(model, truth, 0.0):
        rows.append({**base_row, "method": "(S)", **_pruned(skill_scores(model, tokenizer))})
    methods = [get_localizer(name) for name in list_localizers()]
    kinds = frozenset().union(*(method.statistics for method in methods))
    corpora = [
        resolve_corpus(name, role, num_samples=num_samples, seed=seed, replace=False, data_dir=None)
        for role, name in [("target", PLANTED_TASK)]
        + [(f"control{i}", name) for i, name in enumerate(CONTROLS)]
    ]
    collected = [
        collect_statistics(
            model, tokenizer, texts, kinds=kinds, corpus=label, progress=progress, batch_size=64
        )
        for label, texts in corpora
    ]
    identity = model_identity(model)
    grid = _proportions(_truth_fractions(model, truth, record["size"]))
    cuts_by_method = {}
    for method in methods:
        used = collected[1:] if method.uses_controls else []
        check_request(method, proportions=grid, seed=seed, controls=len(used))
        context = build_context(model, collected[0], used, seed=seed, head=method.scores_head)
        cuts = [
            with_provenance(cut, model=identity, corpora=corpora[: 1 + len(used)], max_length=None)
            for cut in locator.run_method(model, method, context, grid)
        ]
        cuts_by_method[method.name] = cuts
        found = recovery(truth, cuts, model)
        with intervene(model, cuts[found.cut], 0.0):
            pruned = skill_scores(model, tokenizer)
        rows.append(
            {
                **base_row,
                "method": method.name,
                "method_level": cuts[found.cut].level,
                "unit": found.unit,
                "truth_size": found.truth_size,
                "total": found.total,
                "selected": found.selected,
                "precision": found.precision,
                "recall": found.recall,
                "auprc": found.auprc,
                "chance": found.chance,
                **_pruned(pruned),
            }
        )
    return rows, cuts_by_method


def _pruned(scores: dict[str, float]) -> dict[str, float]:
    """Skill scores as the CSV's after-pruning columns."""
    return {
        "planted_after_pruning": scores["planted"],
        "arithmetic_after_pruning": scores["arithmetic"],
        "language_loss_after_pruning": scores["language_loss"],
    }


def _one_planting(
    plantings: Path, settings: PlantingSettings, num_samples: int
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, list[Any]]]:
    """Plant (or reuse) one planting and score every method on it: its record, rows, cuts."""
    folder = ensure_planting(plantings, settings)
    rows, cuts = score_planting(folder, num_samples=num_samples)
    record = json.loads((folder / "planting.json").read_text())
    return record, rows, cuts


def run_ground_truth(
    out_dir: str | Path,
    *,
    seeds: int = 3,
    plantings: str | Path | None = None,
    num_samples: int = 200,
    steps: int = 300,
    workers: int = 1,
    force: bool = False,
) -> Path:
    """Run the benchmark for planting seeds ``0..seeds-1`` of each level and write the output
    folder `out_dir` (see the module docstring); plantings are kept in `plantings` (default:
    ``<out>-plantings`` beside the output folder) and reused; each trains `steps` steps.
    `workers` processes plant and score
    in parallel. The output folder appears whole or not at all."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from locator.io import atomic_directory, check_output_directory

    for name, value, low in (("seeds", seeds, 1), ("num_samples", num_samples, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise LocatorError(f"{name} must be an integer >= {low}, got {value!r}.")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise LocatorError(f"workers must be an integer >= 1, got {workers!r}.")
    out = check_output_directory(
        out_dir,
        owned=lambda folder: (folder / CSV_FILE).is_file(),
        what="ground-truth results",
        force=force,
    )
    where = Path(plantings) if plantings is not None else out.parent / f"{out.name}-plantings"
    requests = [
        PlantingSettings(level=level, seed=seed) for level in LEVELS for seed in range(seeds)
    ]
    if workers == 1:
        results = [_one_planting(where, settings, num_samples) for settings in requests]
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_one_planting, where, s, num_samples) for s in requests]
            results = [future.result() for future in futures]
    rows = [row for _, found, _ in results for row in found]

    def write(folder: Path) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        (folder / CSV_FILE).write_text(text.getvalue())
        (folder / MARKDOWN_FILE).write_text(
            ground_truth_section([record for record, _, _ in results], rows)
        )
        for settings, (_, _, cuts) in zip(requests, results, strict=True):
            for method, found in cuts.items():
                where_cuts = folder / "selections" / f"{settings.level}-{settings.seed}" / method
                where_cuts.mkdir(parents=True)
                for cut in found:
                    cut.save(where_cuts / f"{cut.proportion:.6g}.safetensors")

    return atomic_directory(out, write, replace=force)


def _interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval of `values` (the interval is the mean itself for one value)."""
    from locator.bench.specificity import t975

    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean, mean
    half = t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def ground_truth_section(records: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]) -> str:
    """The report's "Ground truth" section (Markdown) from the planting records and CSV rows."""
    lines = [
        "## Ground truth",
        "",
        f"A skill the toy model lacks (`{PLANTED_TASK}`: `a big b = max(a, b)`, operands 0-19) "
        "was planted by training only a seeded set S of parameters, every other weight "
        "bit-identical to the shipped toy model: at weight level S is 1% of the entries of "
        "every decoder linear, at neuron level 8 MLP neurons per layer (their gate and up rows "
        "and down columns). Each method localizes the planted skill (controls, for methods "
        "that use them: the old skills) and is scored against S: precision and recall of its "
        "cut of |S|'s size, and the area under the precision-recall curve (AUPRC) over "
        f"cuts at {len(GRID)} proportions from 0.1% to 100%, beside uniform random (|S|/N). "
        "S holds the planted skill's own changes; machinery it shares with the old skills "
        "(embeddings, attention that moves operands, the weights' base values) lies outside "
        "S, so recovering S means finding what is specific to the skill.",
        "",
        "| planting | \\|S\\| | planted skill before → after planting | arithmetic after "
        "| language loss before → after | planting time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for record in records:
        settings, before, after = record["settings"], record["before"], record["after"]
        lines.append(
            f"| {settings['level']}-{settings['seed']} | {record['size']:,} | "
            f"{before['planted']:.3f} → {after['planted']:.3f} | {after['arithmetic']:.3f} | "
            f"{before['language_loss']:.4f} → {after['language_loss']:.4f} | "
            f"{record['wall_seconds']} |"
        )
    by_level: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        by_level[row["level"]][row["method"]].append(row)
    for level, methods in by_level.items():
        lines += [
            "",
            f"### {level.capitalize()}-level truth ({len(methods['(none)'])} plantings)",
            "",
            "| rank | method | unit | AUPRC [95%] | precision at \\|S\\| | recall at \\|S\\| "
            "| chance | planted skill left after pruning | arithmetic after pruning |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        scored = [(name, found) for name, found in methods.items() if not name.startswith("(")]
        scored.sort(key=lambda item: -statistics.fmean(r["auprc"] for r in item[1]))
        for rank, (name, found) in enumerate(scored, 1):
            mean, low, high = _interval([r["auprc"] for r in found])
            lines.append(
                f"| {rank} | {name} | {found[0]['unit']} | {mean:.3f} [{low:.3f}, {high:.3f}] | "
                f"{_mean(found, 'precision')} | {_mean(found, 'recall')} | "
                f"{_mean(found, 'chance')} | {_mean(found, 'planted_after_pruning')} | "
                f"{_mean(found, 'arithmetic_after_pruning')} |"
            )
        for name in ("(none)", "(S)"):
            found = methods[name]
            lines.append(
                f"| | {'unpruned' if name == '(none)' else 'S pruned (the truth)'} | | | | | | "
                f"{_mean(found, 'planted_after_pruning')} | "
                f"{_mean(found, 'arithmetic_after_pruning')} |"
            )
    return "\n".join(lines) + "\n"


def _mean(rows: Sequence[dict[str, Any]], column: str) -> str:
    """The mean of one column over rows, three decimals."""
    return f"{statistics.fmean(float(r[column]) for r in rows):.3f}"


def score_files(planted: str | Path, files: Sequence[str | Path]) -> Any:
    """Score localization files (one method's cuts, for example a results folder's
    ``selections/<planting>/<method>/``) against the ground truth of the planted model folder
    `planted`, after checking the planted model; returns a `locator.recovery.Recovery`."""
    from locator.localization import Localization
    from locator.recovery import recovery

    if not files:
        raise LocatorError("give at least one localization file to score.")
    model, _, truth, _ = load_planted(planted)
    return recovery(truth, [Localization.load(path) for path in files], model)
