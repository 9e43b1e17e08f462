"""The lm-eval backend: lm-evaluation-harness tasks on the in-memory model, from the hub or
from local files.

The model is wrapped as it is (``HFLM(pretrained=model, tokenizer=tokenizer)``), so results
reflect the weights as currently edited. Task names are lm-eval's own, with lm-eval's own
definitions (prompts, few-shot examples, filters, metrics): ``gsm8k_cot``, ``gsm8k``, ``mmlu``,
``race``, ``hendrycks_math``, ``hendrycks_math500``, ``minerva_math`` (which needs
``lm-eval[math]``) and thousands more. A path to an lm-eval YAML file is a custom task.

Locator's own skill tasks (``gsm8k_nll``, ``nll:<corpus>``, ...: `locator_plugins.skill_tasks`)
are lm-eval tasks too, built per evaluation from locator's datasets.

With a data directory, every task whose lm-eval dataset has a local counterpart reads the local
files, never the hub (how: `locator_plugins.local_sources`). Other tasks load their data as
lm-eval does. Tasks that execute model output as code are refused.

This plugin depends on the built-in ``datasets`` plugin: local copies and skill-task items are
read through its datasets (`require_dataset` names the plugin when it is not loaded).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from locator_plugins.local_sources import LOCAL_SOURCES, LocalData, local_overrides
from locator_plugins.skill_tasks import SKILL_TASKS, corpus_nll, per_item, per_unit

import locator

FAST_FOLDERS = ("gsm8k", "mmlu", "race", "hendrycks_math", "minerva_math", "wikitext")
"""lm-eval task folders indexed first: the common tasks then need no scan of all of lm-eval's
(about 15,000) YAML files, which takes seconds."""


SAME_NAMED = (
    "limit",
    "num_fewshot",
    "apply_chat_template",
    "fewshot_as_multiturn",
    "system_instruction",
    "log_samples",
)
"""`EvaluationRequest` fields passed to lm-eval's `simple_evaluate` as they are, under the same
name."""


@functools.cache
def _manager(fast: bool) -> Any:
    """lm-eval's task index: only `FAST_FOLDERS`, or everything (built once per process)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    if not fast:
        return TaskManager()
    root = Path(lm_eval.__file__).parent / "tasks"
    # Two of these folders tag tasks with one name (`math_word_problems`); lm-eval warns about
    # the overlap on stderr, which would land in the middle of a command's output.
    index_log = logging.getLogger("lm_eval.tasks._index")
    level = index_log.level
    index_log.setLevel(logging.ERROR)
    try:
        return TaskManager(
            include_defaults=False, include_path=[str(root / f) for f in FAST_FOLDERS]
        )
    finally:
        index_log.setLevel(level)


def _is_own(task: str) -> bool:
    """Whether `task` is one of locator's skill tasks (built here, not looked up in lm-eval)."""
    return task in SKILL_TASKS or task.startswith(locator.NLL_PREFIX)


def _is_yaml(task: str) -> bool:
    """Whether `task` is the path of a task YAML file; one that is not UTF-8 is a one-line
    `LocatorError` here, before lm-eval reads it (with a `UnicodeDecodeError`)."""
    if not (task.endswith((".yaml", ".yml")) and Path(task).is_file()):
        return False
    locator.read_text(task, "task file")
    return True


def _manager_for(tasks: Sequence[str]) -> Any:
    names = [task for task in tasks if not _is_yaml(task)]
    fast = _manager(True)
    return fast if all(name in fast.task_index for name in names) else _manager(False)


def _leaves(manager: Any, name: str) -> list[str] | None:
    """The config-defined tasks under `name`, or None if some are not plain references."""
    entry = manager.task_index[name]
    kind = entry.kind.name
    if kind == "TASK":
        return [name]
    if kind == "TAG":  # inside a group, a tag stands for its tasks
        return sorted(entry.tags)
    if kind != "GROUP":
        return None
    members = entry.cfg.get("task", [])
    leaves: list[str] = []
    for member in members if isinstance(members, list) else [members]:
        found = (
            _leaves(manager, member)
            if isinstance(member, str) and member in manager.task_index
            else None
        )
        if found is None:
            return None
        leaves += found
    return leaves


