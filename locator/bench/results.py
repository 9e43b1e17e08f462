"""The results dataset: one row type and its schema, atomic per-configuration files, reading back.

A results folder is one Parquet dataset: one ``part-<configuration hash>-<task hash>.parquet``
file per configuration and task (see `locator.bench.plan.part_name`), in long format (one `Row`
per metric; `SCHEMA` is derived from its fields).
Everything else the runner keeps lives under names starting with ``_`` (``_suite.json``,
``_identity/``, ``_claims/``, ``_baselines/``, ``_samples/``, ``_selections/``, ``_statistics/``,
``_report/``), which Parquet readers skip, so ``pandas.read_parquet(DIR)``,
``pyarrow.dataset.dataset(DIR)``, polars and DuckDB (``DIR/*.parquet``) read the folder as is.

Every file is written with `locator.io.atomic_write` (a hidden temporary name in the same folder,
fsync, `os.replace`), so a reader, or a run resumed after SIGKILL, sees a file whole or not at
all.
The columns use types every reader handles: strings, int64, float64 and UTC timestamps in
microseconds; ``controls`` is the comma-joined control dataset names.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from locator.bench import claims
from locator.bench.plan import stable_hash
from locator.errors import LocatorError
from locator.io import atomic_write
from locator.options import option

SCHEMA_VERSION = "locator.bench/2"


@dataclass(frozen=True, kw_only=True)
class Row:
    """One row of a results folder: one metric of one task in one configuration, the baseline
    beside it, the selection's size, the timings and the versions. `SCHEMA` is derived from
    these fields, and the documentation's column table from their help."""

    suite: str = option(help="the suite's name")
    model: str = option(help="the model's path, short name or hub id as written in the suite")
    dtype: str = option(help="the model's dtype")
    model_revision: str | None = option(help="the hub commit (null for a folder)")
    model_fingerprint: str | None = option(
        help="a hash of the weights (`locator.provenance.weights_fingerprint`)"
    )
    method: str = option(help="the registered method's name")
    label: str = option(help="the suite's label for this method entry")
    method_config: str = option(
        help="the method's full config as JSON, defaults filled in; for a matched baseline "
        "`matched_to`, the label of the method entry it copied its counts from (the same value "
        "its saved selection records)"
    )
    target: str = option(help="the target dataset")
    controls: str = option(help='the control datasets, comma-joined (`""` for none)')
    proportion: float = option(help="K, the proportion the selection was cut at")
    factor: float = option(help="the intervention factor (0 prunes)")
    seed: int = option(help="the repeat's seed")
    num_samples: int = option(help="calibration texts per corpus")
    task: str = option(help="the evaluation task")
    limit: int | None = option(help="the task's example limit (null: all)")
    metric: str = option(help="the metric's name")
    value: float | None = option(help="the metric of the edited model")
    baseline_value: float | None = option(help="the metric of the unedited model")
    higher_is_better: bool | None = option(
        help="the metric's direction, from lm-eval's task definition (null: unknown, e.g. a "
        "`_stderr`)"
    )
    selected_count: int = option(help="entries edited")
    selected_fraction: float = option(
        help="`selected_count / scored_count`, the real budget (methods differ at one K)"
    )
    scored_count: int = option(help="entries scored (all decoder linears)")
    selection: str = option(help="the localization file, relative to the results folder")
    statistics_seconds: float = option(
        help="statistics passes of this configuration's corpora (near 0 from the cache)"
    )
    localization_seconds: float = option(
        help="the ranking call that produced the selection (shared by all its proportions)"
    )
    evaluation_seconds: float = option(
        help="this task's evaluation of the edited model (0 when the selection is empty)"
    )
    config_hash: str = option(help="the configuration's stable hash (its part file's name)")
    locator_version: str = option(help="provenance: locator's version")
    torch_version: str | None = option(help="provenance: torch's version")
    transformers_version: str | None = option(help="provenance: transformers' version")
    lm_eval_version: str | None = option(help="provenance: lm-eval's version")
    created_at: datetime = option(help="when the part was written")


