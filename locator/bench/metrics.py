"""What a report needs to know about tasks and metrics: readable names, units, direction, and
numbers formatted so that a column shows the differences it is about; and the grouping and CSV
writing every report module shares.

Directions come from the results (the nullable ``higher_is_better`` column, lm-eval's task
definition) and, for folders written before it existed, from `DIRECTIONS`, a small table of
metric names whose direction is unambiguous. Labels come from `TASK_NAMES` and `METRIC_NAMES`,
with a readable fallback (the name with underscores as spaces) for anything else.
"""

from __future__ import annotations

import math
import textwrap
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

DIRECTIONS: dict[str, bool] = {
    "acc": True,
    "acc_norm": True,
    "exact_match": True,
    "em": True,
    "f1": True,
    "mcc": True,
    "bleu": True,
    "rouge": True,
    "grammatical": True,
    "loss": False,
    "nll": False,
    "nll_per_token": False,
    "nll_per_byte": False,
    "perplexity": False,
    "ppl": False,
    "word_perplexity": False,
    "byte_perplexity": False,
    "bits_per_byte": False,
    "ter": False,
}
"""Metric name (before any lm-eval filter suffix) -> higher is better."""

PROPORTIONS = frozenset({"acc", "acc_norm", "exact_match", "em", "f1", "grammatical"})
"""Metrics that are proportions: their values (and intervals of values) lie in [0, 1]."""

TASK_NAMES: dict[str, str] = {
    "gsm8k": "GSM8K",
    "gsm8k_cot": "GSM8K (CoT)",
    "gsm8k_nll": "GSM8K solution",
    "math_nll": "MATH solution",
    "wikitext_nll": "WikiText",
    "race_nll": "RACE",
    "python_nll": "Python",
    "arithmetic_fewshot": "arithmetic (5-shot)",
    "hendrycks_math": "MATH",
    "hendrycks_math500": "MATH-500",
    "mmlu": "MMLU",
    "race": "RACE",
    "wikitext": "WikiText",
    "toy-arithmetic": "toy arithmetic",
    "toy-language": "toy language",
}

METRIC_NAMES: dict[str, tuple[str, str]] = {
    "acc": ("accuracy", ""),
    "acc_norm": ("length-normalized accuracy", ""),
    "exact_match": ("exact match", ""),
    "em": ("exact match", ""),
    "f1": ("F1", ""),
    "loss": ("loss", "nats/token"),
    "nll": ("NLL", "nats/token"),
    "nll_per_token": ("NLL", "nats/token"),
    "nll_per_byte": ("NLL", "nats/byte"),
    "perplexity": ("perplexity", ""),
    "word_perplexity": ("word perplexity", ""),
    "byte_perplexity": ("byte perplexity", ""),
    "bits_per_byte": ("bits per byte", "bits/byte"),
    "grammatical": ("grammatical next-word rate", ""),
}
"""Metric name -> (readable name, unit)."""


def _base(metric: str) -> tuple[str, str]:
    """lm-eval writes ``exact_match,strict-match``: the metric and its filter."""
    name, _, filtering = metric.partition(",")
    return name, filtering if filtering not in ("", "none") else ""


def higher_is_better(metric: str, declared: bool | None = None) -> bool | None:
    """The metric's direction: `declared` (from the results) when known, else `DIRECTIONS`."""
    if declared is not None:
        return bool(declared)
    return DIRECTIONS.get(_base(metric)[0])


def clip(metric: str, value: float) -> float:
    """`value` clipped to the metric's range when it is a proportion (`PROPORTIONS`); NaN (an
    interval bound that cannot be computed) stays NaN, so that no interval is made up."""
    if math.isnan(value) or _base(metric)[0] not in PROPORTIONS:
        return value
    return min(1.0, max(0.0, value))


def task_label(task: str) -> str:
    """``gsm8k_cot`` -> ``GSM8K (CoT)``; unknown names with underscores as spaces."""
    return TASK_NAMES.get(task, task.replace("_", " "))


def metric_label(metric: str, higher: bool | None, *, wrap: bool = False) -> str:
    """``loss`` -> ``loss (nats/token, lower is better)``; `wrap` breaks a long label into
    lines of at most 24 characters (for axis labels, which must fit a panel's height)."""
    name, filtering = _base(metric)
    readable, unit = METRIC_NAMES.get(name, (name.replace("_", " "), ""))
    if filtering:
        readable += f" [{filtering}]"
    notes = [unit] if unit else []
    if higher is not None:
        notes.append("higher is better" if higher else "lower is better")
    if not notes:
        return readable
    label = f"{readable} ({', '.join(notes)})"
    if not wrap or len(label) <= 28:
        return label
    # An axis label runs along the axis: lines of at most 24 characters fit a panel's height.
    return "\n".join(textwrap.wrap(readable, 24) + textwrap.wrap(f"({', '.join(notes)})", 24))


def measure_label(task: str, metric: str, higher: bool | None) -> str:
    """Task and metric in one label: ``GSM8K (CoT) exact match (higher is better)``."""
    return f"{task_label(task)} {metric_label(metric, higher)}"


def model_label(model: str) -> str:
    """A model's short name: the last component of a path or hub id (``Llama-3.2-1B-Instruct``);
    a checkpoint folder is named by its parent (``toy/checkpoint`` -> ``toy``)."""
    parts = [p for p in model.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    if not parts:
        return model
    if len(parts) > 1 and parts[-1] in ("checkpoint", "model", "weights"):
        return parts[-2]
    return parts[-1]


def decimals(values: Iterable[float | None], most: int = 6) -> int:
    """Decimals that tell apart every two different values of a column (one significant digit
    of the smallest gap) and show its spread with at least two significant digits, at most
    `most`; for a constant column, three significant digits of its magnitude."""
    finite = sorted({v for v in values if v is not None and math.isfinite(v)})
    if not finite:
        return 2

    def places(scale: float, significant: int) -> int:
        return significant - 1 - math.floor(math.log10(scale))

    if len(finite) == 1:
        magnitude = abs(finite[0])
        return max(0, min(most, places(magnitude, 3))) if magnitude else 2
    gap = min(b - a for a, b in zip(finite, finite[1:], strict=False))
    needed = max(places(gap, 1), places(finite[-1] - finite[0], 2))
    return max(0, min(most, needed))


def fixed(value: float | None, places: int, *, sign: bool = False) -> str:
    """`value` with `places` decimals (never e-notation, no ``-0.00``); ``n/a`` when missing."""
    if value is None or not math.isfinite(value):
        return "n/a"
    text = f"{value:.{places}f}"
    if float(text) == 0:
        return f"{0.0:.{places}f}"
    return "+" + text if sign and value > 0 else text


def column(values: Sequence[float | None], *, sign: bool = False) -> list[str]:
    """Format a column with one number of decimals chosen from its values (`decimals`)."""
    places = decimals(values)
    return [fixed(v, places, sign=sign) for v in values]


def groups(items: Iterable[Any], key: Callable[[Any], Any]) -> dict[Any, list[Any]]:
    """Items grouped by `key`, groups in first-seen order."""
    grouped: dict[Any, list[Any]] = defaultdict(list)
    for item in items:
        grouped[key(item)].append(item)
    return dict(grouped)


def write_csv(path: Path, records: Sequence[Mapping[str, Any]]) -> Path:
    """Write `records` as CSV, the first record's keys as the header (an empty file for none)."""
    import csv
    import io

    from locator.io import atomic_write

    buffer = io.StringIO()
    if records:
        writer = csv.DictWriter(buffer, fieldnames=list(records[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
    return atomic_write(path, buffer.getvalue())