def _local_object(manager: Any, name: str, local: LocalData) -> Any:
    """Task or Group `name` reading local files, or None when lm-eval's data has no local
    counterpart."""
    leaves = _leaves(manager, name)
    if leaves is None:
        return None
    configs = {leaf: manager.task_index[leaf].cfg for leaf in leaves}
    if any(config.get("dataset_path") not in LOCAL_SOURCES for config in configs.values()):
        return None
    wrapper = {
        "group": f"{name} (local files)",
        "task": [local_overrides(leaf, config, local) for leaf, config in configs.items()],
    }
    built = manager.load([wrapper])["tasks"]
    return _assemble(manager, name, built)


def _assemble(manager: Any, name: str, built: dict[str, Any]) -> Any:
    """Task or Group `name` from built leaf tasks, nested as lm-eval nests it (a tag inside a
    group contributes its tasks as children), so every aggregate is lm-eval's own."""
    from lm_eval.api.group import Group

    entry = manager.task_index[name]
    if entry.kind.name == "TASK":
        return built[name]
    config = entry.cfg
    members = config["task"] if isinstance(config["task"], list) else [config["task"]]
    group = Group.from_config(
        {
            "group": name,
            "group_alias": config.get("group_alias"),
            "task": members,
            "aggregate_metric_list": config.get("aggregate_metric_list"),
            "metadata": config.get("metadata"),
        }
    )
    for member in members:
        if manager.task_index[member].kind.name == "TAG":
            for task in sorted(manager.task_index[member].tags):
                group.add(built[task])
        else:
            group.add(_assemble(manager, member, built))
    return group


def _top(loaded: dict[str, Any], task: str) -> Any:
    """The Task or Group that `task` (a name or a YAML path) loaded as."""
    if task in loaded["groups"]:
        return loaded["groups"][task]
    if task in loaded["tasks"]:
        return loaded["tasks"][task]
    children = {child for names in loaded.get("group_map", {}).values() for child in names}
    tops = [g for n, g in loaded["groups"].items() if n not in children] or [
        t for n, t in loaded["tasks"].items() if n not in children
    ]
    if len(tops) != 1:
        raise locator.LocatorError(
            f"{task!r} defines {len(tops)} lm-eval tasks; give one task or group."
        )
    return tops[0]


def _load_error(task: str, error: Exception, data_dir: Path | None) -> locator.LocatorError:
    variable = locator.offline_variable()
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if variable is not None and isinstance(error, ConnectionError):
        if data_dir is None:
            hint = "pass a folder of local copies: data_dir=... in Python, --data-dir in the CLI"
        else:
            known = ", ".join(sorted(LOCAL_SOURCES))
            hint = f"the data directory has no local copy of it (locator reads local {known})"
        return locator.LocatorError(
            f"lm-eval task {task!r} needs its dataset from the hub, which {variable}=1 "
            f"forbids, and it is not in the local cache; {hint}."
        )
    return locator.LocatorError(
        f"cannot load lm-eval task {task!r}: {type(error).__name__}: {first}"
    )


def _metrics(entry: dict[str, Any]) -> dict[str, float]:
    """lm-eval's ``"acc,none"`` keys as ``"acc"``; other filters keep their name
    (``"exact_match,strict-match"``). Non-numeric entries (``"N/A"``) are dropped."""
    metrics = {}
    for key, value in entry.items():
        if "," not in key or isinstance(value, str) or value is None:
            continue
        metric, filter_name = key.split(",", 1)
        metrics[metric if filter_name == "none" else key] = float(value)
    return metrics


def _directions(
    output: dict[str, Any], name: str, leaves: Sequence[Any], metrics: dict[str, float]
) -> dict[str, bool]:
    """lm-eval's higher-is-better of each reported metric, where known: the task's own, else
    (for a group) its subtasks'. ``acc_stderr`` and the like have none."""
    table = output.get("higher_is_better", {})
    found = {}
    for metric in metrics:
        where, _, bare = metric.rpartition("/")  # "subtask/acc" for a group without aggregates
        base = bare.split(",")[0]
        for source in [where or name, *(leaf.task_name for leaf in leaves)]:
            value = table.get(source, {}).get(base)
            if value is not None:
                found[metric] = bool(value)
                break
    return found


