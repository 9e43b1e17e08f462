"""The report: a results folder turned into Markdown with PNG plots, and the terminal summary.

`write_report` reads a results folder (`locator.bench.results`) and writes ``report.md`` with:
each metric against the fraction of parameters edited, per method, for pruning and for every
scaling factor (the MathNeuro paper's main figure); a table per proportion; the overlap
(Jaccard) of selections across seeds and across sample counts (the paper's consistency
analysis); and where the selected parameters are, by layer and by module kind. An experiment
is one (model, dtype, target, controls); values are means over seeds with their standard
deviation. Standard-error metrics (names containing ``stderr``) are left out of plots and
tables. Plots are drawn with matplotlib's Agg canvas, never pyplot, so no global backend changes.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

from locator.bench.results import read_results
from locator.io import atomic_write

Row = Mapping[str, Any]
_EXPERIMENT = ("model", "dtype", "target", "controls")


def _experiment(row: Row) -> tuple[Any, ...]:
    return tuple(row[c] for c in _EXPERIMENT)


def _title(experiment: Sequence[Any]) -> str:
    model, dtype, target, controls = experiment
    return f"{model} ({dtype}): target {target}, controls {controls or '(none)'}"


def _groups(rows: Iterable[Row], key: Callable[[Row], Any]) -> dict[Any, list[Row]]:
    """Rows grouped by `key`, groups in first-seen order."""
    grouped: dict[Any, list[Row]] = defaultdict(list)
    for row in rows:
        grouped[key(row)].append(row)
    return dict(grouped)


def _measures(rows: Iterable[Row]) -> list[tuple[str, str]]:
    """The (task, metric) pairs shown, in first-seen order, standard errors left out."""
    return list(
        dict.fromkeys((r["task"], r["metric"]) for r in rows if "stderr" not in r["metric"])
    )


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _number(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4g}"


def _factor_name(factor: float) -> str:
    return "prune (x0)" if factor == 0 else f"scale x{factor:g}"


def _markdown_table(header: Sequence[str], body: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return lines + [""]


# The terminal summary.


def summary_table(rows: Sequence[Row]) -> str:
    """A plain-text table: per experiment, the baseline then each (method, samples, factor,
    proportion) with the mean fraction edited and the mean of every metric over seeds."""
    lines = []
    for experiment, group in _groups(rows, _experiment).items():
        measures = _measures(group)
        header = ["method", "samples", "factor", "proportion", "fraction"]
        header += [f"{task}:{metric}" for task, metric in measures]
        baseline = {(r["task"], r["metric"]): r["baseline_value"] for r in group}
        table = [["baseline", "", "", "", ""] + [_number(baseline[m]) for m in measures]]
        cells = _groups(
            group, lambda r: (r["label"], r["num_samples"], r["factor"], r["proportion"])
        )
        for (label, samples, factor, proportion), cell in sorted(cells.items()):
            by_measure = _groups(cell, lambda r: (r["task"], r["metric"]))
            fraction = _mean_std([r["selected_fraction"] for r in cell])[0]
            table.append(
                [label, str(samples), f"{factor:g}", f"{proportion:g}", f"{fraction:.3%}"]
                + [_number(_mean_std([r["value"] for r in by_measure[m]])[0]) for m in measures]
            )
        widths = [max(len(line[i]) for line in [header, *table]) for i in range(len(header))]
        lines.append(_title(experiment))
        for line in [header, *table]:
            lines.append(
                "  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True))
            )
        lines.append("")
    return "\n".join(lines).rstrip()


def headline(rows: Sequence[Row], proportion: float = 0.05) -> str:
    """The finding in a few lines: per experiment, at the proportion closest to `proportion`,
    pruning and each scaling factor, every method's fraction edited and each metric's change
    from the unedited model (means over seeds and sample counts)."""
    lines = []
    for experiment, group in _groups(rows, _experiment).items():
        chosen = min({r["proportion"] for r in group}, key=lambda p: (abs(p - proportion), p))
        measures = _measures(group)
        baseline = {(r["task"], r["metric"]): r["baseline_value"] for r in group}
        lines.append(f"{_title(experiment)}; proportion {chosen:g}:")
        at = [r for r in group if r["proportion"] == chosen]
        for factor, edited in sorted(_groups(at, lambda r: r["factor"]).items()):
            lines.append(f"  {_factor_name(factor)}")
            for label, method_rows in _groups(edited, lambda r: r["label"]).items():
                fraction = _mean_std([r["selected_fraction"] for r in method_rows])[0]
                changes = []
                for task, metric in measures:
                    values = [
                        r["value"]
                        for r in method_rows
                        if (r["task"], r["metric"]) == (task, metric)
                    ]
                    before, after = baseline[(task, metric)], _mean_std(values)[0]
                    changes.append(f"{task} {metric} {before:.4f} -> {after:.4f}")
                lines.append(f"    {label:<28} {fraction:>8.3%} edited: " + "; ".join(changes))
    return "\n".join(lines)


# Plots.


def _save(figure: Any, path: Path) -> None:
    """Write a figure as PNG atomically."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    atomic_write(path, buffer.getvalue())


