"""Local-file sources of lm-eval tasks: the records of locator's datasets in a data directory
(the ``../shared/data`` layout), converted to the layout of the hub dataset an lm-eval task reads.

`LOCAL_SOURCES` maps lm-eval's dataset ids to a function that builds the local records by split
(RACE, for example, is grouped by article; WikiText by article); `local_overrides` turns one
task's config into the overrides that make lm-eval read them through its ``custom_dataset``
hook, never the hub. The lm-eval backend (`locator_plugins.evaluators`) applies them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from locator_plugins.datasets import MATH_SUBJECTS
from locator_plugins.skill_tasks import dataset_dict, require_dataset

import locator


class LocalData:
    """Local records of locator's datasets, each split read once per evaluation."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._records: dict[tuple[str, str], list[locator.Record]] = {}

    def splits(self, dataset: str) -> list[str]:
        """The dataset's splits present locally (an error if there are none)."""
        found = require_dataset(dataset)
        splits = found.local_splits(self.data_dir) if hasattr(found, "local_splits") else []
        if not splits:
            folder = self.data_dir / (getattr(found, "folder", None) or dataset)
            raise locator.LocatorError(
                f"no local files for dataset {dataset!r}: expected {folder}/<split>.jsonl "
                "(or .parquet, .csv)."
            )
        return list(splits)

    def records(self, dataset: str, split: str) -> list[locator.Record]:
        """The split's records in the hub layout of locator's dataset."""
        key = (dataset, split)
        if key not in self._records:
            self._records[key] = list(require_dataset(dataset).records(split, self.data_dir))
        return self._records[key]


Splits = dict[str, list[dict[str, Any]]]


def _fields(
    local: LocalData,
    dataset: str,
    fields: tuple[str, ...],
    default: Any = None,
    keep: Callable[[locator.Record], bool] = lambda record: True,
) -> Splits:
    """Every local split of `dataset`: the `fields` of each record `keep` accepts (`default` for
    a missing one)."""
    return {
        split: [
            {k: r.get(k, default) for k in fields} for r in local.records(dataset, split) if keep(r)
        ]
        for split in local.splits(dataset)
    }


def _gsm8k(config: str | None, local: LocalData) -> Splits:
    return _fields(local, "gsm8k", ("question", "answer"))


def _mmlu(config: str | None, local: LocalData) -> Splits:
    """One subject (the lm-eval subtask's config) or all; ``answer`` is an index."""
    fields = ("question", "subject", "choices", "answer")
    return _fields(
        local, "mmlu", fields, keep=lambda r: config in (None, "all") or r["subject"] == config
    )


def _race(config: str | None, local: LocalData) -> Splits:
    """EleutherAI/race's layout: one document per article, its questions in ``problems`` (a
    Python literal), for the level in `config` (``high``, ``middle``) as the test split."""
    splits = local.splits("race")  # the shared subset is one file: the test split here
    test = "test" if "test" in splits or len(splits) != 1 else splits[0]
    articles: dict[str, dict[str, Any]] = {}
    for r in local.records("race", test):
        level = re.sub(r"[^a-z].*", "", str(r.get("example_id", "")))  # "high1234.txt" -> high
        if config not in (None, "all") and level != config:
            continue
        article = articles.setdefault(
            str(r.get("example_id") or r["article"]), {"article": r["article"], "problems": []}
        )
        problem = {"question": r["question"], "options": r["options"], "answer": r["answer"]}
        article["problems"].append(problem)
    documents = [
        {"article": a["article"], "problems": repr(a["problems"])} for a in articles.values()
    ]
    return {"test": documents}


def _hendrycks_math(config: str | None, local: LocalData) -> Splits:
    """One MATH subject (the lm-eval subtask's config)."""
    subject = MATH_SUBJECTS.get(config or "")
    fields = ("problem", "level", "type", "solution")
    return _fields(local, "math", fields, "", lambda r: subject is None or r.get("type") == subject)


def _math500(config: str | None, local: LocalData) -> Splits:
    return _fields(
        local, "math500", ("problem", "solution", "answer", "subject", "level", "unique_id")
    )


def _is_title(text: str) -> bool:
    """A WikiText article title line, `` = Title = `` (section headings have more ``=``)."""
    stripped = text.strip()
    return stripped.startswith("= ") and stripped.endswith(" =") and not stripped.startswith("= =")


def _wikitext(config: str | None, local: LocalData) -> Splits:
    """EleutherAI/wikitext_document_level's layout: one ``page`` per article (the config,
    ``wikitext-2-raw-v1``, is the only one kept locally). The local
    validation and test files (``tokenized_valid``, ``tokenized_test``) are grouped into
    articles at their title lines, their lines joined with newlines (the hub's pages keep the
    blank lines, which the local files drop, and have no ``<unk>``, which these files have).
    The raw train sample has no titles: each of its paragraphs is a page."""
    splits: Splits = {}
    available = local.splits("wikitext")
    for split, name in (("validation", "tokenized_valid"), ("test", "tokenized_test")):
        if name not in available:
            continue
        pages: list[list[str]] = []
        path = require_dataset("wikitext").local_path(name, local.data_dir)
        for record in locator.read_records(path):  # with the title lines the dataset leaves out
            text = str(record["text"])
            if _is_title(text) or not pages:
                pages.append([])
            pages[-1].append(text)
        splits[split] = [{"page": "\n".join(lines)} for lines in pages]
    if "train" in available:
        splits["train"] = [{"page": str(r["text"])} for r in local.records("wikitext", "train")]
    return splits


LOCAL_SOURCES: dict[str, Callable[[str | None, LocalData], Splits]] = {
    "openai/gsm8k": _gsm8k,
    "cais/mmlu": _mmlu,
    "EleutherAI/race": _race,
    "EleutherAI/hendrycks_math": _hendrycks_math,
    "HuggingFaceH4/MATH-500": _math500,
    "EleutherAI/wikitext_document_level": _wikitext,
}
"""lm-eval dataset id -> the local records, by split, in that dataset's hub layout."""


def local_overrides(leaf: str, config: dict[str, Any], local: LocalData) -> dict[str, Any]:
    """The config overrides that make lm-eval task `leaf` read local files."""
    source = LOCAL_SOURCES[config["dataset_path"]]
    splits = {k: rows for k, rows in source(config.get("dataset_name"), local).items() if rows}
    overrides: dict[str, Any] = {
        "task": leaf,
        "custom_dataset": functools.partial(dataset_dict, splits),
    }
    few_shot_from_training = (
        (config.get("num_fewshot") or 0) > 0
        and not config.get("fewshot_split")
        and not (config.get("fewshot_config") or {}).get("samples")
    )
    for key in ("test_split", "fewshot_split", "training_split", "validation_split"):
        split = config.get(key)
        if not split or split in splits:
            continue
        if key in ("training_split", "validation_split") and not few_shot_from_training:
            overrides[key] = None  # unused here, and absent locally (MATH has no train copy)
            continue
        raise locator.LocatorError(
            f"lm-eval task {leaf!r} reads split {split!r} of {config['dataset_path']}, which "
            f"has no local copy (local splits: {', '.join(sorted(splits)) or 'none'})."
        )
    return overrides