@dataclass(frozen=True, kw_only=True)
class Sample:
    """One per-item score (``_samples/*.parquet``): a row's metric ``value`` in the results is
    the mean of these ``value``s weighted by ``weight``, over the items of its (task, metric)."""

    config_hash: str = option(help='the configuration (`"baseline"` for the unedited model)')
    model: str = option(help="as in the results")
    dtype: str = option(help="as in the results")
    task: str = option(
        help="as in the results (for an lm-eval group, the subtask holding the item)"
    )
    metric: str = option(help="as in the results")
    item: int = option(help="the item's index in the task (lm-eval's `doc_id`)")
    value: float = option(help="the item's value of the metric")
    weight: float = option(help="the item's weight in the metric's weighted mean")


_ARROW = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    datetime: pa.timestamp("us", tz="UTC"),
}


def schema_of(row: type) -> pa.Schema:
    """The pyarrow schema of a row dataclass: one column per field, in order, of the field's
    type (`_ARROW`), nullable where the type admits None."""
    hints = typing.get_type_hints(row)
    columns = []
    for field in dataclasses.fields(row):
        kinds = typing.get_args(hints[field.name]) or (hints[field.name],)
        nullable = type(None) in kinds
        (kind,) = (k for k in kinds if k is not type(None))
        columns.append(pa.field(field.name, _ARROW[kind], nullable=nullable))
    return pa.schema(columns, metadata={"locator.schema": SCHEMA_VERSION})


SCHEMA = schema_of(Row)
"""One row per (model, method, config, target, controls, proportion, factor, seed, num_samples,
task, metric)."""

SAMPLES_SCHEMA = schema_of(Sample)
"""The per-item scores' columns (`Sample`)."""

KEY_COLUMNS = (
    "model",
    "dtype",
    "method",
    "method_config",
    "target",
    "controls",
    "proportion",
    "factor",
    "seed",
    "num_samples",
    "task",
    "metric",
)
"""The columns that identify a row: no two rows of a complete dataset share them."""

VARYING_COLUMNS = (
    "statistics_seconds",
    "localization_seconds",
    "evaluation_seconds",
    "locator_version",
    "torch_version",
    "transformers_version",
    "lm_eval_version",
    "created_at",
)
"""Timings and provenance: the columns that may differ between two runs of one suite."""


_ORDER = (
    "model",
    "dtype",
    "target",
    "controls",
    "num_samples",
    "label",
    "method_config",
    "factor",
    "proportion",
    "seed",
    "task",
    "metric",
)


def provenance() -> dict[str, str | None]:
    """Versions of locator, torch, transformers and lm-eval (None when not installed)."""
    from locator.provenance import DISTRIBUTION, version

    return {
        "locator_version": version(DISTRIBUTION),
        "torch_version": version("torch"),
        "transformers_version": version("transformers"),
        "lm_eval_version": version("lm_eval"),
    }


def part_path(directory: str | Path, name: str) -> Path:
    """The part file called `name` (see `part_name`)."""
    return Path(directory) / f"part-{name}.parquet"


def slot(path: Path) -> Path:
    """`path`, where locator writes a file; a folder found there is a one-line error (it is
    not removed: it is not locator's)."""
    if path.is_dir():
        raise LocatorError(
            f"{str(path)!r} is a folder where locator keeps a file; move it away and rerun "
            "(locator recomputes the file)."
        )
    return path


def write_part(directory: str | Path, name: str, rows: Sequence[Row]) -> Path:
    """Write one part's rows atomically."""
    return atomic_write(slot(part_path(directory, name)), _parquet(rows, SCHEMA))