def _figure(columns: int, rows: int = 1, width: float = 4.2, height: float = 3.4) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * columns, height * rows), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _log_axis(axis: Any, percent: bool) -> None:
    """A log x axis (call after plotting) labelled at powers of ten, and at 2 and 5 times them
    when the data span less than two decades (else no label would show); `percent` labels
    fractions as percentages."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_xscale("log")
    low, high = axis.get_xlim()
    subs = (1.0,) if high > 100 * low else (1.0, 2.0, 5.0)
    axis.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.xaxis.set_minor_formatter(NullFormatter())
    if percent:
        axis.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x * 100:.3g}%"))


def _effect_plot(rows: Sequence[Row], factor: float, title: str, path: Path) -> None:
    """One panel per (task, metric): mean value +- std over seeds against the mean fraction of
    scored parameters edited, one line per method, the baseline dashed."""
    measures = _measures(rows)
    figure = _figure(len(measures))
    axes = figure.subplots(1, len(measures), squeeze=False)[0]
    for axis, (task, metric) in zip(axes, measures, strict=True):
        cells = [r for r in rows if r["task"] == task and r["metric"] == metric]
        for label, group in _groups(cells, lambda r: r["label"]).items():
            points = []
            for _, cell in sorted(_groups(group, lambda r: r["proportion"]).items()):
                fraction = _mean_std([r["selected_fraction"] for r in cell])[0]
                mean, std = _mean_std([r["value"] for r in cell])
                if fraction > 0:  # a log axis cannot show an empty selection
                    points.append((fraction, mean, std))
            if points:
                x, y, error = zip(*points, strict=True)
                axis.errorbar(x, y, yerr=error, marker="o", markersize=4, capsize=3, label=label)
        baseline = cells[0]["baseline_value"] if cells else None
        if baseline is not None:
            axis.axhline(baseline, color="grey", linestyle="--", linewidth=1, label="unedited")
        _log_axis(axis, percent=True)
        axis.set_xlabel("scored parameters edited")
        axis.set_ylabel(metric)
        axis.set_title(task)
        axis.grid(True, alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside right upper", fontsize="small")
    figure.suptitle(f"{_factor_name(factor)}: {title}", fontsize="medium")
    _save(figure, path)


def _overlap_plot(across_seeds: Sequence[dict[str, Any]], title: str, path: Path) -> None:
    figure = _figure(1, width=5.5)
    axis = figure.subplots()
    largest = max(entry["num_samples"] for entry in across_seeds)
    chosen = [entry for entry in across_seeds if entry["num_samples"] == largest]
    for label, group in _groups(chosen, lambda e: e["label"]).items():
        group = sorted(group, key=lambda e: e["proportion"])
        x = [e["proportion"] for e in group]
        axis.plot(x, [e["mean"] for e in group], marker="o", label=label)
    _log_axis(axis, percent=False)
    axis.set_ylim(0, 1.05)
    axis.set_xlabel("proportion K")
    axis.set_ylabel("mean pairwise Jaccard across seeds")
    axis.set_title(f"{title}\n{largest} samples per corpus", fontsize="small")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize="small")
    _save(figure, path)


def _distribution_plot(
    shares: Mapping[str, tuple[dict[Any, float], dict[Any, float]]], title: str, path: Path
) -> None:
    """Grouped bars: share of each block's (and each module kind's) scored entries selected."""
    from matplotlib.ticker import PercentFormatter

    figure = _figure(2, width=5.5)
    panels = figure.subplots(1, 2)
    width = 0.8 / max(1, len(shares))
    for panel, index, name in ((panels[0], 0, "decoder block"), (panels[1], 1, "module kind")):
        keys = sorted({k for pair in shares.values() for k in pair[index]})
        for i, (label, pair) in enumerate(shares.items()):
            positions = [j + (i - (len(shares) - 1) / 2) * width for j in range(len(keys))]
            panel.bar(positions, [pair[index].get(k, 0.0) for k in keys], width, label=label)
        panel.set_xticks(range(len(keys)), [str(k) for k in keys])
        panel.set_title(f"by {name}", fontsize="medium")
        panel.set_ylabel("scored entries selected")
        panel.yaxis.set_major_formatter(PercentFormatter(xmax=1))
        panel.grid(True, axis="y", alpha=0.3)
    panels[1].tick_params(axis="x", labelrotation=30, labelsize="small")
    handles, labels = panels[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside right upper", fontsize="small")
    figure.suptitle(title, fontsize="medium")
    _save(figure, path)


# Overlap and distribution of selections, from the files saved beside the results.


class _Selections:
    """Loads selection files on demand, keeping only the most recent few in memory."""

    def __init__(self, directory: Path, keep: int = 8) -> None:
        self.directory, self.keep = directory, keep
        self.loaded: dict[str, Any] = {}

    def __call__(self, relative: str) -> Any:
        from locator.localization import Localization

        if relative not in self.loaded:
            if len(self.loaded) >= self.keep:
                self.loaded.pop(next(iter(self.loaded)))
            self.loaded[relative] = Localization.load(self.directory / relative)
        return self.loaded[relative]


def _selection_rows(rows: Iterable[Row]) -> dict[tuple[Any, ...], str]:
    """(label, proportion, num_samples, seed) -> selection file, one per localization."""
    return {
        (r["label"], r["proportion"], r["num_samples"], r["seed"]): r["selection"] for r in rows
    }


def _jaccard(first: Any, second: Any) -> float | None:
    """Jaccard overlap of two localizations; None when both are empty (nothing to compare)."""
    if first.count() == 0 and second.count() == 0:
        return None
    return float(first.jaccard(second))


def _overlaps(
    files: Mapping[tuple[Any, ...], str], load: _Selections
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Mean pairwise Jaccard across seeds (per label, proportion, num_samples) and between
    sample counts at the same seed (per label, proportion, pair of counts); pairs of empty
    selections are left out."""
    across_seeds, across_samples = [], []
    by_cell = _groups(
        ({"key": k, "file": f} for k, f in files.items()), lambda e: (e["key"][0], e["key"][1])
    )
    for (label, proportion), entries in by_cell.items():
        per_samples = _groups(entries, lambda e: e["key"][2])
        for num_samples, group in per_samples.items():
            found = [_jaccard(load(a["file"]), load(b["file"])) for a, b in combinations(group, 2)]
            pairs = [value for value in found if value is not None]
            if pairs:
                across_seeds.append(
                    {
                        "label": label,
                        "proportion": proportion,
                        "num_samples": num_samples,
                        "seeds": len(group),
                        "mean": statistics.fmean(pairs),
                        "min": min(pairs),
                    }
                )
        for small, large in combinations(sorted(per_samples), 2):
            seeds_small = {e["key"][3]: e["file"] for e in per_samples[small]}
            seeds_large = {e["key"][3]: e["file"] for e in per_samples[large]}
            common = sorted(set(seeds_small) & set(seeds_large))
            if common:
                found = [_jaccard(load(seeds_small[s]), load(seeds_large[s])) for s in common]
                values = [value for value in found if value is not None]
                if not values:
                    continue
                across_samples.append(
                    {
                        "label": label,
                        "proportion": proportion,
                        "samples": f"{small} vs {large}",
                        "seeds": len(values),
                        "mean": statistics.fmean(values),
                    }
                )
    return across_seeds, across_samples


