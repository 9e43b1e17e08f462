"""Evaluation: evaluator plugins measure a model's skills on its weights as they are now.

An evaluator plugin registers `Evaluator` objects through the ``register_evaluators`` hook.
Each evaluator serves a set of task names: either a fixed list (`tasks`) or an open-ended set
it recognizes in `serves` (the lm-eval backend serves lm-eval's task names, locator's own
skill tasks and YAML files). `evaluate` sends each task to the evaluator that serves it, fixed
lists first, and returns ``{task: {metric: value}}``. Every evaluator receives one frozen
`EvaluationRequest` (so a new option reaches every evaluator without changing its signature)
and returns its metrics, or an `Evaluation` that adds each metric's direction and, when the
request asks for them, per-item scores. Evaluators run on the model object they are given, so
evaluating inside ``locator.intervene(...)`` measures the edited weights.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from locator.errors import LocatorError, UnknownNameError
from locator.io import check_output_file
from locator.models import ModelOptions
from locator.options import OptionError, Options, option, parse
from locator.plugins import Registry, registry

if TYPE_CHECKING:
    from locator.localization import Localization

Results = dict[str, dict[str, float]]
LISTED_TASKS = 25
"""Above this many tasks, an unknown-task error lists a selection, not every name."""


@dataclass(frozen=True, kw_only=True)
class EvaluationOptions(Options):
    """How a task is evaluated, as far as it changes the numbers: a suite's ``[[tasks]]``
    table, the CLI's and `evaluate`'s options (see lm-eval for the prompt options)."""

    limit: int | None = option(
        None, help="Examples per task (per subtask of a group: mmlu).", minimum=1
    )
    max_new_tokens: int | None = option(
        None, help="Cap on generated tokens (generation tasks).", minimum=1
    )
    num_fewshot: int | None = option(
        None, help="Few-shot examples per prompt (default: the task's).", minimum=0
    )
    apply_chat_template: bool = option(
        False, help="Render prompts with the tokenizer's chat template."
    )
    fewshot_as_multiturn: bool = option(
        False, help="Few-shot examples as chat turns (chat template)."
    )
    system_instruction: str | None = option(None, help="A system prompt put before every prompt.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.fewshot_as_multiturn and not self.apply_chat_template:
            raise OptionError(
                "fewshot_as_multiturn",
                "needs apply_chat_template: few-shot examples become chat turns.",
            )
        if self.system_instruction is not None and not self.system_instruction.strip():
            blank = f"must be a non-empty string or None, got {self.system_instruction!r}."
            raise OptionError("system_instruction", blank)

    def prompt_options(self) -> dict[str, Any]:
        """The prompt options (all but `limit` and `max_new_tokens`) set to other than their
        defaults."""
        defaults = EvaluationOptions()
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(EvaluationOptions)
            if f.name not in ("limit", "max_new_tokens")
            and getattr(self, f.name) != getattr(defaults, f.name)
        }


@dataclass(frozen=True, kw_only=True)
class EvaluationRequest(EvaluationOptions):
    """What to evaluate and how: the tasks in request order, their `EvaluationOptions`, and how
    to run them, which changes no number: `batch_size` (an int, or ``"auto"``: the backend's
    automatic batch size; evaluators without one use their default), `data_dir` (local copies
    of the data) and `log_samples` (per-item scores and records: `Evaluation.items`,
    `Evaluation.samples`). Built and checked by `check_evaluation`."""

    tasks: tuple[str, ...] = option(
        help="Evaluation task (lm-eval name or YAML file, toy task), repeatable.", flag="--task"
    )
    batch_size: int | Literal["auto"] = option(
        8, help="Items per evaluation batch, or 'auto' (lm-eval's largest that fits).", minimum=1
    )
    data_dir: Path | None = option(None, help="Folder of local copies of the data.")
    log_samples: bool = option(
        False,
        help="Also write every item's prompt, response and scores (OUTPUT's .samples.jsonl).",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.tasks:
            raise OptionError("tasks", "is empty: give a task.", "no evaluation task given.")
        repeated = sorted({task for task in self.tasks if self.tasks.count(task) > 1})
        if repeated:
            twice = f"evaluation task {repeated[0]!r} is given more than once."
            raise OptionError("tasks", twice, twice)
        if self.data_dir is not None and not self.data_dir.exists():
            raise OptionError("data_dir", f"{str(self.data_dir)!r} does not exist.")

    def check(self) -> None:
        """Route the tasks (an unknown task fails here, with a did-you-mean) and let each
        evaluator check its share of the request, before any model loads."""
        for evaluator, names in route(self.tasks):
            evaluator.check(dataclasses.replace(self, tasks=tuple(names)))


@dataclass(frozen=True)
class ItemScore:
    """One item's score: the task's metric is the mean of `value` weighted by `weight` (1 for
    accuracy-like metrics, the item's token count for a per-token NLL). `item` is the item's
    index in the task (lm-eval's ``doc_id``); `task` is the requested task, or for an lm-eval
    group the subtask that holds the item."""

    task: str
    metric: str
    item: int
    value: float
    weight: float


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    """What an evaluator returns: ``metrics`` (``{task: {metric: value}}``),
    ``higher_is_better`` (``{task: {metric: bool}}``, where the evaluator knows it) and, when
    the request has ``log_samples``, per-item scores (`items`) and per-item records
    (``samples``: ``{task: [JSON-ready dict]}``, the backend's own log, for people to read)."""

    metrics: Results
    higher_is_better: dict[str, dict[str, bool]] = field(default_factory=dict)
    items: tuple[ItemScore, ...] = ()
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class Evaluator:
    """Base class of evaluation backends; register an instance from a plugin.

    Class attributes: `name` (unique) and `tasks` (the task names it serves; leave empty and
    override `serves` and `task_names` for an open-ended set). Subclasses implement `evaluate`.
    """

    name: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]] = ()

    def task_names(self) -> Sequence[str]:
        """All task names served (for listings and did-you-mean)."""
        return self.tasks

    def serves(self, task: str) -> bool:
        """Whether `task` is one of this evaluator's tasks."""
        return task in self.task_names()

    def check(self, request: EvaluationRequest) -> None:
        """Raise a `LocatorError` for a request (its `tasks` are this evaluator's) that cannot
        run; called before any model loads, so a bad request fails fast (the default accepts
        every request)."""

    def evaluate(
        self, model: Any, tokenizer: Any, request: EvaluationRequest
    ) -> Results | Evaluation:
        """Run ``request.tasks`` on `model` as it is: ``{task: {metric: value}}``, or an
        `Evaluation` with metric directions and per-item scores. Options an evaluator has no
        use for (few-shot counts for a fixed test, say) are ignored."""
        raise NotImplementedError(f"{type(self).__name__} does not implement evaluate()")


def evaluators() -> Registry[Evaluator]:
    """The registry of installed evaluators (`Evaluator` instances), by name."""
    return registry("register_evaluators")


def _ordered() -> list[Evaluator]:
    """Evaluators with a fixed task list first, then open-ended ones; by name within each."""
    found = evaluators()
    ordered = [found.get(name) for name in found.names()]
    return sorted(ordered, key=lambda evaluator: not evaluator.tasks)


def list_tasks() -> list[str]:
    """Every task name the installed evaluators serve (lm-eval's list is long: a few
    thousand names, indexed once per process)."""
    return sorted({task for evaluator in _ordered() for task in evaluator.task_names()})


class UnknownTaskError(UnknownNameError):
    """An evaluation task no installed evaluator serves. lm-eval alone has thousands of
    tasks, so the message lists the fixed-list evaluators' tasks and those the installed
    datasets name, not every task."""

    def __init__(self, name: str, choices: Sequence[str]) -> None:
        super().__init__("evaluation task", name, choices)
        if len(self.choices) > LISTED_TASKS:
            from locator.data import get_dataset, list_datasets

            featured = {t for e in _ordered() for t in e.tasks} | {
                task for d in list_datasets() if (task := get_dataset(d).task) is not None
            }
            close = difflib.get_close_matches(name, self.choices, n=1)
            message = f"Unknown evaluation task {name!r}."
            message += f" Did you mean {close[0]!r}?" if close else ""
            message += (
                f" Installed: {', '.join(sorted(featured))} and more "
                f"({len(self.choices):,} in all; see locator.list_tasks())."
            )
            self.args = (message,)


def route(tasks: Sequence[str]) -> list[tuple[Evaluator, list[str]]]:
    """The evaluator of each task, grouped: ``[(evaluator, its tasks in request order)]``.

    Unknown tasks raise an `UnknownNameError` with a did-you-mean.
    """
    ordered = _ordered()
    routed: dict[str, list[str]] = {}
    for task in tasks:
        for evaluator in ordered:
            if evaluator.serves(task):
                routed.setdefault(evaluator.name, []).append(task)
                break
        else:
            raise UnknownTaskError(task, list_tasks())
    return [(evaluators().get(name), names) for name, names in routed.items()]


def check_evaluation(tasks: str | Sequence[str], **options: Any) -> EvaluationRequest:
    """Check an evaluation (before any model loads) and build its request: `options` are the
    other fields of `EvaluationRequest`. It also routes the tasks and lets each evaluator check
    its share of the request (`EvaluationRequest.check`)."""
    names = [tasks] if isinstance(tasks, str) else list(tasks)
    request = parse(EvaluationRequest, {"tasks": names, **options}, kind="evaluation option")
    request.check()
    return request


def run_evaluation(model: Any, tokenizer: Any, request: EvaluationRequest) -> Evaluation:
    """Evaluate `model` (as currently edited) on a checked request: metrics, their directions
    and, with ``request.log_samples``, per-item scores and records. `evaluate` is the short
    form; the bench and `evaluate_to_file` use this one."""
    if request.apply_chat_template:
        from locator.data import require_chat_template

        require_chat_template(tokenizer, "apply_chat_template", "evaluate without it")
    metrics: Results = {}
    directions: dict[str, dict[str, bool]] = {}
    items: list[ItemScore] = []
    samples: dict[str, list[dict[str, Any]]] = {}
    for evaluator, routed in route(request.tasks):
        output = evaluator.evaluate(
            model, tokenizer, dataclasses.replace(request, tasks=tuple(routed))
        )
        if not isinstance(output, Evaluation):
            output = Evaluation(metrics=output)
        metrics.update(output.metrics)
        directions.update(output.higher_is_better)
        items += output.items
        samples.update(output.samples)
    missing = [task for task in request.tasks if task not in metrics]
    if missing:
        raise LocatorError(f"evaluation returned no result for task {missing[0]!r}.")
    return Evaluation(
        metrics={task: metrics[task] for task in request.tasks},
        higher_is_better=directions,
        items=tuple(items),
        samples=samples,
    )


def evaluate(model: Any, tokenizer: Any, tasks: str | Sequence[str], **options: Any) -> Results:
    """Evaluate `model` (as currently edited) on `tasks`: ``{task: {metric: value}}``.

    `options` are the other fields of `EvaluationRequest` (`limit` caps the examples of each
    task, of each subtask of an lm-eval group: ``mmlu`` with ``limit=10`` scores 10 questions
    in each of 57 subjects). `run_evaluation` also returns per-item scores.

    Example::

        with locator.intervene(model, localization, 0.0):
            pruned = locator.evaluate(model, tokenizer, ["gsm8k_nll", "race"], limit=200)
    """
    request = check_evaluation(tasks, **options)
    return run_evaluation(model, tokenizer, request).metrics


def evaluate_to_file(
    model: ModelOptions,
    request: EvaluationRequest,
    output: str | Path | None = None,
    *,
    localization: str | Path | None = None,
    factor: float | None = None,
) -> tuple[Evaluation, Localization | None, list[Path]]:
    """Evaluate `model` on `request`, edited by the localization file `localization` scaled by
    `factor` if given (both or neither), and write the metrics to `output` (JSON) and with
    ``request.log_samples`` each item's record beside them (``m.json``: ``m.samples.jsonl``),
    never over an existing file (``locator evaluate``). Every check is made before the model
    loads. Returns the evaluation, the localization (or None) and the paths written."""
    from locator.bench.results import write_json, write_lines
    from locator.intervention import check_factor, intervene
    from locator.localization import Localization

    if (localization is None) != (factor is None):
        raise LocatorError("--localization and --factor go together: give both or neither.")
    if factor is not None:
        check_factor(factor)
    if request.log_samples and output is None:
        raise LocatorError("--log-samples writes beside the metrics: give --output PATH too.")
    paths = [] if output is None else [Path(output)]
    if request.log_samples:
        paths.append(paths[0].with_name(f"{paths[0].stem}.samples.jsonl"))
    for path in paths:
        check_output_file(path)
    request.check()  # unknown tasks fail before the model loads
    model.check()
    found = Localization.load(localization) if localization is not None else None
    loaded, tokenizer = model.load()
    editing = intervene(loaded, found, factor) if found is not None and factor is not None else None
    with editing or nullcontext():
        evaluation = run_evaluation(loaded, tokenizer, request)
    if paths:
        write_json(paths[0], evaluation.metrics)
    if request.log_samples:
        records = [r for task in request.tasks for r in evaluation.samples.get(task, [])]
        write_lines(paths[1], [json.dumps(record) for record in records])
    return evaluation, found, paths