def _item_value(aggregation: Any, value: Any) -> tuple[float, float] | None:
    """``(value, weight)`` of one item's sample entry for a metric aggregated by
    `aggregation`, when the task's metric is their weighted mean: lm-eval's ``mean`` (weight
    1), ``bits_per_byte`` (bits per byte, weighted by bytes) and the skill tasks' NLL per unit.
    None for other aggregations (perplexities are not weighted means)."""
    from lm_eval.api import metrics as lm_metrics

    if aggregation is lm_metrics.mean:
        return float(value), 1.0
    if aggregation is per_unit:
        return per_item(value)
    if aggregation is lm_metrics.bits_per_byte:
        loglikelihood, size = value
        return (-loglikelihood / size / math.log(2), float(size)) if size else None
    return None


def _tasks_of(loaded: Any) -> list[Any]:
    """The tasks of a loaded lm-eval Task (itself) or Group (its subtasks)."""
    return loaded.get_all_tasks() if hasattr(loaded, "get_all_tasks") else [loaded]


def _items(task: str, loaded: Any, metrics: dict[str, float], samples: dict[str, Any]) -> list:
    """Per-item scores of the requested `task` (a Task, or a Group: items of its subtasks)
    for each metric it reports, from lm-eval's logged samples."""
    items = []
    for leaf in _tasks_of(loaded):
        aggregations = leaf.aggregation()
        for reported in metrics:
            metric, _, filter_name = reported.partition(",")
            filter_name = filter_name or "none"
            if metric not in aggregations:
                continue
            for sample in samples.get(leaf.task_name, []):
                if sample.get("filter") != filter_name or metric not in sample:
                    continue
                scored = _item_value(aggregations[metric], sample[metric])
                if scored is not None:
                    items.append(
                        locator.ItemScore(
                            task=task if leaf is loaded else leaf.task_name,
                            metric=reported,
                            item=int(sample["doc_id"]),
                            value=scored[0],
                            weight=scored[1],
                        )
                    )
    return items


