"""The report's figures, drawn with matplotlib's Agg canvas (never pyplot, so no global backend
changes), each saved as PNG and SVG.

Every figure follows one style: a method keeps its colour (Okabe-Ito, safe for colour-blind
readers), marker and line style in all figures, and no two methods share both colour and marker
(colours and markers cycle with coprime periods); a matched random baseline takes the colour of
the method it matches with an open marker and a dashed line; legends sit below the axes; axes
never use offset notation; a log axis of the fraction edited has a tick at every plotted value
and labels as many as fit without touching. Heat maps use a diverging colour-blind-safe map
centred on zero and print each cell's value.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from locator.bench.metrics import clip, metric_label, task_label
from locator.bench.overlap import Overlap
from locator.bench.specificity import Change, Estimate

OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", "h", ">", "*")
"""Eleven markers against seven colours: method i gets colour i mod 7 and marker i mod 11, so
the first 77 methods differ in colour or marker."""
LINES = ("-", "-.", (0, (3, 1, 1, 1, 1, 1)), (0, (1, 1)))
"""Method lines; dashed is kept for matched baselines."""
UNEDITED = "#7f7f7f"


@dataclass(frozen=True)
class Style:
    """How one method is drawn."""

    color: str
    marker: str
    line: Any
    open: bool

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `Axes.plot` / `errorbar`."""
        return {
            "color": self.color,
            "marker": self.marker,
            "linestyle": self.line,
            # Open and larger, drawn below: a baseline's ring shows around its method's marker
            # where both have the same value.
            "markerfacecolor": "none" if self.open else self.color,
            "markersize": 7 if self.open else 5,
            "linewidth": 1.4,
            "zorder": 2 if self.open else 3,
        }


def styles(labels: Sequence[str], matches: Mapping[str, str]) -> dict[str, Style]:
    """A style per label; a matched baseline (`matches`: method -> its baseline) is drawn in its
    method's colour and marker, open, dashed."""
    baselines = {baseline: method for method, baseline in matches.items()}
    found: dict[str, Style] = {}

    def new() -> Style:
        i = len(found)
        return Style(OKABE_ITO[i % 7], MARKERS[i % 11], LINES[i % len(LINES)], False)

    for label in [x for x in labels if x not in baselines]:
        found[label] = new()
    for label in [x for x in labels if x in baselines]:
        method = found.get(baselines[label]) or new()
        found[label] = Style(method.color, method.marker, "--", True)
    return found


def _figure(columns: int, rows: int = 1, width: float = 3.6, height: float = 3.0) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * columns, height * rows + 0.6), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _plain(axis: Any, which: str = "y") -> None:
    """No offset or scientific notation on the `which` axis."""
    from matplotlib.ticker import ScalarFormatter

    formatter = ScalarFormatter(useOffset=False)
    formatter.set_scientific(False)
    (axis.yaxis if which == "y" else axis.xaxis).set_major_formatter(formatter)


