"""The plan of a suite: its configurations, their identities and hashes, shards, the manifest.

A configuration is one cell of the grid: (model, corpora, num_samples, seed, method, proportion,
factor); it is evaluated on every task of the suite that applies to it. The plan is the whole
grid in a fixed order (models outermost, factors innermost); a shard is a contiguous slice of
it, so shards are balanced to one configuration and each keeps most statistics passes to
itself. Planning is pure: it reads no file and imports no torch, so a plan can be inspected,
sharded and hashed without a model (`locator.bench.runner` runs it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

from locator.bench.suite import CorporaSpec, MethodSpec, Suite, TaskSpec
from locator.errors import LocatorError
from locator.models import ModelOptions


def stable_hash(value: Any, length: int = 16) -> str:
    """A short hex digest of a JSON-ready value, independent of dict order and process."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def part_name(config_hash: str, task: Any) -> str:
    """The name of one configuration's rows for one task (`task`: the task's identity), so that a
    task added to a suite later adds part files and rewrites none."""
    return f"{config_hash}-{stable_hash(task, length=8)}"


@dataclass(frozen=True, kw_only=True)
class Configuration:
    """One cell of the grid. `key` (the configuration hash) and each task's identity name its
    part files (`parts`: task name -> part name); `selection_key` names its localization,
    shared by every factor. `tasks` are the suite's tasks evaluated in this cell."""

    model: ModelOptions
    corpora: CorporaSpec
    num_samples: int
    seed: int
    method: MethodSpec
    proportion: float
    factor: float
    method_config: str
    key: str
    selection_key: str
    tasks: tuple[TaskSpec, ...]

    @property
    def parts(self) -> dict[str, str]:
        """Task name -> the name of the part file holding this cell's rows for it."""
        return {task.name: part_name(self.key, task.identity()) for task in self.tasks}

    @property
    def group(self) -> tuple[ModelOptions, int, int]:
        """What one statistics pass per corpus serves: (model, num_samples, seed)."""
        return (self.model, self.num_samples, self.seed)

    @property
    def selection(self) -> str:
        """Where its localization is saved in a results folder (the rows' ``selection``)."""
        return f"_selections/{self.selection_key}.safetensors"

    def finished(self, parts: set[str]) -> bool:
        """Whether every part file of this cell is among the finished `parts`."""
        return set(self.parts.values()) <= parts


def method_identity(suite: Suite, method: MethodSpec) -> dict[str, Any]:
    """The method's registered name and full config (defaults filled in), and what it matches."""
    # A parsed suite carries every method's config; only a method built without one needs its
    # class (a plugin import) for the defaults.
    config = method.config if method.config is not None else method.localizer().config
    identity: dict[str, Any] = {"name": method.name, "config": dataclasses.asdict(config)}
    if method.match is not None:
        identity["match"] = method_identity(suite, suite.method(method.match))
    return identity


def check_cells(suite: Suite) -> None:
    """Refuse a task whose `proportions` or `factors` match no cell of the grid: it would never
    be evaluated, and a run would finish with none of its rows."""
    for task in suite.tasks:
        if any(task.applies(p, f) for p in suite.proportions for f in suite.factors):
            continue
        restricted = {
            name: list(values)
            for name, values in (("proportions", task.proportions), ("factors", task.factors))
            if values is not None
        }
        grid = f"proportions {list(suite.proportions)}, factors {list(suite.factors)}"
        raise LocatorError(
            f"{suite.path}: tasks {task.name!r}: "
            + " and ".join(f"{name} = {values}" for name, values in restricted.items())
            + f" match no cell of the grid ({grid}); list values the grid has, or drop them to "
            "evaluate the task in every cell."
        )


def check_methods(suite: Suite) -> None:
    """Refuse two method entries that compute the same configuration under different labels:
    configurations are named by what they compute, not by label, so one label's rows would be
    dropped (and a baseline matched to it orphaned)."""
    seen: dict[str, str] = {}
    for method in suite.methods:
        corpora = [dataclasses.asdict(suite.corpora_of(method, e)) for e in suite.corpora]
        same = stable_hash([method_identity(suite, method), corpora])
        if same in seen:
            raise LocatorError(
                f"{suite.path}: methods {seen[same]!r} and {method.label!r} compute the same "
                "configuration (same method, options and corpora), so their rows could not be "
                "told apart; remove one of them (or make their options differ)."
            )
        seen[same] = method.label