def _records(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """lm-eval's sample logs as JSON-ready dicts (lm-eval's own serializer for the rest)."""
    import json

    from lm_eval.utils import handle_non_serializable

    return [json.loads(json.dumps(s, default=handle_non_serializable)) for s in samples]


class LmEvalEvaluator(locator.Evaluator):
    """lm-evaluation-harness tasks (and lm-eval YAML files, and locator's skill tasks) on the
    in-memory model."""

    name = "lm-eval"

    def task_names(self) -> Sequence[str]:
        """Every lm-eval task, group and tag name (indexes all of lm-eval once), the skill
        tasks and ``nll:<dataset>`` of every installed dataset."""
        corpora = [f"{locator.NLL_PREFIX}{name}" for name in locator.list_datasets()]
        return [*SKILL_TASKS, *corpora, *_manager(False).all_tasks]

    def serves(self, task: str) -> bool:
        """Skill tasks (``nll:<corpus>`` included), lm-eval task names and paths of lm-eval
        YAML files."""
        return (
            _is_own(task)
            or _is_yaml(task)
            or task in _manager(True).task_index
            or task in _manager(False).task_index
        )

    def evaluate(
        self, model: Any, tokenizer: Any, request: locator.EvaluationRequest
    ) -> locator.Evaluation:
        """Run lm-eval's `simple_evaluate` on the model as it is, batched, with progress bars;
        with ``request.log_samples``, also per-item scores and lm-eval's sample logs."""
        import lm_eval
        from lm_eval.models.huggingface import HFLM

        tasks = request.tasks
        manager = _manager_for([t for t in tasks if not _is_own(t)])
        local = None if request.data_dir is None else LocalData(request.data_dir)
        gen_kwargs = None
        if request.max_new_tokens is not None:
            gen_kwargs = {"max_gen_toks": request.max_new_tokens}
        training = model.training
        try:
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=request.batch_size)
            objects = {
                task: _skill_task(task, lm, request)
                if _is_own(task)
                else self._load(manager, task, local)
                for task in tasks
            }
            output = lm_eval.simple_evaluate(
                model=lm,
                tasks=list(objects.values()),
                task_manager=manager,
                gen_kwargs=gen_kwargs,
                **{option: getattr(request, option) for option in SAME_NAMED},
            )
        finally:
            model.train(training)  # HFLM switches the model to eval mode
        results = output["results"]
        report: locator.Results = {}
        directions: dict[str, dict[str, bool]] = {}
        items: list[locator.ItemScore] = []
        samples: dict[str, list[dict[str, Any]]] = {}
        for task, loaded in objects.items():
            name = getattr(loaded, "task_name", None) or loaded.name
            metrics = _metrics(results.get(name, {}))
            leaves = _tasks_of(loaded)
            if not metrics and hasattr(loaded, "get_all_tasks"):  # a group without aggregates
                for leaf in leaves:
                    for metric, value in _metrics(results.get(leaf.task_name, {})).items():
                        metrics[f"{leaf.task_name}/{metric}"] = value
            report[task] = metrics
            directions[task] = _directions(output, name, leaves, metrics)
            if request.log_samples:
                logged = output.get("samples", {})
                items += _items(task, loaded, metrics, logged)
                samples[task] = [
                    {"task": leaf.task_name, **record}
                    for leaf in leaves
                    for record in _records(logged.get(leaf.task_name, []))
                ]
        return locator.Evaluation(
            metrics=report, higher_is_better=directions, items=tuple(items), samples=samples
        )

    def check(self, request: locator.EvaluationRequest) -> None:
        """Tags (sets of tasks, reported one by one) and tasks that execute model output as
        code are refused; an ``nll:<corpus>`` task needs a corpus with held-out texts."""
        for task in request.tasks:
            _check_corpus_task(task, request.data_dir)
        named = [task for task in request.tasks if not _is_own(task)]
        if not named:
            return
        manager = _manager_for(named)
        for task in named:
            entry = manager.task_index.get(task)
            if entry is None:
                continue  # a YAML file: checked once loaded
            if entry.kind.name == "TAG":
                members = sorted(entry.tags)
                more = ", ..." if len(members) > 3 else ""
                raise locator.LocatorError(
                    f"{task!r} is an lm-eval tag naming {len(members)} tasks "
                    f"({', '.join(members[:3])}{more}); name the tasks."
                )
            for leaf in _leaves(manager, task) or [task]:
                if manager.task_index[leaf].cfg.get("unsafe_code"):
                    raise _unsafe(leaf)

    def calibration_texts(
        self, task: str, data_dir: Path | None
    ) -> tuple[str, list[tuple[str, str, str]]]:
        """``(split, [(text, user, assistant)])``: the documents of lm-eval task `task` (a name or
        a YAML file; a group: every subtask) that calibration may use, from a split that is not
        the evaluated one, each rendered as the task presents it (`_rendered`). `split` names the
        split (``subtask:split`` joined by ``+`` for a group). Reads the task's data as
        `LmEvalEvaluator.evaluate` does (local files where a data directory has them)."""
        manager = _manager_for([task])
        local = None if data_dir is None else LocalData(data_dir)
        loaded = self._load(manager, task, local)
        leaves = _tasks_of(loaded)
        splits, rendered = [], []
        for leaf in leaves:
            split, docs = _calibration_split(leaf)
            splits.append(split if len(leaves) == 1 else f"{leaf.task_name}:{split}")
            try:
                rendered += [_rendered(leaf, doc) for doc in docs]
            except Exception as error:  # a document the task's templates cannot render
                raise locator.LocatorError(
                    f"lm-eval task {leaf.task_name!r}: cannot render a {split!r} document for "
                    f"calibration: {type(error).__name__}: {error}"
                ) from None
        if not rendered:
            raise locator.LocatorError(
                f"lm-eval task {task!r}: split {'+'.join(splits)!r} has no documents."
            )
        return "+".join(splits), rendered

    def _load(self, manager: Any, task: str, local: LocalData | None) -> Any:
        """The lm-eval Task or Group for `task`, reading local files where it can."""
        entry = manager.task_index.get(task)
        try:
            loaded = None
            if local is not None and entry is not None:
                loaded = _local_object(manager, task, local)
            if loaded is None:
                loaded = _top(manager.load([task]), task)
        except locator.LocatorError:
            raise
        except Exception as error:  # lm-eval and datasets failures become one line
            raise _load_error(task, error, local.data_dir if local else None) from None
        unsafe = [t.task_name for t in _tasks_of(loaded) if getattr(t, "UNSAFE_CODE", False)]
        if unsafe:
            raise _unsafe(unsafe[0])
        return loaded


