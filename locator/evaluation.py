"""Evaluation: evaluator plugins measure a model's skills on its weights as they are now.

An evaluator plugin registers `Evaluator` objects through the ``register_evaluators`` hook.
Each evaluator serves a set of task names: either a fixed list (`tasks`) or an open-ended set
it recognizes in `serves` (the lm-eval backend serves lm-eval's task names and YAML files).
`evaluate` sends each task to the evaluator that serves it, fixed lists first, and returns
``{task: {metric: value}}``. Evaluators run on the model object they are given, so
evaluating inside ``locator.intervene(...)`` measures the edited weights.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from locator.errors import LocatorError, UnknownNameError
from locator.plugins import Registry, registry

Results = dict[str, dict[str, float]]
LISTED_TASKS = 25
"""Above this many tasks, an unknown-task error lists a selection, not every name."""


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

    def check(self, tasks: Sequence[str]) -> None:
        """Raise a `LocatorError` for served tasks that cannot run; called before any model
        loads, so a bad request fails fast (the default accepts every served task)."""

    def evaluate(
        self,
        model: Any,
        tokenizer: Any,
        tasks: Sequence[str],
        *,
        limit: int | None,
        data_dir: Path | None,
        batch_size: int,
        max_new_tokens: int | None,
    ) -> Results:
        """Run `tasks` on `model` as it is; return ``{task: {metric: value}}``.

        `limit` caps the examples per task (None: all), `data_dir` holds local copies of the
        data, `max_new_tokens` caps generation (None: the task's own setting).
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement evaluate()")


def evaluators() -> Registry[Evaluator]:
    """The registry of installed evaluators (`Evaluator` instances), by name."""
    return registry(
        "register_evaluators", "evaluator", lambda evaluator: evaluator.name, expected=Evaluator
    )


def list_evaluators() -> list[str]:
    """Names of the installed evaluators."""
    return evaluators().names()


def get_evaluator(name: str) -> Evaluator:
    """The registered evaluator called `name`."""
    return evaluators().get(name)


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

    Unknown tasks raise an `UnknownNameError` with a did-you-mean; each evaluator then checks
    its tasks.
    """
    evaluators = _ordered()
    routed: dict[str, list[str]] = {}
    for task in tasks:
        for evaluator in evaluators:
            if evaluator.serves(task):
                routed.setdefault(evaluator.name, []).append(task)
                break
        else:
            raise UnknownTaskError(task, list_tasks())
    grouped = [(get_evaluator(name), names) for name, names in routed.items()]
    for evaluator, names in grouped:
        evaluator.check(names)
    return grouped


def check_evaluation(
    tasks: str | Sequence[str],
    *,
    limit: int | None,
    batch_size: int,
    max_new_tokens: int | None,
    data_dir: str | Path | None = None,
) -> list[str]:
    """Validate the arguments of `evaluate` (before any model loads); return the task list."""
    if isinstance(tasks, str):
        tasks = [tasks]
    tasks = list(tasks)
    if not tasks:
        raise LocatorError("no evaluation task given.")
    repeated = sorted({task for task in tasks if tasks.count(task) > 1})
    if repeated:
        raise LocatorError(f"evaluation task {repeated[0]!r} is given more than once.")
    for what, value in (("limit", limit), ("max_new_tokens", max_new_tokens)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise LocatorError(f"{what} must be a positive integer or None, got {value!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise LocatorError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if data_dir is not None and not Path(data_dir).exists():
        raise LocatorError(f"data directory {str(data_dir)!r} does not exist.")
    return tasks


def evaluate(
    model: Any,
    tokenizer: Any,
    tasks: str | Sequence[str],
    *,
    limit: int | None = None,
    data_dir: str | Path | None = None,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
) -> Results:
    """Evaluate `model` (as currently edited) on `tasks`: ``{task: {metric: value}}``.

    `limit` caps the examples of each task; for an lm-eval group it caps each of its
    subtasks (``mmlu`` with ``limit=10`` scores 10 questions in each of 57 subjects).
    `data_dir` points at local copies of the data (see each evaluator's docs);
    `max_new_tokens` caps generated tokens for generation tasks.

    Example::

        with locator.intervene(model, localization, 0.0):
            pruned = locator.evaluate(model, tokenizer, ["gsm8k_cot", "race"], limit=200)
    """
    names = check_evaluation(
        tasks, limit=limit, batch_size=batch_size, max_new_tokens=max_new_tokens, data_dir=data_dir
    )
    directory = None if data_dir is None else Path(data_dir)
    results: Results = {}
    for evaluator, routed in route(names):
        results.update(
            evaluator.evaluate(
                model,
                tokenizer,
                routed,
                limit=limit,
                data_dir=directory,
                batch_size=batch_size,
                max_new_tokens=max_new_tokens,
            )
        )
    missing = [task for task in names if task not in results]
    if missing:
        raise LocatorError(f"evaluation returned no result for task {missing[0]!r}.")
    return {task: results[task] for task in names}