def _parquet(rows: Sequence[Any], schema: pa.Schema) -> bytes:
    """Rows (instances of the dataclass `schema` is derived from) as one Parquet file."""
    table = pa.Table.from_pylist([dataclasses.asdict(row) for row in rows], schema=schema)
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    return buffer.getvalue().to_pybytes()


def finished(directory: str | Path) -> set[str]:
    """Names of the part files in `directory`."""
    folder = Path(directory)
    if not folder.is_dir():
        return set()
    return {
        p.stem.removeprefix("part-") for p in folder.glob("part-*.parquet") if p.is_file()
    }  # a folder in a part's place is no part: its configuration is run (and `slot` refuses)


def read_results(directory: str | Path) -> pa.Table:
    """All rows of a results folder, with `SCHEMA`, in a fixed order (by experiment, method,
    factor, proportion, seed, task and metric)."""
    import pyarrow.dataset as ds

    folder = Path(directory)
    if not folder.is_dir():
        raise LocatorError(f"results folder {str(folder)!r} does not exist.")
    files = sorted(str(p) for p in folder.glob("part-*.parquet") if p.is_file())
    if not files:
        raise LocatorError(
            f"{str(folder)!r} holds no results (no part-*.parquet files); "
            "write some with `locator bench SUITE --out DIR`."
        )
    for file in files:
        _check_part(file)
    try:
        table = ds.dataset(files, schema=SCHEMA, format="parquet").to_table()
    except (pa.ArrowException, OSError) as error:
        raise _corrupt_part(files, error) from None
    return table.sort_by([(column, "ascending") for column in _ORDER])


def samples_path(directory: str | Path, name: str) -> Path:
    """The per-item scores of one configuration (`name` = its hash) or of one baseline
    (``baseline-<baseline hash>``)."""
    return Path(directory) / "_samples" / f"{name}.parquet"


def has_columns(found: pa.Schema, schema: pa.Schema) -> bool:
    """Whether a file's schema `found` has every column of `schema`, of its type."""
    return all(
        found.get_field_index(field.name) >= 0 and found.field(field.name).type == field.type
        for field in schema
    )


def write_samples(directory: str | Path, name: str, rows: Sequence[Sample]) -> Path:
    """Write per-item scores atomically."""
    return atomic_write(slot(samples_path(directory, name)), _parquet(rows, SAMPLES_SCHEMA))


def read_samples(directory: str | Path, name: str) -> pa.Table | None:
    """The per-item scores written by `write_samples`; None when they are missing or the file
    is damaged or of another schema (the caller recomputes them)."""
    path = samples_path(directory, name)
    try:
        if not has_columns(pq.read_schema(path), SAMPLES_SCHEMA):
            return None
        return pq.read_table(path, schema=SAMPLES_SCHEMA)
    except (pa.ArrowException, OSError):
        return None


def write_json(path: Path, value: Any) -> Path:
    """Write JSON atomically."""
    return atomic_write(slot(path), json.dumps(value, indent=2, sort_keys=True))


def write_lines(path: Path, lines: Sequence[str]) -> Path:
    """Write text lines (JSON Lines) atomically."""
    return atomic_write(path, "".join(f"{line}\n" for line in lines))


def read_json(path: Path) -> Any:
    """Read a JSON file written by `write_json`."""
    return json.loads(path.read_text())