def _calibration_split(task: Any) -> tuple[str, Any]:
    """The split of an lm-eval Task that calibration reads, and its documents: the training
    split, else the validation split, else the few-shot split, the first that is set and is not
    the evaluated split (the test split, else the validation split)."""
    config = task.config
    evaluated = config.test_split or config.validation_split
    fewshot = config.fewshot_split or getattr(getattr(task, "fewshot_cfg", None), "split", None)
    for split, docs in (
        (config.training_split, task.training_docs),
        (config.validation_split, task.validation_docs),
        (fewshot, task.fewshot_docs),
    ):
        if split and split != evaluated:
            return split, docs()
    splits = [s for s in (config.training_split, config.validation_split, fewshot) if s]
    raise locator.LocatorError(
        f"lm-eval task {task.task_name!r} has no split left for calibration: it evaluates "
        f"split {evaluated!r} and has {', '.join(repr(s) for s in splits) or 'no other split'}"
        " (calibration reads its training, validation or few-shot split, never the evaluated one)."
    )


def _rendered(task: Any, doc: dict[str, Any]) -> tuple[str, str, str]:
    """``(text, user, assistant)``: one document as the task presents an answered example -
    its description and prompt, the target delimiter, the target (a choice's text for multiple
    choice, the first of several targets) - built by lm-eval's own `build_qa_turn`."""
    question = task.doc_to_text(doc)
    choices = task.doc_to_choice(doc) if task.config.doc_to_choice else None
    answer = task.doc_to_target(doc)
    if task.multiple_input:  # the document's text is the index of its correct context
        question, choices = choices[question], None
    description = task.resolve_field(doc, task.config.description) or ""
    messages = task.build_qa_turn(
        q=question,
        c=choices,
        a=answer,
        gen_prefix=task.resolve_field(doc, task.config.gen_prefix),
        tgt_delim=task.config.target_delimiter,
        few_delim="",
    )
    text = description + "".join(message.to_text() for message in messages)
    user = description + messages[0].content
    return text, user, messages[1].content if len(messages) > 1 else ""


def _check_corpus_task(task: str, data_dir: Path | None) -> None:
    """An ``nll:<corpus>`` task names an installed dataset (did-you-mean otherwise) or a file
    with held-out texts; a local dataset's held-out texts are read (the hub's are not fetched
    before the model loads)."""
    corpus = locator.corpus_of_task(task)
    if corpus is None:
        return
    if not locator.is_file_corpus(corpus):
        locator.get_dataset(corpus)
        if data_dir is None:
            return
    locator.held_out_texts(corpus, data_dir)


def _skill_task(task: str, lm: Any, request: locator.EvaluationRequest) -> Any:
    """The lm-eval Task of one of locator's skill tasks, built for this request and model."""
    from lm_eval.api.task import ConfigurableTask

    build = SKILL_TASKS.get(task) or functools.partial(corpus_nll, task)
    return ConfigurableTask(config=build(lm, request.data_dir, request.limit))


def _unsafe(task: str) -> locator.LocatorError:
    return locator.LocatorError(
        f"lm-eval task {task!r} executes model output as code; locator never runs such tasks."
    )


@locator.hookimpl
def register_evaluators(register: Any) -> None:
    """Register the lm-eval backend."""
    register(LmEvalEvaluator())