def _log_fraction_axis(axis: Any, proportions: Sequence[float], label: str) -> None:
    """A log x axis (call after plotting) with a tick at every plotted value (a proportion, or
    the fraction actually edited, which often falls below its proportion) and at the powers of
    ten in view; labels (percentages) go to as many ticks as fit: a tick is labelled when it lies
    at least a twelfth of the axis's decades from every labelled one, powers of ten first."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    axis.set_xscale("log")
    low, high = axis.get_xlim()
    decade = 10.0 ** math.floor(math.log10(low))
    if low / decade < 2:  # show the power of ten just below the data, so it gets a label
        axis.set_xlim(decade, high)
        low = decade
    decades = [10.0**k for k in range(math.ceil(math.log10(low)), math.floor(math.log10(high)) + 1)]
    ticks = sorted({t for t in (*proportions, *decades) if low <= t <= high})
    gap = max(math.log10(high / low), 1.0) / 12  # at most about twelve labels
    labelled: list[float] = []
    for value in sorted(ticks, key=lambda t: (t not in decades, t)):
        if all(abs(math.log10(value / other)) >= gap for other in labelled):
            labelled.append(value)
    axis.xaxis.set_major_locator(FixedLocator(ticks))
    axis.xaxis.set_major_formatter(
        FuncFormatter(lambda x, _: f"{x * 100:.2g}%" if _near(x, labelled) else "")
    )
    axis.xaxis.set_minor_locator(NullLocator())
    axis.xaxis.set_minor_formatter(NullFormatter())
    axis.set_xlabel(label)
    axis.tick_params(axis="x", labelrotation=45, labelsize="small")


def _near(value: float, values: Collection[float]) -> bool:
    return any(math.isclose(value, other, rel_tol=1e-9) for other in values)


def _save(figure: Any, path: Path, title: str = "", axes: Sequence[Any] = ()) -> list[Path]:
    """Save `figure` as ``path.png`` and ``path.svg`` (each atomically), with the legend of
    `axes` below and `title` above (if any); return both paths."""
    import io

    from locator.io import atomic_write

    seen: dict[str, Any] = {}
    for axis in axes:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    if seen:
        figure.legend(
            list(seen.values()),
            list(seen),
            loc="outside lower center",
            ncols=max(1, min(4, len(seen), int(figure.get_figwidth() / 3.1))),
            fontsize="small",
            frameon=False,
        )
    if title:
        figure.suptitle(title, fontsize="medium")
    written = []
    for suffix, options in (("png", {"dpi": 150}), ("svg", {})):
        buffer = io.BytesIO()
        figure.savefig(buffer, format=suffix, **options)
        written.append(atomic_write(path.with_name(f"{path.name}.{suffix}"), buffer.getvalue()))
    return written


def effect_figure(
    found: Sequence[Change], style: Mapping[str, Style], title: str, path: Path
) -> list[Path]:
    """The paper's main figure for one factor and sample count: each measure against the
    fraction of scored parameters edited, per method (mean over seeds, 95% interval), the
    unedited model dashed."""
    measures = list(dict.fromkeys((c.task, c.metric) for c in found))
    figure = _figure(len(measures))
    axes = figure.subplots(1, len(measures), squeeze=False)[0]
    proportions = sorted({c.proportion for c in found})
    for axis, (task, metric) in zip(axes, measures, strict=True):
        cells = [c for c in found if (c.task, c.metric) == (task, metric)]
        by_label: dict[str, list[Change]] = defaultdict(list)
        for c in cells:
            if c.fraction > 0:  # a log axis cannot show an empty selection
                by_label[c.label].append(c)
        for label, points in by_label.items():
            points.sort(key=lambda c: c.fraction)
            x = [c.fraction for c in points]
            y = [c.value for c in points]
            # The interval of the value: the unedited model plus the change's interval.
            errors = [
                [max(0.0, c.value - clip(metric, c.baseline + c.unedited.low)) for c in points],
                [max(0.0, clip(metric, c.baseline + c.unedited.high) - c.value) for c in points],
            ]
            has_interval = not any(math.isnan(c.unedited.low) for c in points)
            axis.errorbar(
                x,
                y,
                yerr=errors if has_interval else None,
                capsize=2.5,
                label=label,
                **style[label].kwargs(),
            )
        axis.axhline(
            cells[0].baseline,
            color=UNEDITED,
            linestyle=(0, (4, 3)),
            linewidth=1,
            label="unedited model",
        )
        plotted = [c.fraction for c in cells if c.fraction > 0]
        _log_fraction_axis(axis, plotted or proportions, "scored parameters edited")
        higher = cells[0].higher
        axis.set_ylabel(metric_label(metric, higher, wrap=True))
        axis.set_title(task_label(task), fontsize="medium")
        _plain(axis)
        axis.grid(True, alpha=0.3)
    return _save(figure, path, title, axes)


def _direction_word(higher: bool | None) -> str:
    return "drop" if higher else "rise" if higher is False else "change"


def _errors(estimates: Sequence[Estimate]) -> Any:
    """Asymmetric error bars of estimates, or None when an interval is missing."""
    below = [e.mean - e.low for e in estimates]
    above = [e.high - e.mean for e in estimates]
    if any(math.isnan(v) for v in below + above):
        return None
    return [[max(0.0, v) for v in below], [max(0.0, v) for v in above]]


def plane_figure(
    found: Sequence[Change],
    seed_points: Mapping[tuple[str, str, str], Sequence[tuple[float, float]]],
    style: Mapping[str, Style],
    title: str,
    path: Path,
) -> list[Path] | None:
    """The specificity plane: skill removal against control harm (both against the unedited
    model, positive = worse), one panel per control measure of known direction, each method
    per proportion with 95% intervals; each matched random baseline as a cloud of its seeds and
    proportions (`seed_points[(label, control task, control metric)]`: (harm, removal)).
    None when there is no skill measure of known direction or no such control."""
    skill = next((c for c in found if c.role == "skill" and c.higher is not None), None)
    directions = {(c.task, c.metric): c.higher for c in found if c.role == "control"}
    controls = [m for m, higher in directions.items() if higher is not None]
    if skill is None or not controls:
        return None
    cells = {(c.label, c.proportion, c.task, c.metric): c for c in found}
    baselines = {c.matched_label for c in found if c.matched_label}
    figure = _figure(len(controls), width=4.4, height=3.6)
    axes = figure.subplots(1, len(controls), squeeze=False)[0]
    for axis, (task, metric) in zip(axes, controls, strict=True):
        higher = bool(directions[(task, metric)])
        for label in dict.fromkeys(c.label for c in found):
            if label in baselines:
                cloud = seed_points.get((label, task, metric), [])
                axis.scatter(
                    [p[0] for p in cloud],
                    [p[1] for p in cloud],
                    s=14,
                    marker=style[label].marker,
                    facecolors="none",
                    edgecolors=style[label].color,
                    alpha=0.7,
                    label=f"{label} (each seed and K)",
                )
                continue
            pairs = [
                (cells[key].unedited.removal(higher), c.unedited.removal(bool(skill.higher)))
                for c in found
                if (c.label, c.task, c.metric) == (label, skill.task, skill.metric)
                and (key := (label, c.proportion, task, metric)) in cells
            ]
            if pairs:
                harm, removal = zip(*pairs, strict=True)
                axis.errorbar(
                    [e.mean for e in harm],
                    [e.mean for e in removal],
                    xerr=_errors(harm),
                    yerr=_errors(removal),
                    capsize=2,
                    label=label,
                    **style[label].kwargs(),
                )
        axis.axhline(0, color=UNEDITED, linewidth=0.8)
        axis.axvline(0, color=UNEDITED, linewidth=0.8)
        axis.set_xlabel(
            f"harm: {task_label(task)} {metric_label(metric, None)} {_direction_word(higher)}"
        )
        axis.set_ylabel(
            f"skill removed: {task_label(skill.task)}\n{metric_label(skill.metric, None)} "
            f"{_direction_word(skill.higher)}"
        )
        axis.set_title(
            f"control: {task_label(task)} (ideal: top left, on the vertical line)",
            fontsize="small",
        )
        _plain(axis)
        _plain(axis, "x")
        axis.grid(True, alpha=0.3)
    return _save(figure, path, title, axes)


def _overlap_lines(
    axis: Any, entries: Sequence[Overlap], x: Any, style: Mapping[str, Style]
) -> None:
    """Per label: mean overlap with its range over pairs against ``x(overlap)``, and the random
    expectation dotted in the same colour."""
    for label in dict.fromkeys(o.label for o in entries):
        points = sorted((o for o in entries if o.label == label), key=x)
        xs = [x(o) for o in points]
        kwargs = style[label].kwargs()
        axis.errorbar(
            xs,
            [o.mean for o in points],
            yerr=[[o.mean - o.low for o in points], [o.high - o.mean for o in points]],
            capsize=2.5,
            label=label,
            **kwargs,
        )
        axis.plot(
            xs,
            [o.expected for o in points],
            color=kwargs["color"],
            linestyle=":",
            linewidth=1.2,
            marker="x",
            markersize=4,
        )
    axis.set_ylim(-0.03, 1.03)
    axis.grid(True, alpha=0.3)


def consistency_figure(
    across_seeds: Sequence[Overlap],
    across_samples: Sequence[Overlap],
    style: Mapping[str, Style],
    seeded: Collection[str],
    title: str,
    path: Path,
) -> list[Path]:
    """Jaccard overlap of selections (mean, range over pairs), with the overlap two random
    selections of the same per-matrix sizes would have (dotted, x). With several sample counts:
    against the sample count, one panel per proportion, across seeds and against the largest
    count at the same seed; with one: across seeds against the fraction edited. Labels in
    `seeded` (random baselines, whose positions follow the seed) are marked where their overlap
    across sample counts is above chance: it comes from the shared seed."""
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    counts = sorted(
        {o.num_samples for o in across_seeds}
        | {o.num_samples for o in across_samples}
        | {o.versus for o in across_samples if o.versus}
    )
    proportions = sorted({o.proportion for o in [*across_seeds, *across_samples]})
    if len(counts) == 1:
        figure = _figure(1, width=6.4, height=3.4)
        axis = figure.subplots()
        _overlap_lines(axis, across_seeds, lambda o: o.proportion, style)
        _log_fraction_axis(axis, proportions, "proportion K")
        axis.set_ylabel("Jaccard overlap across seeds")
        axis.set_title(f"{counts[0]} calibration samples per corpus", fontsize="medium")
        axes = [axis]
    else:
        panels = [("across seeds", p, across_seeds) for p in proportions]
        if across_samples:
            versus = max(counts)
            panels += [(f"vs {versus} samples, same seed", p, across_samples) for p in proportions]
        columns = min(4, len(proportions))
        rows = -(-len(panels) // columns)
        figure = _figure(columns, rows=rows, width=3.2, height=2.8)
        grid = figure.subplots(rows, columns, squeeze=False, sharey=True)
        axes = [a for line in grid for a in line]
        for axis in axes[len(panels) :]:
            axis.set_visible(False)
        for axis, (kind, proportion, entries) in zip(axes, panels, strict=False):
            chosen = [o for o in entries if o.proportion == proportion]
            _overlap_lines(axis, chosen, lambda o: o.num_samples, style)
            flagged = [
                o
                for o in chosen
                if o.versus and o.label in seeded and o.mean > 1.1 * o.expected + 1e-3
            ]
            if flagged:
                top = max(flagged, key=lambda o: o.mean)
                axis.annotate(
                    "random baseline: shared seed,\nnot consistency",
                    xy=(top.num_samples, top.mean),
                    xytext=(12, -26),
                    textcoords="offset points",
                    fontsize="x-small",
                    color=style[top.label].color,
                    arrowprops={"arrowstyle": "->", "color": style[top.label].color},
                )
            axis.set_xscale("log")
            axis.xaxis.set_major_locator(FixedLocator(counts))
            axis.xaxis.set_minor_locator(NullLocator())
            axis.xaxis.set_major_formatter(ScalarFormatter())
            axis.set_xlim(min(counts) / 1.6, max(counts) * 1.6)
            axis.set_xlabel("calibration samples per corpus")
            axis.set_title(f"K = {proportion:g}, {kind}", fontsize="small")
        for line in grid:
            line[0].set_ylabel("Jaccard overlap")
    axes[0].plot(
        [],
        [],
        color="#444444",
        linestyle=":",
        marker="x",
        markersize=4,
        label="random selections of the same sizes (expected)",
    )
    return _save(figure, path, title, axes)


def placement_figure(
    placements: Mapping[str, tuple[dict[int, float], dict[str, float]]],
    style: Mapping[str, Style],
    title: str,
    path: Path,
) -> list[Path]:
    """Selected share over scored share per decoder block (lines) and per module kind (grouped
    bars); 1.0 = uniform."""
    figure = _figure(2, width=4.6, height=3.2)
    blocks, kinds = figure.subplots(1, 2)
    dodge = 0.25 / max(1, len(placements))
    for i, (label, (layers, _)) in enumerate(placements.items()):
        keys = sorted(layers)  # each method a little aside, so that equal lines stay visible
        offset = (i - (len(placements) - 1) / 2) * dodge
        blocks.plot(
            [k + offset for k in keys],
            [layers[k] for k in keys],
            label=label,
            **style[label].kwargs(),
        )
    width = 0.8 / max(1, len(placements))
    names = sorted({k for _, by_kind in placements.values() for k in by_kind})
    for i, (label, (_, by_kind)) in enumerate(placements.items()):
        offset = (i - (len(placements) - 1) / 2) * width
        kinds.bar(
            [j + offset for j in range(len(names))],
            [by_kind.get(k, 0.0) for k in names],
            width,
            color=style[label].color,
            edgecolor="black",
            linewidth=0.4,
            hatch="//" if style[label].open else None,
        )
    kinds.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize="small")
    for axis, name in ((blocks, "decoder block"), (kinds, "module kind")):
        axis.axhline(1.0, color=UNEDITED, linestyle=(0, (4, 3)), linewidth=1)
        axis.set_ylabel("selected share / scored share")
        axis.set_title(f"by {name} (1 = uniform)", fontsize="medium")
        axis.grid(True, axis="y", alpha=0.3)
        _plain(axis)
    blocks.set_xlabel("decoder block")
    if placements:
        layer_keys = sorted({k for layers, _ in placements.values() for k in layers})
        blocks.set_xticks(layer_keys)
    return _save(figure, path, title, [blocks])


def matrix_figure(
    values: Sequence[Sequence[float | None]],
    skills: Sequence[str],
    title: str,
    path: Path,
    *,
    unit: str = "",
) -> list[Path]:
    """A skill x skill heat map: row i is the skill whose set was removed, column j the skill
    measured, each cell annotated with its value (blank where None); a diverging colour-blind-safe
    map (ColorBrewer RdBu) centred on zero, symmetric in its limits."""
    import numpy as np

    data = np.array([[np.nan if v is None else float(v) for v in row] for row in values])
    size = max(2.6, 0.55 * len(skills) + 1.6)
    figure = _figure(1, width=size + 0.8, height=size)
    axis = figure.add_subplot()
    finite = data[np.isfinite(data)]
    limit = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1.0
    image = axis.imshow(data, cmap="RdBu_r", vmin=-limit, vmax=limit)
    axis.set_xticks(range(len(skills)), [task_label(s) for s in skills], rotation=45, ha="right")
    axis.set_yticks(range(len(skills)), [task_label(s) for s in skills])
    axis.set_xlabel("skill measured")
    axis.set_ylabel("skill whose set was removed")
    axis.set_title(title, fontsize="medium")
    places = 2 if limit >= 0.1 else 3
    for i, row in enumerate(data):
        for j, value in enumerate(row):
            if np.isfinite(value):
                dark = abs(value) > 0.6 * limit  # white text on the darkest cells
                axis.text(
                    j,
                    i,
                    f"{value:+.{places}f}",
                    ha="center",
                    va="center",
                    fontsize="x-small",
                    color="white" if dark else "black",
                )
    bar = figure.colorbar(image, ax=axis, shrink=0.8)
    bar.set_label(unit or "change beyond matched random")
    return _save(figure, path)