def _check_part(file: str) -> None:
    """Refuse a part file that is not one of this schema's (truncated, empty, or another
    table): read from its footer only."""
    advice = (
        "delete it and rerun `locator bench` into the same folder to recompute that configuration."
    )
    try:
        found = pq.read_schema(file)
    except (pa.ArrowException, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LocatorError(f"results part {file!r} is corrupt ({first}); {advice}") from None
    if not has_columns(found, SCHEMA):
        raise LocatorError(
            f"results part {file!r} holds other columns than the results of "
            f"{SCHEMA_VERSION!r} (not written by this locator); {advice}"
        )


def _corrupt_part(files: Sequence[str], error: Exception) -> LocatorError:
    """A one-line error naming the part file that cannot be read."""
    for file in files:
        try:
            pq.read_table(file, schema=SCHEMA)
        except (pa.ArrowException, OSError) as part_error:
            first = str(part_error).strip().splitlines()[0] if str(part_error).strip() else ""
            return LocatorError(
                f"results part {file!r} is corrupt ({first}); delete it and rerun "
                "`locator bench` into the same folder to recompute that configuration."
            )
    return LocatorError(f"cannot read the results: {str(error).strip().splitlines()[0]}")


_IN_PROGRESS = re.compile(r"\.(probe|_suite\.json)\.\d+\.[0-9a-f]+\.tmp")
"""The files a run starting on a fresh folder writes before its ``_suite.json`` is whole: the
writability probe and the manifest's temporary (`locator.io.atomic_write`)."""


def is_results_folder(directory: Path) -> bool:
    """Whether `directory` is a results folder written by `locator bench`: it has a
    ``_suite.json``, or holds only what runs starting on it at the same moment (a job array)
    write before theirs is whole."""
    if (directory / "_suite.json").exists():
        return True
    return all(
        _IN_PROGRESS.fullmatch(entry.name) or entry.name == claims.FOLDER
        for entry in directory.iterdir()
    )


def read_record(path: Path, advice: str) -> dict[str, Any]:
    """The JSON object in `path`, a file locator wrote; a file that is missing, not a file,
    unreadable, not JSON or not an object is a one-line `LocatorError` naming it, with
    `advice` (what to do about it)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problem = "is missing"
    except IsADirectoryError:
        problem = "is a folder, not a file"
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error).splitlines()[0]
        problem = f"is damaged ({reason})"
    else:
        if isinstance(record, dict):
            return record
        problem = f"holds a JSON {type(record).__name__}, not the object locator writes"
    raise LocatorError(f"{str(path)!r} {problem}; {advice}")


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict of dotted keys (``config.mode``)."""
    if not isinstance(value, dict):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, inner in value.items():
        flat.update(_flat(inner, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _changed(then: Any, now: Any) -> str:
    """The first key whose value differs between two records: ``key = then (now: now)``."""
    old, new = _flat(then), _flat(now)
    key = next(k for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k))
    return f"{key} = {json.dumps(old.get(key))} there, {json.dumps(new.get(key))} now"


def _is_task(identity: Any) -> bool:
    """Whether a manifest's entry is a task's identity (`TaskSpec.identity`)."""
    return (
        isinstance(identity, list)
        and len(identity) in (3, 4)
        and isinstance(identity[0], str)
        and (len(identity) == 3 or isinstance(identity[3], dict))
    )


def _task_record(identity: Any) -> dict[str, Any]:
    """A task's identity (`TaskSpec.identity`: name, limit, token cap, options) as a dict."""
    name, limit, max_new_tokens, *options = identity
    return {"limit": limit, "max_new_tokens": max_new_tokens, **(options[0] if options else {})}


def check_manifest(directory: str | Path, manifest: Mapping[str, Any]) -> None:
    """Record the suite a results folder was last run with (`manifest`, from
    `locator.bench.plan.manifest`, with this schema version added), or refuse a folder of
    another schema, or a suite that gives an existing label or task another configuration.

    A folder grows: a changed suite (more proportions, methods, seeds, tasks) run into it
    computes only the configurations whose part file is missing, since each part is named by
    the hash of its configuration. But rows are summarized and compared by label and task, so
    a label (a task) names one configuration for good: a changed config, matched reference or
    calibration option under an existing label, or a changed limit or option of an existing
    task, is refused (as git refuses to clobber) rather than mixed with the rows already there.
    The labels and tasks of every suite run into the folder are kept. What must not change
    under its rows, the model's weights and the corpora's texts, is checked by `check_identity`
    when they are loaded.
    """
    path = Path(directory) / "_suite.json"
    # As read back from JSON (tuples become lists), to compare with what the folder recorded.
    labels: dict[str, Any] = json.loads(json.dumps(manifest.get("labels", {})))
    tasks = {identity[0]: identity for identity in json.loads(json.dumps(manifest["tasks"]))}
    if path.exists():
        advice = (
            "it records which suite the folder's results come from: restore it, or pass a new "
            "--out folder."
        )
        existing = read_record(path, advice)
        if existing.get("schema") != SCHEMA_VERSION:
            raise LocatorError(
                f"{str(path)!r} records results of schema {existing.get('schema')!r}, this "
                f"locator writes {SCHEMA_VERSION!r}; pass a new --out folder."
            )
        before, listed = existing.get("labels", {}), existing.get("tasks", [])
        if not (
            isinstance(before, dict)
            and isinstance(existing.get("own_controls", {}), dict)
            and isinstance(listed, list)
            and all(_is_task(identity) for identity in listed)
        ):
            raise LocatorError(f"{str(path)!r} is not a manifest locator wrote; {advice}")
        for label, identity in before.items():
            if label in labels and labels[label] != identity:
                raise LocatorError(
                    f"{str(directory)!r} holds rows labelled {label!r} computed with "
                    f"{_changed(identity, labels[label])}: a label names one configuration; "
                    + (
                        "this option changes every method's rows: pass a new --out folder."
                        if _changed(identity, labels[label]).startswith("calibration.")
                        else "give the changed method entry a new label, or pass a new --out "
                        "folder."
                    )
                )
        for identity in listed:
            name = identity[0]
            if name in tasks and tasks[name] != identity:
                raise LocatorError(
                    f"{str(directory)!r} holds rows of task {name!r} computed with "
                    f"{_changed(_task_record(identity), _task_record(tasks[name]))}: its rows "
                    "would be mixed; keep the task's settings, or pass a new --out folder."
                )
        controls = {**existing.get("own_controls", {}), **manifest.get("own_controls", {})}
        for label, identity in labels.items():
            twin = next(
                (
                    other
                    for other, known in before.items()
                    if other != label
                    and other not in labels
                    and known == identity
                    and controls.get(other) == controls.get(label)
                ),
                None,
            )
            if twin is not None:
                raise LocatorError(
                    f"{str(directory)!r} holds the rows of label {twin!r}, the same "
                    f"configuration as label {label!r} now: they would be skipped as finished "
                    f"under {twin!r}; keep the label {twin!r} for it, or pass a new --out folder."
                )
        labels = {**before, **labels}
        tasks = {**{i[0]: i for i in listed}, **tasks}
        manifest = {**manifest, "own_controls": controls}
    record = {**manifest, "labels": labels, "tasks": list(tasks.values())}
    write_json(path, {**record, "schema": SCHEMA_VERSION})


def check_identity(
    directory: str | Path, kind: str, key: Mapping[str, Any], value: Mapping[str, Any]
) -> None:
    """Refuse to add results for a model or corpus whose content changed since the folder's
    first results: `key` names it (model path and dtype; dataset, samples, seed), `value` is
    what it holds (weights fingerprint; texts hash). The first call records `value`."""
    path = Path(directory) / "_identity" / f"{kind}-{stable_hash(dict(key))}.json"
    if path.exists():
        recorded = read_record(
            path,
            f"it records the {kind} the folder's results were computed from: restore it, or "
            f"delete it to record the current {kind} (only if it did not change since), or pass "
            "a new --out folder.",
        )
        if recorded.get("value") != dict(value):
            raise LocatorError(
                f"{kind} {dict(key)} changed since the results in {str(directory)!r} were "
                f"computed ({recorded.get('value')} then, {dict(value)} now); its rows would "
                "not be comparable: pass a new --out folder."
            )
        return
    write_json(path, {"key": dict(key), "value": dict(value)})
