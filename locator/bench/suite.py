"""Benchmark suites: a TOML file turned into frozen dataclasses, checked before any model loads.

A suite names the grid: models, corpora (a target and its controls), methods with their
configs, proportions, intervention factors, seeds, sample counts and evaluation tasks. Every
key, method, option, dataset and task is checked here, so a typo costs one line naming the
file, the key and the valid choices instead of a failure hours into a run. Paths in a suite
(`data_dir`, a model folder) are relative to the suite file. See ``benchmarks/README.md``.

Example::

    name = "smoke"
    proportions = [0.01, 0.05]
    factors = [0.0, 1.1]          # 0 prunes, 1.1 scales
    seeds = [0, 1]
    num_samples = [64]

    [[models]]
    path = "../locator/toy/checkpoint"

    [[corpora]]
    target = "toy-arithmetic"
    controls = ["toy-language"]

    [[methods]]
    name = "mathneuro"

    [[methods]]
    name = "random"
    match = "mathneuro"           # the paper's matched baseline

    [[tasks]]
    name = "toy-arithmetic"
    limit = 200

Every method that is not itself a baseline (no `match`, and its method does not take a
reference) gets a matched baseline by default: an entry of the installed method that takes a
reference (``random``) with ``match = <label>``, unless the suite has one already.
``matched_baseline = false`` turns this off, ``matched_baseline = "<method>"`` picks the method.

**A matrix suite** declares ``matrix = true`` and two or more ``[[skills]]`` (``name``,
``corpus``, ``task`` (default: `locator.corpora.evaluation_task` of the corpus, ``nll:<corpus>``
for a dataset or a file), ``metric`` (default ``nll_per_byte`` for an ``nll:`` task),
``controls`` (default: the other skills' corpora) and the task's evaluation options such as
``limit``) instead of ``[[corpora]]``: the parser expands them into the grid, one corpora
entry per skill as target, and every skill's task is evaluated in every cell
(`locator.bench.matrix` reads the results). A corpus anywhere in a suite is a dataset name, a
JSON Lines file of texts (relative to the current directory, as on the command line) or
``task:<evaluation task>`` (`locator.corpora`).

**A ground-truth suite** declares a ``[ground_truth]`` table (the levels and seeds of the planted
sets S and the planting's training steps) besides its methods, seeds and sample counts:
`locator.bench.ground_truth` fills in what it fixes (model, corpora, tasks, proportions, factor)
before the suite is checked like any other, and runs it.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from locator.data import CalibrationOptions
from locator.errors import LocatorError
from locator.evaluation import EvaluationOptions, EvaluationRequest, check_evaluation
from locator.io import read_text
from locator.models import ModelOptions
from locator.options import OptionError, Options, UnknownOptionError, convert, option, parse

if TYPE_CHECKING:
    from locator.bench.ground_truth import GroundTruthSpec

T = TypeVar("T")

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@dataclass(frozen=True, kw_only=True)
class CorporaSpec(Options):
    """One target corpus and the control corpora whose top entries are removed: a suite's
    ``[[corpora]]`` table, a skill's corpus and controls, a method's own controls."""

    target: str = option(help="the dataset that shows the skill")
    controls: tuple[str, ...] = option((), help="the datasets whose top entries are removed")

    def __post_init__(self) -> None:
        super().__post_init__()
        _refuse_repeats(self.controls)

    @property
    def names(self) -> tuple[str, ...]:
        """The target, then the controls."""
        return (self.target, *self.controls)


def _refuse_repeats(controls: tuple[str, ...] | None) -> None:
    """Refuse controls that name a corpus twice."""
    if controls is not None and len(set(controls)) != len(controls):
        raise OptionError("controls", f"has duplicates: {list(controls)}.")


@dataclass(frozen=True, kw_only=True)
class SkillSpec:
    """One skill of a matrix suite (a ``[[skills]]`` table, besides the options of its task):
    its `name`, the `corpus` its sets are localized on, the `task` and `metric` that measure it,
    and the `controls` its sets are localized against. The suite fills in the defaults."""

    name: str = option(help="the skill's name")
    corpus: str = option(help="its calibration corpus")
    task: str = option("", help="its evaluation task (default: the corpus's)")
    metric: str = option("", help="the task's metric (default for an nll: task: nll_per_byte)")
    controls: tuple[str, ...] = option((), help="its controls (default: the other skills' corpora)")


@dataclass(frozen=True, kw_only=True)
class MethodSpec(Options):
    """One method entry: registered `name`, unique `label`, `config` (its config dataclass,
    parsed from the table's options by `make_config`; None: the defaults), and `match`, the label
    of the method whose per-matrix counts a matched baseline copies. `controls`, when given,
    replaces the corpora entry's controls for this method (the paper's MathNeuro with an MMLU
    control beside the RACE one, without running every other method twice)."""

    name: str = option(help="a method (see `locator localizers`)")
    label: str = option(
        help="unique (a suite table without one gets the name, or <name>-matched-<match>)"
    )
    config: Any = option(None, help="its config (a suite's `options`; None: the defaults)")
    match: str | None = option(
        None, help="a matched baseline: the label of the method whose per-matrix counts it copies"
    )
    controls: tuple[str, ...] | None = option(
        None, help="this method's controls instead of the corpora entry's"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _refuse_repeats(self.controls)

    def localizer(self) -> Any:
        """The configured `Localizer`."""
        from locator.localizer import localizer_class

        return localizer_class(self.name)(self.config)


@dataclass(frozen=True, kw_only=True)
class TaskSpec(EvaluationOptions):
    """An evaluation task of a suite: its name, its `EvaluationOptions`, and the proportions
    and factors of the cells that evaluate it (None: all)."""

    name: str = option(help="an evaluation task")
    proportions: tuple[float, ...] | None = option(
        None,
        help="evaluate the task only in cells of these proportions (None: all; the "
        "unedited model evaluates every task)",
    )
    factors: tuple[float, ...] | None = option(
        None, help="evaluate the task only in cells of these factors (None: all)"
    )

    def applies(self, proportion: float, factor: float) -> bool:
        """Whether this task is evaluated in a configuration of this proportion and factor
        (`proportions` and `factors` restrict an expensive task to some cells; the unedited
        baseline always evaluates every task)."""
        return (self.proportions is None or proportion in self.proportions) and (
            self.factors is None or factor in self.factors
        )

    def identity(self) -> list[Any]:
        """What the task contributes to a configuration's hash: name, limit, token cap and
        any prompt option set (a suite without them keeps the hashes it had)."""
        options = self.prompt_options()
        return [self.name, self.limit, self.max_new_tokens, *([options] if options else [])]

    def request(self, **run: Any) -> EvaluationRequest:
        """The checked `EvaluationRequest` of this task alone; `run` says how to run it
        (`batch_size`, `data_dir`, `log_samples`)."""
        options = {f.name: getattr(self, f.name) for f in dataclasses.fields(EvaluationOptions)}
        return check_evaluation([self.name], **options, **run)


@dataclass(frozen=True, kw_only=True)
class Suite:
    """A parsed, checked benchmark suite; `path` is the file it came from."""

    name: str
    path: Path
    models: tuple[ModelOptions, ...]
    corpora: tuple[CorporaSpec, ...]
    methods: tuple[MethodSpec, ...]
    tasks: tuple[TaskSpec, ...]
    proportions: tuple[float, ...]
    factors: tuple[float, ...]
    seeds: tuple[int, ...]
    num_samples: tuple[int, ...]
    calibration: CalibrationOptions = CalibrationOptions()
    """How corpora are drawn and read (its `num_samples` is each cell's, from the grid)."""
    data_dir: str | None = None
    eval_batch_size: int | Literal["auto"] = 16
    skills: tuple[SkillSpec, ...] = ()
    """The skills of a matrix suite (its `corpora` and `tasks` include theirs), else empty."""
    ground_truth: GroundTruthSpec | None = None
    """The ``[ground_truth]`` table of a ground-truth suite (`locator.bench.ground_truth`)."""

    @property
    def base(self) -> Path:
        """The folder the suite's relative paths start from."""
        return self.path.resolve().parent

    def data_path(self) -> str | None:
        """The data directory resolved against the suite file, or None."""
        return None if self.data_dir is None else str((self.base / self.data_dir).resolve())

    def located(self, model: ModelOptions) -> ModelOptions:
        """`model` as it loads: its path resolved against the suite file if that exists,
        else as written (a short name or hub id)."""
        local = self.base / model.path
        return dataclasses.replace(model, path=str(local.resolve())) if local.exists() else model

    def method(self, label: str) -> MethodSpec:
        """The method entry with this label."""
        return next(m for m in self.methods if m.label == label)

    def own_controls(self, method: MethodSpec) -> tuple[str, ...] | None:
        """The controls `method` (or the method it is matched to) gives itself, or None."""
        if method.controls is None and method.match is not None:
            return self.method(method.match).controls
        return method.controls

    def corpora_of(self, method: MethodSpec, corpora: CorporaSpec) -> CorporaSpec:
        """The corpora `method` runs on in the `corpora` entry: the entry's target, with the
        method's `own_controls` when it has them."""
        controls = self.own_controls(method)
        return (
            corpora if controls is None else CorporaSpec(target=corpora.target, controls=controls)
        )


_GRID = {
    "proportions": "list of K in (0, 1]",
    "factors": "list of intervention factors (0 prunes, 1.1 scales)",
    "seeds": "list of seeds (repeats)",
    "num_samples": "list of calibration sample counts per corpus",
}
_CALIBRATION = [f.name for f in dataclasses.fields(CalibrationOptions) if f.name != "num_samples"]
_TOP = [
    "name", "description", "data_dir", "eval_batch_size", *_GRID, *_CALIBRATION,
    "models", "corpora", "methods", "tasks", "matrix", "skills", "matched_baseline",
    "ground_truth",
]  # fmt: skip
_METHOD_KEYS = ("name", "label", "options", "match", "controls")
_TASK_OPTIONS = [f.name for f in dataclasses.fields(TaskSpec) if f.name != "name"]
_SKILL_FIELDS = [f.name for f in dataclasses.fields(SkillSpec)]
DEFAULT_NLL_METRIC = "nll_per_byte"
"""The metric of a skill measured by an ``nll:<corpus>`` task unless the suite names one (per
byte, so that languages and tokenizers compare)."""


class _Checker:
    """Reads values out of the parsed TOML, raising one-line errors that name file and key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, message: str) -> LocatorError:
        return LocatorError(f"{self.path}: {key}: {message}")

    def unknown(self, key: str, kind: str, name: str, choices: Any) -> LocatorError:
        return self.fail(key, UnknownOptionError(key, kind, name, choices).problem)

    def keys(self, where: str, table: Mapping[str, Any], valid: Any) -> None:
        for key in table:
            if key not in valid:
                raise self.unknown(f"{where}{key}", "key", key, valid)

    @contextmanager
    def at(self, key: str) -> Iterator[None]:
        """Name the file and `key` in a `LocatorError` raised inside."""
        try:
            yield
        except LocatorError as error:
            raise self.fail(key, str(error)) from None

    def parse(self, cls: type[T], values: Mapping[str, Any], where: str = "") -> T:
        """`locator.options.parse` of a table, with errors naming the file and key."""
        return parse(cls, values, f"{self.path}: {where}", kind="key")

    def tables(self, data: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
        value = data.get(key)
        if value is None:
            raise self.fail(key, f"missing; add at least one [[{key}]] table.")
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.fail(key, f"must be an array of tables ([[{key}]]).")
        if not value:
            raise self.fail(key, "is empty: the grid has no cells.")
        return value

    def value(self, key: str, value: Any, kind: Any = str, minimum: int | None = None) -> Any:
        """`value` as a `kind` (`locator.options.convert`; a non-empty string by default)."""
        try:
            return convert(kind, value, bounds=None if minimum is None else {"minimum": minimum})
        except ValueError as error:
            raise self.fail(key, str(error)) from None

    def values(
        self,
        data: Mapping[str, Any],
        key: str,
        convert: Callable[[str, Any], Any],
        where: str = "",
    ) -> tuple[Any, ...]:
        value = data.get(key)
        name = f"{where}{key}"
        if value is None:
            raise self.fail(name, f"missing; give a list ({_GRID[key]}).")
        if not isinstance(value, list):
            raise self.fail(name, f"must be a list, e.g. {key} = [{value!r}].")
        if not value:
            raise self.fail(name, "is empty: the grid has no cells.")
        items = tuple(convert(f"{name}[{i}]", v) for i, v in enumerate(value))
        if len(set(items)) != len(items):
            raise self.fail(name, f"has duplicates: {list(value)}.")
        return items


def _proportion(check: _Checker, key: str, value: Any) -> float:
    from locator.localizer import check_request

    with check.at(key):
        check_request(proportions=[value])
    return float(value)


def _seed(check: _Checker, key: str, value: Any) -> int:
    from locator.localizer import check_request

    with check.at(key):
        check_request(seed=value)
    return int(value)


def _factor(check: _Checker, key: str, value: Any) -> float:
    from locator.intervention import check_factor

    with check.at(key):
        return check_factor(value)


def load_suite(path: str | Path) -> Suite:
    """Read and check a suite file; raise a one-line `LocatorError` on any problem."""
    path = Path(path)
    if not path.is_file():
        raise LocatorError(f"suite file {str(path)!r} does not exist.")
    try:
        data = tomllib.loads(read_text(path, "suite file"))  # not UTF-8: one line
    except tomllib.TOMLDecodeError as error:
        raise LocatorError(f"{path}: not valid TOML: {error}") from None
    return parse_suite(data, path)


def declared_skills(source: str, path: Path) -> tuple[SkillSpec, ...]:
    """The skills suite text `source` (from file `path`) declares, empty when it is no matrix:
    read as `parse_suite` reads them, without checking corpora, tasks or methods (a results
    folder's report reads its suite from ``_suite.json``, where the data may be absent)."""
    try:
        data = tomllib.loads(source)
    except tomllib.TOMLDecodeError as error:
        raise LocatorError(f"{path}: not valid TOML: {error}") from None
    return _skills(_Checker(path), data)[0]


def parse_suite(data: Mapping[str, Any], path: Path) -> Suite:
    """Check parsed TOML `data` (from file `path`) and build the `Suite`."""
    check = _Checker(path)
    check.keys("", data, _TOP)
    ground_truth = None
    if "ground_truth" in data:  # what it fixes is filled in, then checked as any suite's
        from locator.bench.ground_truth import expand

        data, ground_truth = expand(check, data)
    name = check.value("name", data.get("name", path.stem))
    if "description" in data:
        check.value("description", data["description"])
    data_dir = data.get("data_dir")
    if data_dir is not None:
        check.value("data_dir", data_dir)
        if not (path.resolve().parent / data_dir).is_dir():
            raise check.fail(
                "data_dir", f"{data_dir!r} is not a folder (paths are relative to the suite file)."
            )
    calibration = check.parse(CalibrationOptions, {k: data[k] for k in _CALIBRATION if k in data})
    skills, skill_tasks = _skills(check, data)
    if skills and "corpora" in data:
        raise check.fail(
            "corpora",
            "a matrix suite's corpora come from its [[skills]]; drop [[corpora]] (a skill "
            "takes controls = [...]).",
        )
    corpora = tuple(CorporaSpec(target=s.corpus, controls=s.controls) for s in skills) or tuple(
        check.parse(CorporaSpec, t, f"corpora[{i}].")
        for i, t in enumerate(check.tables(data, "corpora"))
    )
    tables = check.tables(data, "tasks") if "tasks" in data or not skills else []
    tasks = tuple(_task(check, f"tasks[{i}].", t) for i, t in enumerate(tables))
    for skill_index, task in skill_tasks:
        same = next((t for t in tasks if t.name == task.name), None)
        if same is None:
            tasks += (task,)
        elif same != task:
            raise check.fail(
                f"skills[{skill_index}].task",
                f"{task.name!r} is evaluated with other options elsewhere in the suite; give its "
                "options in one place.",
            )
    suite = Suite(
        name=name,
        path=path,
        models=tuple(
            check.parse(ModelOptions, t, f"models[{i}].")
            for i, t in enumerate(check.tables(data, "models"))
        ),
        corpora=corpora,
        methods=_with_baselines(check, data, _methods(check, check.tables(data, "methods"))),
        tasks=tasks,
        skills=skills,
        proportions=check.values(data, "proportions", lambda k, v: _proportion(check, k, v)),
        factors=check.values(data, "factors", lambda k, v: _factor(check, k, v)),
        seeds=check.values(data, "seeds", lambda k, v: _seed(check, k, v)),
        num_samples=check.values(data, "num_samples", lambda k, v: check.value(k, v, int, 1)),
        calibration=calibration,
        data_dir=data_dir,
        eval_batch_size=check.value(
            "eval_batch_size", data.get("eval_batch_size", 16), int | Literal["auto"], 1
        ),
        ground_truth=ground_truth,
    )
    _check_unique(check, "models", [(m.path, m.dtype) for m in suite.models])
    _check_unique(check, "corpora", [(c.target, c.controls) for c in suite.corpora])
    _check_unique(check, "tasks", [t.name for t in suite.tasks])
    _check_names(check, suite)
    return suite


def _check_unique(check: _Checker, key: str, items: list[Any]) -> None:
    for i, item in enumerate(items):
        if item in items[:i]:
            raise check.fail(f"{key}[{i}]", f"repeats {key}[{items.index(item)}].")


def _methods(check: _Checker, tables: list[Mapping[str, Any]]) -> tuple[MethodSpec, ...]:
    methods: list[MethodSpec] = []
    for index, table in enumerate(tables):
        where = f"methods[{index}]."
        check.keys(where, table, _METHOD_KEYS)
        values = {key: value for key, value in table.items() if key != "options"}
        if "label" not in table:  # the name, or <name>-matched-<match> for a matched baseline
            values["label"] = "-matched-".join(
                str(table[k]) for k in ("name", "match") if k in table
            )
        method = check.parse(MethodSpec, values, where)
        options = table.get("options", {})
        if not isinstance(options, dict):
            raise check.fail(f"{where}options", f"must be a table, got {options!r}.")
        if method.label in {m.label for m in methods}:
            raise check.fail(f"{where}label", f"{method.label!r} is used twice; give each a label.")
        config = _method_config(check, f"methods[{index}]", method.name, options)
        methods.append(dataclasses.replace(method, config=config))
    labels = {m.label: m for m in methods}
    for index, method in enumerate(methods):
        if method.match is None:
            continue
        key = f"methods[{index}].match"
        if method.match not in labels:
            raise check.unknown(key, "method label", method.match, labels)
        if labels[method.match].match is not None:
            raise check.fail(key, f"{method.match!r} is itself matched; match an unmatched method.")
        if method.controls is not None and method.controls != labels[method.match].controls:
            raise check.fail(
                f"methods[{index}].controls",
                f"a matched baseline uses the controls of {method.match!r}; drop this key.",
            )
    return tuple(methods)


def _task(check: _Checker, where: str, table: Mapping[str, Any]) -> TaskSpec:
    values = dict(table)
    if "proportions" in table:
        values["proportions"] = check.values(
            table, "proportions", lambda k, v: _proportion(check, k, v), where=where
        )
    if "factors" in table:
        values["factors"] = check.values(
            table, "factors", lambda k, v: _factor(check, k, v), where=where
        )
    return check.parse(TaskSpec, values, where)


def _skills(
    check: _Checker, data: Mapping[str, Any]
) -> tuple[tuple[SkillSpec, ...], list[tuple[int, TaskSpec]]]:
    """The skills of a matrix suite and, for each, (its index, the task that measures it); empty
    for a suite that is no matrix."""
    from locator.corpora import evaluation_task

    matrix = check.value("matrix", data.get("matrix", False), bool)
    if not matrix:
        if "skills" in data:
            raise check.fail("skills", "skills make a matrix: add matrix = true.")
        return (), []
    if "skills" not in data:
        raise check.fail("skills", "missing: a matrix needs two or more [[skills]] tables.")
    tables = check.tables(data, "skills")
    if len(tables) < 2:
        raise check.fail("skills", "has one skill; a matrix needs two or more [[skills]] tables.")
    skills: list[SkillSpec] = []
    tasks: list[tuple[int, TaskSpec]] = []
    for index, table in enumerate(tables):
        where = f"skills[{index}]."
        check.keys(where, table, [*_SKILL_FIELDS, *_TASK_OPTIONS])
        skill = check.parse(SkillSpec, {k: table[k] for k in _SKILL_FIELDS if k in table}, where)
        if not skill.task:
            with check.at(f"{where}corpus"):
                skill = dataclasses.replace(skill, task=evaluation_task(skill.corpus))
        if not skill.metric:
            if not skill.task.startswith("nll:"):
                measured = f"the metric of task {skill.task!r} that measures {skill.name!r}"
                raise check.fail(f"{where}metric", f"missing: {measured}.")
            skill = dataclasses.replace(skill, metric=DEFAULT_NLL_METRIC)
        options = {k: v for k, v in table.items() if k in _TASK_OPTIONS}
        tasks.append((index, _task(check, where, {"name": skill.task, **options})))
        for i, other in enumerate(skills):
            for what in ("name", "corpus"):
                if getattr(other, what) == getattr(skill, what):
                    repeated = f"{getattr(skill, what)!r} is skills[{i}]'s {what} already."
                    raise check.fail(f"{where}{what}", repeated)
            if (other.task, other.metric) == (skill.task, skill.metric):
                measured = f"{skill.task!r} {skill.metric!r}"
                raise check.fail(
                    f"{where}metric", f"skills[{i}] is measured by {measured} already."
                )
        skills.append(skill)
    for index, skill in enumerate(skills):
        others = [other.corpus for other in skills if other is not skill]
        entry = {"target": skill.corpus, "controls": tables[index].get("controls", others)}
        corpora = check.parse(CorporaSpec, entry, f"skills[{index}].")
        skills[index] = dataclasses.replace(skill, controls=corpora.controls)
    return tuple(skills), tasks


def _with_baselines(
    check: _Checker, data: Mapping[str, Any], methods: tuple[MethodSpec, ...]
) -> tuple[MethodSpec, ...]:
    """`methods` with a matched baseline after every method that is not itself a baseline and
    has none (see the module docs)."""
    from locator.localizer import localizer_class, localizers, make_config

    choice = check.value("matched_baseline", data.get("matched_baseline", True), bool | str)
    if choice is False:
        return methods
    if choice is True:
        takers = [n for n in localizers().names() if localizer_class(n).accepts_reference]
        if len(takers) != 1:
            raise check.fail(
                "matched_baseline",
                f"{len(takers)} installed methods take a reference ({', '.join(takers)}); name "
                "one: matched_baseline = <method>, or false for none.",
            )
        choice = takers[0]
    with check.at("matched_baseline"):
        if not localizer_class(choice).accepts_reference:
            raise LocatorError(
                f"method {choice!r} takes no reference localization, so it cannot be matched."
            )
        config = make_config(localizer_class(choice), {})
    matched = {m.match for m in methods if m.match is not None}
    labels = {m.label for m in methods}
    expanded: list[MethodSpec] = []
    for method in methods:
        expanded.append(method)
        if (
            method.match is not None
            or method.label in matched
            or localizer_class(method.name).accepts_reference
        ):
            continue
        label = f"{choice}-matched-{method.label}"
        if label in labels:
            raise check.fail(
                "methods",
                f"label {label!r} is the matched baseline of {method.label!r}; rename the "
                "entry, or give that baseline with match = " + repr(method.label) + ".",
            )
        expanded.append(MethodSpec(name=choice, label=label, config=config, match=method.label))
    return tuple(expanded)


def _method_config(check: _Checker, where: str, name: str, options: Mapping[str, Any]) -> Any:
    """The method must be installed and take its options; its parsed config."""
    from locator.localizer import localizer_class, make_config

    with check.at(f"{where}.name"):
        localizer = localizer_class(name)
    with check.at(f"{where}.options"):
        return make_config(localizer, options)


def _check_names(check: _Checker, suite: Suite) -> None:
    """Datasets and tasks must be installed (this loads plugins)."""
    from locator.corpora import check_corpus
    from locator.evaluation import route
    from locator.rows import check_corpus_names

    named = [(f"corpora[{index}]", corpora) for index, corpora in enumerate(suite.corpora)]
    named += [
        (f"methods[{index}]", CorporaSpec(target=suite.corpora[0].target, controls=m.controls))
        for index, m in enumerate(suite.methods)
        if m.controls is not None
    ]
    if suite.skills:  # a matrix's corpora entries are its skills'
        named[: len(suite.corpora)] = [(f"skills[{i}]", c) for i, c in enumerate(suite.corpora)]
    for where, corpora in named:
        with check.at(f"{where}.controls"):
            check_corpus_names(corpora.target, corpora.controls)
    first = "corpus" if suite.skills else "target"
    values = [(f"{where}.{first}", c.target) for where, c in named[: len(suite.corpora)]]
    values += [
        (f"{where}.controls[{i}]", name)
        for where, corpora in named
        for i, name in enumerate(corpora.controls)
    ]  # every target first, so that a bad skill is named as itself, not as a control
    checked: set[str] = set()
    for key, name in values:
        if name not in checked:  # a task's or file's data is read once
            checked.add(name)
            with check.at(key):
                check_corpus(name, data_dir=suite.data_path())
    from locator.localizer import check_request

    for index, method in enumerate(suite.methods):
        localizer = method.localizer()
        # The requests it will get: a reference if it matches, each corpora's controls.
        with check.at(f"methods[{index}].match"):
            check_request(localizer, reference=method.match is not None)
        if method.controls is not None:  # its own controls: the rule of the CLI and the API
            with check.at(f"methods[{index}].controls"):
                check_request(localizer, controls=len(method.controls))
        for corpora_index, corpora in enumerate(suite.corpora):
            # A corpora entry is shared by every method: target-only methods leave its controls.
            used = suite.corpora_of(method, corpora).controls
            controls = len(used) if localizer.uses_controls else 0
            with check.at(f"corpora[{corpora_index}].controls: {method.label!r}"):
                check_request(localizer, controls=controls)
    for index, task in enumerate(suite.tasks):
        with check.at(f"tasks[{index}].name"):
            route([task.name])  # the evaluator that serves it, or a did-you-mean
    for index, skill in enumerate(suite.skills):
        # The task must be buildable for its corpus (an nll: task's held-out texts exist).
        task = next(t for t in suite.tasks if t.name == skill.task)
        with check.at(f"skills[{index}].task"):
            task.request(data_dir=suite.data_path())
