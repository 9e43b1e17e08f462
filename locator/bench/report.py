"""The report: a results folder turned into Markdown and one self-contained HTML file with figures
(PNG and SVG each), and the terminal summaries.

`write_report` reads a results folder (`locator.bench.results`) and writes, per experiment (one
model, dtype, target and controls):

- the unedited metrics;
- per sample count and factor, every measure against the fraction of parameters edited, per
  method (the MathNeuro paper's main figure), with its table;
- specificity (`locator.bench.specificity`): the change of the skill and of each control against
  the unedited model and against the matched random baseline, with 95% intervals, the verdicts
  "removes the skill beyond matched random" and "specific", and the specificity plane;
- consistency (`locator.bench.overlap`): Jaccard overlaps across seeds and across sample counts
  next to what random selections of the same sizes would share;
- placement: per decoder block and module kind, the selected share over the scored share.

Standard-error metrics (names containing ``stderr``) are left out of figures and tables.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from locator.bench import figures, ground_truth, matrix
from locator.bench.document import Document
from locator.bench.metrics import (
    clip,
    column,
    decimals,
    fixed,
    groups,
    higher_is_better,
    measure_label,
    metric_label,
    model_label,
    write_csv,
)
from locator.bench.overlap import (
    Overlap,
    Selections,
    overlaps,
    placement,
    selection_files,
    variant_overlaps,
)
from locator.bench.results import read_results
from locator.bench.specificity import (
    Bootstrap,
    Change,
    Samples,
    changes,
    matched_labels,
    read_samples,
    skill_task,
    specific,
)
from locator.io import atomic_write, check_output_directory

if TYPE_CHECKING:
    from locator.bench.suite import SkillSpec

Row = Mapping[str, Any]
_EXPERIMENT = ("model", "dtype", "target", "controls")
_NONE = (math.nan, math.nan, math.nan)  # no estimate, as (mean, low, high)


def _experiment(row: Row) -> tuple[Any, ...]:
    return tuple(row[c] for c in _EXPERIMENT)


def _title(experiment: Sequence[Any]) -> str:
    model, dtype, target, controls = experiment
    return f"{model_label(model)} ({dtype}): target {target}, controls {controls or '(none)'}"


def _measures(rows: Iterable[Row]) -> list[tuple[str, str]]:
    """The (task, metric) pairs shown, in first-seen order, standard errors left out."""
    return list(
        dict.fromkeys((r["task"], r["metric"]) for r in rows if "stderr" not in r["metric"])
    )


def _mean(values: Iterable[float | None]) -> float:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.fmean(kept) if kept else math.nan


def _factor_name(factor: float) -> str:
    return "prune (x0)" if factor == 0 else f"scale x{factor:g}"


def _percent(values: Sequence[float]) -> list[str]:
    return [f"{text}%" for text in column([v * 100 for v in values])]


# The terminal summaries.


def summary_table(rows: Sequence[Row]) -> str:
    """A plain-text table: per experiment, the baseline then each (method, samples, factor,
    proportion) with the mean fraction edited and the mean of every metric over seeds; each
    column with one number of decimals that tells its values apart (a ground-truth suite's
    rows: its ranking, `locator.bench.ground_truth.summary`)."""
    if ground_truth.is_ground_truth(rows):
        return ground_truth.summary(rows)
    lines = []
    for experiment, group in groups(rows, _experiment).items():
        measures = _measures(group)
        header = ["method", "samples", "factor", "proportion", "fraction"]
        header += [f"{task}:{metric}" for task, metric in measures]
        baseline = {(r["task"], r["metric"]): r["baseline_value"] for r in group}
        cells = groups(
            group, lambda r: (r["label"], r["num_samples"], r["factor"], r["proportion"])
        )
        keys = sorted(cells)
        fractions = _percent([_mean(r["selected_fraction"] for r in cells[k]) for k in keys])
        labels = [["baseline", "", "", "", ""]] + [
            [label, str(n), f"{f:g}", f"{p:g}", fraction]
            for (label, n, f, p), fraction in zip(keys, fractions, strict=True)
        ]
        columns = []
        for measure in measures:
            values = [baseline[measure]] + [
                _mean(r["value"] for r in cells[k] if (r["task"], r["metric"]) == measure)
                for k in keys
            ]
            columns.append(column(values))
        table = [header] + [line + [c[i] for c in columns] for i, line in enumerate(labels)]
        widths = [max(len(line[i]) for line in table) for i in range(len(header))]
        lines.append(_title(experiment))
        lines += ["  ".join(map(str.rjust, line, widths)) for line in table]
        lines.append("")
    return "\n".join(lines).rstrip()


def headline(rows: Sequence[Row], proportion: float = 0.05) -> str:
    """The finding in a few lines: per experiment, at the proportion closest to `proportion`,
    pruning and each scaling factor, every method's fraction edited and each metric's change
    from the unedited model (means over seeds and sample counts); for a ground-truth suite's
    rows, its ranking."""
    if ground_truth.is_ground_truth(rows):
        return ground_truth.summary(rows)
    lines = []
    for experiment, group in groups(rows, _experiment).items():
        chosen = min({r["proportion"] for r in group}, key=lambda p: (abs(p - proportion), p))
        measures = _measures(group)
        baseline = {(r["task"], r["metric"]): r["baseline_value"] for r in group}
        lines.append(f"{_title(experiment)}; proportion {chosen:g}:")
        at = [r for r in group if r["proportion"] == chosen]
        for factor, edited in sorted(groups(at, lambda r: r["factor"]).items()):
            lines.append(f"  {_factor_name(factor)}")
            for label, method_rows in groups(edited, lambda r: r["label"]).items():
                fraction = _mean(r["selected_fraction"] for r in method_rows)
                moved = []
                for task, metric in measures:
                    after = _mean(
                        r["value"]
                        for r in method_rows
                        if (r["task"], r["metric"]) == (task, metric)
                    )
                    before = baseline[(task, metric)]
                    places = decimals([before, after])
                    moved.append(
                        f"{task} {metric} {fixed(before, places)} -> {fixed(after, places)}"
                    )
                lines.append(f"    {label:<28} {fraction:>8.3%} edited: " + "; ".join(moved))
    return "\n".join(lines)


# The report.


def write_report(
    directory: str | Path,
    out: str | Path | None = None,
    *,
    skill: str | None = None,
    echo: Callable[[str], None] = lambda line: None,
) -> Path:
    """Write ``report.md``, ``report.html`` and their figures (PNG and SVG) for the results in
    `directory` into `out` (default ``DIR/_report``; checked first); return the path of
    ``report.md``. `skill` names the task that measures the skill (default: the target
    dataset's task); `echo` gets the `headline` before the writing starts."""
    out = check_output_directory(
        Path(directory) / "_report" if out is None else out,
        owned=lambda p: (p / "report.md").is_file(),
        what="a report",
        extend=True,
    )
    rows = read_results(directory).to_pylist()
    echo(headline(rows))
    echo(f"results (Parquet) -> {directory}")
    directory = Path(directory)
    title = f"Benchmark report: {', '.join(sorted({r['suite'] for r in rows}))}"
    first = rows[0]
    made = (
        f"{len(rows)} rows from {len({r['config_hash'] for r in rows})} configurations in "
        f"`{directory}`. locator {first['locator_version']}, torch {first['torch_version']}, "
        f"transformers {first['transformers_version']}"
    )
    document = Document(out)
    document.heading(1, title)
    if ground_truth.is_ground_truth(rows):  # its "Ground truth" section and ground-truth.csv
        plantings = ground_truth.planting_records(directory, rows)  # before anything is written
        ranked = ground_truth.records(ground_truth.cells(rows))
        out.mkdir(parents=True, exist_ok=True)
        document.text(f"{made}.")
        ground_truth.write_section(document, ranked, plantings)
        write_csv(out / ground_truth.CSV_FILE, ranked)
    else:
        _write_sections(document, directory, rows, made, skill)
    atomic_write(out / "report.html", document.html(title))
    return atomic_write(out / "report.md", document.markdown())


def _write_sections(
    document: Document, directory: Path, rows: Sequence[Row], made: str, skill: str | None
) -> None:
    """The report of a suite's results (not a ground-truth suite's) after its title, and
    ``specificity.csv`` (with a matrix suite's CSVs)."""
    out = document.out
    if skill is not None:  # a wrong name fails before any work
        skill_task(rows[0]["target"], list(dict.fromkeys(r["task"] for r in rows)), skill)
    # Every file the report reads is checked before it writes anything: a report that fails
    # half-way would leave a folder without report.md, which no later report may replace.
    samples = read_samples(directory)
    load = Selections(directory)
    for relative in dict.fromkeys(r["selection"] for r in rows):
        load.check(relative)
    out.mkdir(parents=True, exist_ok=True)
    bootstrap = Bootstrap()
    skills = matrix.declared_skills(directory)
    if skills:  # a matrix suite: the leaderboard opens the report, then the matrices
        found_matrix = matrix.analyze(rows, skills, samples, load=load, bootstrap=bootstrap)
        matrix.leaderboard_section(document, found_matrix)
        matrix.matrix_section(document, found_matrix)
        matrix.write_csvs(out, found_matrix)
    document.text(
        f"{made}, lm-eval {rows[0]['lm_eval_version']}. "
        "The fraction edited is the share of all scored parameters (decoder linears) the "
        "selection touched. Values are means over seeds; intervals are 95%: "
        + (
            "a paired bootstrap over the evaluated items and the seeds (per-item scores in "
            "`_samples/`)"
            if samples
            else "t intervals over seeds (this folder keeps no per-item scores)"
        )
        + ". A method **removes the skill beyond matched random** when the 95% interval of "
        "(its skill change - its matched random baseline's skill change, in the direction of "
        "removal) lies above 0 (yes), at or below 0 (no), or else contains 0 (undecided); it "
        "is **specific** when it removes the skill beyond matched random and harms no control "
        "beyond it by the same rule."
    )
    table = []
    for number, (experiment, group) in enumerate(groups(rows, _experiment).items(), start=1):
        found = _experiment_sections(
            document, number, experiment, group, skill, samples, bootstrap, load, skills
        )
        table += [_record(experiment, change) for change in found]
    write_csv(out / "specificity.csv", table)


def _experiment_sections(
    document: Document,
    number: int,
    experiment: Sequence[Any],
    rows: Sequence[Row],
    skill_name: str | None,
    samples: Samples,
    bootstrap: Bootstrap,
    load: Selections,
    skills: Mapping[str, SkillSpec],
) -> list[Change]:
    """The sections of one experiment; returns its changes (for ``specificity.csv``)."""
    model, dtype, target, controls = experiment
    title = _title(experiment)
    measures = _measures(rows)
    tasks = list(dict.fromkeys(t for t, _ in measures))
    skill = skill_task(target, tasks, skill_name, {s.corpus: s.task for s in skills.values()})
    matches = matched_labels(rows)
    style = figures.styles(list(dict.fromkeys(r["label"] for r in rows)), matches)
    document.heading(2, f"{number}. {title}")
    identity = "".join(
        f", {name.removeprefix('model_')} `{value}`"
        for name in ("model_revision", "model_fingerprint")
        if (value := rows[0].get(name))
    )
    document.text(
        f"Model `{model}` ({dtype}{identity}). Skill: "
        + (f"`{skill}`" if skill else "unknown (pass `--skill-task`)")
        + f"; controls: {', '.join(f'`{t}`' for t in tasks if t != skill) or '(none)'}."
    )
    higher = {
        (r["task"], r["metric"]): higher_is_better(r["metric"], r.get("higher_is_better"))
        for r in rows
    }
    baseline = {(r["task"], r["metric"]): r["baseline_value"] for r in rows}
    document.heading(3, "Unedited model")
    document.table(
        ["task", "metric", "value"],
        [
            [task, metric_label(metric, higher[(task, metric)]), value]
            for (task, metric), value in zip(
                measures, column([baseline[m] for m in measures]), strict=True
            )
        ],
    )
    found = changes(rows, samples, skill, bootstrap)
    for (num_samples, factor), cell in sorted(
        groups(found, lambda c: (c.num_samples, c.factor)).items()
    ):
        where = f"{_factor_name(factor)}, {num_samples} calibration samples"
        stem = f"{number}-n{num_samples}-x{factor:g}"
        heading = f"{model_label(model)}: {where}"
        document.heading(3, f"Effect of editing: {where}")
        document.figure(
            figures.effect_figure(cell, style, heading, document.out / f"effect-{stem}"),
            f"Each measure against the fraction edited ({where}); mean over seeds, 95% interval.",
        )
        _effect_table(document, cell)
        document.heading(3, f"Specificity: {where}")
        document.figure(
            figures.plane_figure(
                cell, _clouds(rows, cell), style, heading, document.out / f"plane-{stem}"
            ),
            "Specificity plane: skill removed against control harmed (both against the unedited "
            "model); matched random baselines as clouds of their seeds and proportions.",
        )
        _specificity_tables(document, cell)
    _consistency_section(document, number, rows, style, matches, load)
    _variants_section(document, rows, load)
    _placement_section(document, number, rows, style, load)
    return found


def _record(experiment: Sequence[Any], change: Change) -> dict[str, Any]:
    """One row of ``specificity.csv``: a change with its intervals, at full precision."""
    matched = change.matched
    return {
        **dict(zip(_EXPERIMENT, experiment, strict=True)),
        "num_samples": change.num_samples,
        "factor": change.factor,
        "label": change.label,
        "proportion": change.proportion,
        "fraction": change.fraction,
        "task": change.task,
        "metric": change.metric,
        "role": change.role,
        "higher_is_better": change.higher,
        "value": change.value,
        "baseline_value": change.baseline,
        "change": change.unedited.mean,
        "change_low": change.unedited.low,
        "change_high": change.unedited.high,
        "matched_label": change.matched_label,
        "change_vs_matched": matched.mean if matched else None,
        "change_vs_matched_low": matched.low if matched else None,
        "change_vs_matched_high": matched.high if matched else None,
        "beyond_matched": change.beyond_matched(),
        "seeds": change.unedited.seeds,
        "items": change.unedited.items,
    }


def _effect_table(document: Document, found: Sequence[Change]) -> None:
    cells = groups(found, lambda c: (c.label, c.proportion))
    measures = list(dict.fromkeys((c.task, c.metric) for c in found))
    keys = list(cells)
    body = [[label, f"{p:g}"] for label, p in keys]
    fractions = _percent([cells[k][0].fraction for k in keys])
    seeds = [str(cells[k][0].unedited.seeds) for k in keys]
    columns = [fractions, seeds]
    for measure in measures:
        chosen = [next((c for c in cells[k] if (c.task, c.metric) == measure), None) for k in keys]
        columns.append(
            _intervals(
                [
                    (
                        c.value,
                        clip(c.metric, c.baseline + c.unedited.low),
                        clip(c.metric, c.baseline + c.unedited.high),
                    )
                    if c is not None
                    else _NONE  # a part without this measure
                    for c in chosen
                ]
            )
        )
    header = ["method", "K", "fraction edited", "seeds"]
    directions = {(c.task, c.metric): c.higher for c in found}
    header += [measure_label(t, m, directions[(t, m)]) for t, m in measures]
    document.table(header, [line + [c[i] for c in columns] for i, line in enumerate(body)])


def _intervals(values: Sequence[tuple[float, float, float]], *, sign: bool = False) -> list[str]:
    """``mean [low, high]`` with one number of decimals for the whole column, chosen from the
    means (the differences a column is about). Only an interval that exists and holds its
    estimate is printed: with one seed and no per-item scores there is none to print."""
    places = decimals([mean for mean, _, _ in values])
    found = []
    for mean, low, high in values:
        text = fixed(mean, places, sign=sign)
        if low <= mean <= high:  # False for any NaN
            text += f" [{fixed(low, places, sign=sign)}, {fixed(high, places, sign=sign)}]"
        found.append(text)
    return found


def _specificity_tables(document: Document, found: Sequence[Change]) -> None:
    """A verdict per (method, proportion), then every measure's changes."""
    by_cell = groups(found, lambda c: (c.label, c.proportion))
    baselines = {c.matched_label for c in found if c.matched_label}
    verdicts = []
    for (label, proportion), cell in by_cell.items():
        if label in baselines:
            continue
        skill = [c for c in cell if c.role == "skill"]
        controls = [c for c in cell if c.role == "control"]
        removed = (
            "; ".join(f"{c.metric}: {c.beyond_matched()}" for c in skill)
            if len(skill) > 1
            else "".join(c.beyond_matched() for c in skill) or "n/a (no skill task)"
        )
        harmed = "; ".join(f"{c.task} {c.metric}: {c.beyond_matched()}" for c in controls)
        verdicts.append(
            [
                label,
                f"{proportion:g}",
                cell[0].matched_label or "(none)",
                removed,
                harmed or "(no control)",
                specific(skill, controls),
            ]
        )
    if verdicts:
        document.table(
            [
                "method",
                "K",
                "matched random",
                "removes the skill beyond matched random (95%)",
                "harms a control beyond matched random (95%)",
                "specific",
            ],
            verdicts,
        )
    for (task, metric), cells in groups(found, lambda c: (c.task, c.metric)).items():
        higher = cells[0].higher
        role = cells[0].role
        document.text(
            f"{role.capitalize()}: {measure_label(task, metric, higher)}. Changes are edited "
            "minus reference (mean over seeds, 95% interval)."
        )
        unedited, matched = (
            _intervals([(e.mean, e.low, e.high) if e else _NONE for e in estimates], sign=True)
            for estimates in ([c.unedited for c in cells], [c.matched for c in cells])
        )
        resampled = [
            f"{c.unedited.items} items x {c.unedited.seeds} seeds"
            if c.unedited.items
            else f"{c.unedited.seeds} seeds"
            for c in cells
        ]
        body = [
            [
                c.label,
                f"{c.proportion:g}",
                fraction,
                u,
                m if c.matched else "—",
                c.beyond_matched() if c.matched else "—",
                r,
            ]
            for c, fraction, u, m, r in zip(
                cells,
                _percent([c.fraction for c in cells]),
                unedited,
                matched,
                resampled,
                strict=True,
            )
        ]
        beyond = (
            "removes beyond matched random" if role == "skill" else "harms beyond matched random"
        )
        document.table(
            [
                "method",
                "K",
                "fraction edited",
                "vs unedited",
                "vs matched random",
                beyond,
                "resampled",
            ],
            body,
        )


def _clouds(
    rows: Sequence[Row], found: Sequence[Change]
) -> dict[tuple[str, str, str], list[tuple[float, float]]]:
    """Per matched baseline and control measure: (control harm, skill removal) of every seed and
    proportion, against the unedited model."""
    skill = next((c for c in found if c.role == "skill"), None)
    baselines = {c.matched_label for c in found if c.matched_label}
    if skill is None or skill.higher is None:
        return {}
    num_samples, factor = found[0].num_samples, found[0].factor
    values: dict[tuple[Any, ...], float] = {}
    for r in rows:
        if r["label"] in baselines and r["num_samples"] == num_samples and r["factor"] == factor:
            values[(r["label"], r["proportion"], r["seed"], r["task"], r["metric"])] = (
                r["value"] - r["baseline_value"]
            )
    directions = {(c.task, c.metric): c.higher for c in found}
    clouds: dict[tuple[str, str, str], list[tuple[float, float]]] = defaultdict(list)
    for (label, proportion, seed, task, metric), change in values.items():
        higher = directions.get((task, metric))
        if (task, metric) == (skill.task, skill.metric) or higher is None:
            continue
        removed = values.get((label, proportion, seed, skill.task, skill.metric))
        if removed is None:
            continue
        harm = -change if higher else change
        clouds[(label, task, metric)].append((harm, -removed if skill.higher else removed))
    return clouds


def _consistency_section(
    document: Document,
    number: int,
    rows: Sequence[Row],
    style: Mapping[str, figures.Style],
    matches: Mapping[str, str],
    load: Selections,
) -> None:
    across_seeds, across_samples = overlaps(rows, load)
    document.heading(3, "Consistency of selections (Jaccard overlap)")
    if not across_seeds and not across_samples:
        document.text("One seed and one sample count: no overlap to measure.")
        return
    baselines = set(matches.values())
    document.figure(
        figures.consistency_figure(
            across_seeds,
            across_samples,
            style,
            baselines,
            f"{model_label(rows[0]['model'])}: consistency of selections",
            document.out / f"consistency-{number}",
        ),
        "Jaccard overlap of selections (mean, range over pairs) against the sample count; "
        "dotted: what two independent random selections of the same per-matrix sizes share.",
    )
    document.text(
        "Random expectation: the Jaccard overlap two independent uniformly random selections "
        "of the same per-matrix sizes would have. Overlap near it is chance, not consistency."
    )
    for name, entries in (
        ("Across seeds", across_seeds),
        ("Against the largest sample count, same seed", across_samples),
    ):
        if entries:
            document.text(f"{name}:")
            _overlap_table(document, entries, "method", "pairs", baselines)


def _variants_section(document: Document, rows: Sequence[Row], load: Selections) -> None:
    """How much the variants of one method (a faithful and a published mode, two controls)
    share, beside what random selections of their sizes would."""
    found = variant_overlaps(rows, load)
    if not found:
        return
    document.heading(3, "Overlap between variants of one method (Jaccard)")
    document.text(
        "Each pair of configurations of one method that differ in options or controls, at the "
        "same proportion, sample count and seed; a parameter only one of them scores counts as "
        "empty in the other. Random expectation: what two independent uniformly random "
        "selections of the same per-matrix sizes would share."
    )
    _overlap_table(document, found, "variants", "seeds")


def _overlap_table(
    document: Document,
    entries: Sequence[Overlap],
    first: str,
    pairs: str,
    baselines: Collection[str] = (),
) -> None:
    """A table of overlaps, `first` naming the label column and `pairs` the pairs counted; a
    matched random baseline (in `baselines`) overlapping across sample counts is noted."""
    places = decimals([o.mean for o in entries])
    body = []
    for o, chance in zip(entries, column([o.expected for o in entries]), strict=True):
        note = ""
        if o.expected == 0 and o.mean == 0:
            note = "one of each pair selects nothing"
        elif o.mean <= o.expected * 1.1 + 1e-3:
            note = "no more than chance"
        elif o.label in baselines and o.versus:
            note = "matched random: positions follow the seed; this overlap is not consistency"
        samples = f"{o.num_samples} vs {o.versus}" if o.versus else str(o.num_samples)
        body.append(
            [
                o.label,
                f"{o.proportion:g}",
                samples,
                str(len(o.values)),
                fixed(o.mean, places),
                f"[{fixed(o.low, places)}, {fixed(o.high, places)}]",
                chance,
                note,
            ]
        )
    header = [first, "K", "samples", pairs, "mean Jaccard", "range", "random expectation"]
    document.table([*header, "note"], body)


def _placement_section(
    document: Document,
    number: int,
    rows: Sequence[Row],
    style: Mapping[str, figures.Style],
    load: Selections,
) -> None:
    """Where each method's selection lies at the largest proportion and sample count, averaged
    over seeds."""
    proportion = max(r["proportion"] for r in rows)
    num_samples = max(r["num_samples"] for r in rows)
    files = selection_files(rows)
    placements: dict[str, tuple[dict[int, float], dict[str, float]]] = {}
    for label in dict.fromkeys(r["label"] for r in rows):
        found = [
            placement(load(file))
            for (lab, p, n, _), file in sorted(files.items())
            if (lab, p, n) == (label, proportion, num_samples)
        ]
        found = [f for f in found if f[0]]
        if found:
            layers = {k: _mean(f[0].get(k) for f in found) for k in found[0][0]}
            kinds = {k: _mean(f[1].get(k) for f in found) for k in found[0][1]}
            placements[label] = (layers, kinds)
    caption = f"K = {proportion:g}, {num_samples} samples, mean over seeds"
    document.heading(3, f"Where the selected parameters are ({caption})")
    if not placements:
        document.text("No selection holds any entry.")
        return
    document.figure(
        figures.placement_figure(
            placements,
            style,
            f"{model_label(rows[0]['model'])}: where the selections lie, {caption}",
            document.out / f"placement-{number}",
        ),
        "Share of the selected entries in each block / module kind over its share of the scored "
        "entries: 1 = spread as a uniform draw would be.",
    )
    for axis, name in ((0, "decoder block"), (1, "module kind")):
        shares: list[Mapping[Any, float]] = [p[axis] for p in placements.values()]
        keys = sorted({k for share in shares for k in share})
        places = decimals([v for share in shares for v in share.values()])
        columns = [[fixed(share.get(k), places) for share in shares] for k in keys]
        document.text(f"Selected share / scored share by {name} (1 = uniform):")
        document.table(
            ["method", *map(str, keys)],
            [[label, *(c[i] for c in columns)] for i, label in enumerate(placements)],
        )
