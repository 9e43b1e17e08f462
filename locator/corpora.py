"""Corpus values beyond dataset names: files of texts and evaluation tasks as skills.

A calibration corpus is named by one string (`corpus_kind`):

- ``task:<task>``: the documents of an evaluation task (``task:gsm8k_cot``,
  ``task:path/to/my_task.yaml``), each rendered as the task presents an answered example, from a
  split the task does not evaluate (`sample_any_corpus`). The skill is then measured by the
  task itself, so calibration and evaluation never share a document;
- a file of texts: a value that is a file, ends in ``.jsonl`` or has a ``/``
  (`locator.heldout.is_file_corpus`); calibration draws from the texts not held out for
  ``nll:<file>`` (`locator.heldout.calibration_texts`);
- otherwise a dataset name (`locator.data.sample_split`); where the dataset's held-out texts
  are a hashed fifth of its calibration split (`locator.heldout`), calibration draws from the
  other four fifths (split label ``<split>-calibration``). This holds for every one-split
  dataset, the toy corpora, ``python-code``, ``math500`` and the shared RACE subset included,
  so that no calibration text is ever scored by ``nll:<dataset>``.

`evaluation_task` names the task that measures a corpus's skill on texts calibration never
sees; `sample_any_corpus` draws from any of the three (`locator.data.sample_corpus` without a
split, so the CLI, `locator.localize` and suites, goes through it); `check_corpus` checks a value
before any model loads (an unknown dataset, a missing file, a task with no split left for
calibration).

The evaluator that serves a task gives its calibration texts through a method
``calibration_texts(task, data_dir) -> (split, [(text, user, assistant)])``; an evaluator
without it cannot turn its tasks into corpora.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from locator.data import Corpus, draw_texts, get_dataset, sample_split
from locator.errors import LocatorError
from locator.heldout import (
    NLL_PREFIX,
    calibration_texts,
    held_out_part,
    is_file_corpus,
    is_held_out,
)

TASK_PREFIX = "task:"
"""A corpus ``task:<task>`` is the calibration documents of an evaluation task."""


def corpus_kind(value: str) -> Literal["task", "file", "dataset"]:
    """What a corpus value names (see the module docs; the task prefix is read first, so
    ``task:tasks/my.yaml`` is a task)."""
    if value.startswith(TASK_PREFIX):
        return "task"
    return "file" if is_file_corpus(value) else "dataset"


def evaluation_task(value: str) -> str:
    """The evaluation task of a corpus value's skill, disjoint from its calibration texts: the
    task itself for ``task:<task>``, else ``nll:<value>`` (its held-out texts)."""
    return _task_name(value) if corpus_kind(value) == "task" else f"{NLL_PREFIX}{value}"


def _task_name(value: str) -> str:
    task = value[len(TASK_PREFIX) :] if value.startswith(TASK_PREFIX) else value
    if not task.strip():
        raise LocatorError(f"corpus {value!r} names no task: write task:<evaluation task>.")
    return task


def task_calibration(task: str, data_dir: str | Path | None) -> tuple[str, list[Any]]:
    """``(split, [(text, user, assistant)])`` of evaluation task `task` from the evaluator that
    serves it (unknown tasks: a did-you-mean). Raises a one-line `LocatorError` when the task
    has no split left for calibration; called before any model loads."""
    from locator.evaluation import route

    task = _task_name(task)
    ((evaluator, _),) = route([task])
    give = getattr(evaluator, "calibration_texts", None)
    if give is None:
        raise LocatorError(
            f"evaluator {evaluator.name!r} (task {task!r}) gives no calibration texts; "
            "calibrate on a dataset or a file of texts instead."
        )
    found: tuple[str, list[Any]] = give(task, None if data_dir is None else Path(data_dir))
    return found


def sample_any_corpus(
    value: str,
    *,
    num_samples: int,
    seed: int = 0,
    replace: bool = False,
    data_dir: str | Path | None = None,
) -> Corpus:
    """`num_samples` calibration texts of a corpus value (see the module docs) drawn under
    `seed`, never one its ``nll:<corpus>`` task (or, for ``task:<task>``, the task) scores. A
    task's corpus is labelled ``task:<task>:<split>:...``; its `Corpus.turns` are each
    document's prompt and target."""
    kind = corpus_kind(value)
    label = value
    items: Sequence[Any]
    if kind == "task":  # documents (text, user, assistant) of a split the task does not evaluate
        name = _task_name(value)
        split, items = task_calibration(name, data_dir)
        where, label = f"task {name!r} split {split!r}", f"{TASK_PREFIX}{name}"
        text, turns = (lambda doc: doc[0]), (lambda doc: (doc[1], doc[2]))
    elif kind == "file":
        items, split, text, turns = calibration_texts(value), "calibration", str, None
        where = f"file {value!r} (less its held-out fifth)"
    else:
        directory = None if data_dir is None else Path(data_dir)
        if directory is not None and not directory.exists():
            raise LocatorError(f"data directory {str(directory)!r} does not exist.")
        dataset = get_dataset(value)
        part = held_out_part(dataset, directory)
        if not part.hashed:
            return sample_split(
                value, split=None, num_samples=num_samples, seed=seed, replace=replace,
                data_dir=data_dir,
            )  # fmt: skip
        records = dataset.records(part.split, directory)
        items = [record for record in records if not is_held_out(dataset.format(record))]
        split = f"{part.split}-calibration"
        where = f"dataset {value!r} split {part.split!r} (less its held-out fifth)"
        text, turns = dataset.format, dataset.turns
    return draw_texts(
        items, where, "texts for calibration", text, turns, dataset=label, split=split,
        num_samples=num_samples, seed=seed, replace=replace,
    )  # fmt: skip


def check_corpus(value: str, *, data_dir: str | Path | None = None) -> None:
    """Raise a one-line `LocatorError` for a corpus value that cannot give calibration texts,
    before any model loads: an unknown dataset (with a did-you-mean), a missing or empty
    file, a task no evaluator serves or with no split left for calibration (its data is
    read). A dataset's records are not read (the hub may be slow)."""
    kind = corpus_kind(value)
    if kind == "task":
        task_calibration(value, data_dir)
    elif kind == "file":
        calibration_texts(value)
    else:
        get_dataset(value)