def _shares(localization: Any) -> tuple[dict[int, float], dict[str, float]]:
    """Share of each layer's and each module kind's scored entries that are selected."""
    from locator.architecture import layer_and_kind

    totals: dict[str, dict[Any, list[int]]] = {"layer": {}, "kind": {}}
    for name, selection in localization.selections.items():
        layer, kind = layer_and_kind(name)
        for axis, key in (("layer", layer), ("kind", kind)):
            counts = totals[axis].setdefault(key, [0, 0])
            counts[0] += selection.count
            counts[1] += selection.numel
    layers = {k: c / n for k, (c, n) in totals["layer"].items() if n}
    kinds = {k: c / n for k, (c, n) in totals["kind"].items() if n}
    return layers, kinds


# The report.


def write_report(directory: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.md`` and its PNG plots for the results in `directory` into `out`
    (default ``DIR/_report``); return the path of ``report.md``."""
    directory = Path(directory)
    rows = read_results(directory).to_pylist()
    out = Path(out) if out is not None else directory / "_report"
    out.mkdir(parents=True, exist_ok=True)
    load = _Selections(directory)
    suites = sorted({r["suite"] for r in rows})
    configurations = len({r["config_hash"] for r in rows})
    first = rows[0]
    lines = [
        f"# Benchmark report: {', '.join(suites)}",
        "",
        f"{len(rows)} rows from {configurations} configurations in `{directory}`. "
        f"locator {first['locator_version']}, torch {first['torch_version']}, "
        f"transformers {first['transformers_version']}, lm-eval {first['lm_eval_version']}. "
        "Values are means over seeds (± standard deviation); the fraction edited is the "
        "share of all scored parameters (decoder linears) the selection touched.",
        "",
    ]
    for number, (experiment, group) in enumerate(_groups(rows, _experiment).items(), start=1):
        title = _title(experiment)
        lines += [f"## {number}. {title}", ""]
        lines += ["Unedited model:", ""]
        baseline = {(r["task"], r["metric"]): r["baseline_value"] for r in group}
        lines += _markdown_table(
            ["task", "metric", "value"],
            [
                [task, metric, _number(baseline[(task, metric)])]
                for task, metric in _measures(group)
            ],
        )
        for num_samples, sampled in sorted(_groups(group, lambda r: r["num_samples"]).items()):
            lines += _effect_section(number, title, num_samples, sampled, out)
        lines += _overlap_section(number, title, group, load, out)
        lines += _distribution_section(number, title, group, load, out)
    path = out / "report.md"
    return atomic_write(path, "\n".join(lines))


def _effect_section(
    number: int, title: str, num_samples: int, rows: Sequence[Row], out: Path
) -> list[str]:
    lines = [f"### Effect of editing ({num_samples} samples per corpus)", ""]
    measures = _measures(rows)
    for factor, edited in sorted(_groups(rows, lambda r: r["factor"]).items()):
        name = f"effect-{number}-n{num_samples}-x{factor:g}.png"
        _effect_plot(edited, factor, f"{title}, {num_samples} samples", out / name)
        lines += [f"![{_factor_name(factor)}]({name})", ""]
        for proportion, cell in sorted(_groups(edited, lambda r: r["proportion"]).items()):
            lines += [f"{_factor_name(factor)}, proportion {proportion:g}:", ""]
            body = []
            for label, method_rows in _groups(cell, lambda r: r["label"]).items():
                fraction = _mean_std([r["selected_fraction"] for r in method_rows])[0]
                values = []
                for task, metric in measures:
                    chosen = [
                        r["value"]
                        for r in method_rows
                        if (r["task"], r["metric"]) == (task, metric)
                    ]
                    mean, std = _mean_std(chosen)
                    values.append(f"{_number(mean)} ± {_number(std)}")
                seeds = len({r["seed"] for r in method_rows})
                body.append([label, f"{fraction:.4%}", str(seeds), *values])
            header = ["method", "fraction edited", "seeds"] + [f"{t} {m}" for t, m in measures]
            lines += _markdown_table(header, body)
    return lines


def _overlap_section(
    number: int, title: str, rows: Sequence[Row], load: _Selections, out: Path
) -> list[str]:
    across_seeds, across_samples = _overlaps(_selection_rows(rows), load)
    lines = ["### Consistency of selections (Jaccard overlap)", ""]
    if not across_seeds and not across_samples:
        return lines + ["One seed and one sample count: no overlap to measure.", ""]
    if across_seeds:
        name = f"overlap-{number}.png"
        _overlap_plot(across_seeds, title, out / name)
        lines += [f"![overlap across seeds]({name})", "", "Across seeds:", ""]
        lines += _markdown_table(
            ["method", "proportion", "samples", "seeds", "mean Jaccard", "min Jaccard"],
            [
                [
                    e["label"],
                    f"{e['proportion']:g}",
                    str(e["num_samples"]),
                    str(e["seeds"]),
                    f"{e['mean']:.3f}",
                    f"{e['min']:.3f}",
                ]
                for e in across_seeds
            ],
        )
    if across_samples:
        lines += ["Across sample counts (same seed):", ""]
        lines += _markdown_table(
            ["method", "proportion", "samples", "seeds", "mean Jaccard"],
            [
                [
                    e["label"],
                    f"{e['proportion']:g}",
                    e["samples"],
                    str(e["seeds"]),
                    f"{e['mean']:.3f}",
                ]
                for e in across_samples
            ],
        )
    return lines


def _distribution_section(
    number: int, title: str, rows: Sequence[Row], load: _Selections, out: Path
) -> list[str]:
    """Where the selection of each method lies, at the largest proportion, the largest sample
    count and the first seed."""
    proportion = max(r["proportion"] for r in rows)
    num_samples = max(r["num_samples"] for r in rows)
    seed = min(r["seed"] for r in rows)
    files = _selection_rows(rows)
    shares = {}
    for label in dict.fromkeys(r["label"] for r in rows):
        relative = files.get((label, proportion, num_samples, seed))
        if relative is not None:
            shares[label] = _shares(load(relative))
    caption = f"proportion {proportion:g}, {num_samples} samples, seed {seed}"
    name = f"distribution-{number}.png"
    _distribution_plot(shares, f"{title}\n{caption}", out / name)
    lines = [f"### Where the selected parameters are ({caption})", "", f"![distribution]({name})"]
    kinds = sorted({k for _, by_kind in shares.values() for k in by_kind})
    lines += ["", "Share of each module kind's scored entries selected:", ""]
    lines += _markdown_table(
        ["method", *kinds],
        [
            [label, *(f"{by_kind.get(k, 0):.3%}" for k in kinds)]
            for label, (_, by_kind) in shares.items()
        ],
    )
    return lines
