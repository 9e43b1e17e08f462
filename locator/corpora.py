"""Corpus values beyond dataset names: files of texts and evaluation tasks as skills.

A calibration corpus is named by one string (`corpus_kind`):

- ``task:<task>``: the documents of an evaluation task (``task:gsm8k_cot``,
  ``task:path/to/my_task.yaml``), each rendered as the task presents an answered example, from a
  split the task does not evaluate (`sample_task_corpus`). The skill is then measured by the
  task itself, so calibration and evaluation never share a document;
- a file of texts: a value that is a file, ends in ``.jsonl`` or has a ``/``
  (`locator.heldout.is_file_corpus`); calibration uses the texts not held out for
  ``nll:<file>`` (`locator.heldout.calibration_texts`);
- otherwise a dataset name (`locator.data.sample_corpus`).

The evaluator that serves a task gives its calibration texts through a method
``calibration_texts(task, data_dir) -> (split, [(text, user, assistant)])``; an evaluator
without it cannot turn its tasks into corpora.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Literal

from locator.data import Corpus
from locator.errors import LocatorError
from locator.heldout import is_file_corpus

TASK_PREFIX = "task:"
"""A corpus ``task:<task>`` is the calibration documents of an evaluation task."""


def corpus_kind(value: str) -> Literal["task", "file", "dataset"]:
    """What a corpus value names (see the module docs; the task prefix is read first, so
    ``task:tasks/my.yaml`` is a task)."""
    if value.startswith(TASK_PREFIX):
        return "task"
    return "file" if is_file_corpus(value) else "dataset"


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
    calibration_texts = getattr(evaluator, "calibration_texts", None)
    if calibration_texts is None:
        raise LocatorError(
            f"evaluator {evaluator.name!r} (task {task!r}) gives no calibration texts; "
            "calibrate on a dataset or a file of texts instead."
        )
    return calibration_texts(task, None if data_dir is None else Path(data_dir))  # type: ignore[no-any-return]


def sample_task_corpus(
    task: str,
    *,
    num_samples: int,
    seed: int = 0,
    replace: bool = False,
    data_dir: str | Path | None = None,
) -> Corpus:
    """`num_samples` calibration texts of evaluation task `task` (with or without the
    ``task:`` prefix) drawn under `seed`, as `locator.data.sample_corpus` draws a dataset's: its
    documents from a split it does not evaluate, each rendered as the task presents an answered
    example (prompt, target delimiter, target); `Corpus.turns` split them into the prompt and
    the target for calibration through a chat template. Labelled ``task:<task>:<split>:...``."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise LocatorError(f"num_samples must be a positive integer, got {num_samples!r}.")
    name = _task_name(task)
    split, documents = task_calibration(name, data_dir)
    if not replace and num_samples > len(documents):
        raise LocatorError(
            f"task {name!r} split {split!r} has {len(documents)} documents; cannot draw "
            f"{num_samples} without replacement (draw fewer, or use replace=True / --replace)."
        )
    rng = random.Random(seed)
    positions = range(len(documents))
    chosen = (
        rng.choices(positions, k=num_samples) if replace else rng.sample(positions, num_samples)
    )
    return Corpus(
        dataset=f"{TASK_PREFIX}{name}",
        split=split,
        num_samples=num_samples,
        seed=seed,
        replace=replace,
        texts=tuple(documents[i][0] for i in chosen),
        turns=tuple((documents[i][1], documents[i][2]) for i in chosen),
    )