def calibration(suite: Suite) -> dict[str, Any]:
    """The suite-wide options that change every selection but are no column of the results:
    `CalibrationOptions.identity` with the keys it leaves out when unset, as manifests record
    them."""
    return {"chat_template": False, "pack": None, **suite.calibration.identity()}


def plan(suite: Suite) -> list[Configuration]:
    """Every configuration of the suite's grid, in a fixed order (models outermost, factors
    innermost), with its stable hashes; a task that applies to no cell is refused
    (`check_cells`)."""
    check_cells(suite)
    check_methods(suite)
    identities = {m.label: method_identity(suite, m) for m in suite.methods}
    configurations = []
    for model, num_samples, seed in product(suite.models, suite.num_samples, suite.seeds):
        planned = set()  # (corpora, label): entries a method's own controls make equal
        for entry in suite.corpora:
            for method in suite.methods:
                corpora = suite.corpora_of(method, entry)
                if (corpora, method.label) in planned:
                    continue
                planned.add((corpora, method.label))
                config = dict(identities[method.label]["config"])
                if method.match is not None:  # as the localization records it
                    config["matched_to"] = method.match
                for proportion in suite.proportions:
                    selection = {
                        "model": model.identity(),
                        "method": identities[method.label],
                        "target": corpora.target,
                        "controls": list(corpora.controls),
                        "num_samples": num_samples,
                        "seed": seed,
                        "proportion": proportion,
                        **suite.calibration.identity(),
                    }
                    configurations += [
                        Configuration(
                            model=model,
                            corpora=corpora,
                            num_samples=num_samples,
                            seed=seed,
                            method=method,
                            proportion=proportion,
                            factor=factor,
                            method_config=json.dumps(config, sort_keys=True),
                            key=stable_hash({**selection, "factor": factor}),
                            selection_key=stable_hash(selection),
                            tasks=tuple(t for t in suite.tasks if t.applies(proportion, factor)),
                        )
                        for factor in suite.factors
                    ]
    return configurations


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (1 <= i <= n) -> ``(i, n)``."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise LocatorError(f"--shard must look like i/n (for example 2/8), got {text!r}.") from None
    if not 1 <= index <= count:
        raise LocatorError(f"--shard {text}: need 1 <= i <= n.")
    return index, count


def shard(configurations: Sequence[Configuration], index: int, count: int) -> list[Configuration]:
    """Shard `index` of `count` (1-based): a contiguous slice of the plan, balanced to one
    configuration, so that the shards together are the plan with nothing twice."""
    total = len(configurations)
    return list(configurations[(index - 1) * total // count : index * total // count])


def manifest(suite: Suite, configurations: Sequence[Configuration], source: str) -> dict[str, Any]:
    """What a results folder records about the grid it holds (``_suite.json``, where
    `locator.bench.results.check_manifest` adds the schema and keeps the labels and tasks of
    earlier suites): `source` is the suite file's text; ``labels`` is what each label names
    (the method's identity, with the matched reference's, and the calibration options), so that
    a label never names two configurations in one folder; ``own_controls`` the controls a
    method gives itself, so that two labels computing the same configuration are found."""
    calibrated = calibration(suite)
    own = {m.label: suite.own_controls(m) for m in suite.methods}
    return {
        "suite": suite.name,
        "grid": stable_hash([c.key for c in configurations]),
        "configurations": len(configurations),
        "tasks": [t.identity() for t in suite.tasks],
        "labels": {
            m.label: {**method_identity(suite, m), "calibration": calibrated} for m in suite.methods
        },
        "own_controls": {label: None if c is None else list(c) for label, c in own.items()},
        "source": source,
    }


def rankings(suite: Suite, configurations: Sequence[Configuration]) -> dict[str, list[float]]:
    """Label -> the proportions its ranking is cut at, for the methods the configurations use
    and the methods their matched baselines copy; references first, since a matched baseline's
    cut copies its reference's counts."""
    wanted: dict[str, set[float]] = {}
    for configuration in configurations:
        for label in (configuration.method.label, configuration.method.match):
            if label is not None:
                wanted.setdefault(label, set()).add(configuration.proportion)
    ordered = sorted(wanted, key=lambda label: suite.method(label).match is not None)
    return {label: sorted(wanted[label]) for label in ordered}
