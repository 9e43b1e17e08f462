"""Locator's own lm-eval tasks: skill metrics that are cheap and sensitive on small models.

Each is an lm-eval task config (``loglikelihood``, ``loglikelihood_rolling`` or
``generate_until``) built per evaluation, because its items come from locator's datasets (the
hub, or local copies in a data directory) and its token counts from the model's tokenizer:

- ``gsm8k_nll``: GSM8K test solutions given their question (``Question: {question}\\nAnswer:``
  then `` {answer}``, the worked solution with its ``#### N`` line), loglikelihood;
- ``math_nll``: MATH test solutions given the problem (``Problem: ...\\nSolution:``);
- ``wikitext_nll``: WikiText-2 paragraphs (the train split: locally the raw sample), rolling;
- ``race_nll``: RACE articles (each once), rolling;
- ``python_nll``: chunks of Python source (the ``python-code`` dataset), rolling;
- ``nll:<corpus>``: the held-out texts of any corpus a localization calibrates on, a dataset
  name or a JSON Lines file (``nll:handbook-fr``, ``nll:gsm8k``, ``nll:texts.jsonl``; what is
  held out: `locator.heldout`), each formatted text scored whole as calibration sees it, rolling;
- ``arithmetic_fewshot``: generated problems (seeded: two- and three-digit ``+`` and ``-``,
  two-digit by one-digit ``*``) asked as ``Q: 23 + 58 =\\nA:`` after 5 solved examples, a
  greedy answer of at most 8 tokens up to a newline, exact match of the number.

The NLL tasks report ``nll_per_token`` (nats per token of the scored text, lower is better:
the summed negative log-likelihood over all items divided by their summed token counts, the
counts being those lm-eval scores, from the model's own tokenizer) and ``nll_per_byte`` (the
same over UTF-8 bytes, comparable between tokenizers). Items are the dataset's records in a
fixed seeded order, so ``limit`` takes a random subset (MATH's and RACE's files are sorted by
subject and level).
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import locator

ORDER_SEED = 0
"""Seed of the fixed order of every task's items."""

ARITHMETIC_TEST_SIZE = 1000
ARITHMETIC_SHOTS = 5
ARITHMETIC_MAX_TOKENS = 8


def per_unit(items: Sequence[tuple[float, int]]) -> float:
    """lm-eval aggregation of ``(nll, units)`` pairs: total NLL over total units."""
    units = sum(n for _, n in items)
    return sum(nll for nll, _ in items) / units if units else float("nan")


def per_item(value: Any) -> tuple[float, float] | None:
    """``(value, weight)`` of one item's ``(nll, units)`` sample entry."""
    nll, units = value
    return (nll / units, float(units)) if units else None


def _nll_results(doc: dict[str, Any], results: Sequence[Any]) -> dict[str, tuple[float, int]]:
    """``nll_per_token`` and ``nll_per_byte`` entries of one item (rolling results are a
    log-likelihood, loglikelihood results a (log-likelihood, is-greedy) pair)."""
    (result,) = results
    loglikelihood = result[0] if isinstance(result, tuple) else result
    return {
        "nll_per_token": (-float(loglikelihood), int(doc["tokens"])),
        "nll_per_byte": (-float(loglikelihood), len(doc["scored"].encode("utf-8"))),
    }


NLL_METRICS = [
    {"metric": name, "aggregation": per_unit, "higher_is_better": False}
    for name in ("nll_per_token", "nll_per_byte")
]


def _split(dataset: str, preferred: str, data_dir: Path | None) -> str:
    """`preferred`, or the only split a local folder has (the shared RACE subset)."""
    found = require_dataset(dataset)
    if data_dir is None or not hasattr(found, "local_splits"):
        return preferred
    local = found.local_splits(data_dir)
    return preferred if preferred in local or len(local) != 1 else local[0]


def require_dataset(name: str) -> locator.Dataset:
    """Dataset `name`, which the built-in ``datasets`` plugin registers: the lm-eval backend
    reads its local copies, and its skill tasks their items, through that plugin's datasets
    (and `MATH_SUBJECTS`), so a one-line error names the plugin when it is not loaded."""
    try:
        return locator.get_dataset(name)
    except locator.UnknownNameError:
        raise locator.LocatorError(
            f"the lm-eval backend reads dataset {name!r} through the built-in 'datasets' "
            f"plugin, which is not loaded; add it to {locator.LOAD_PLUGINS_VARIABLE}."
        ) from None


def _records(dataset: str, split: str, data_dir: Path | None) -> list[locator.Record]:
    return list(require_dataset(dataset).records(split, data_dir))


def _ordered(rows: list[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    """The rows in the fixed seeded order, the first `limit` of them."""
    rows = list(rows)
    random.Random(ORDER_SEED).shuffle(rows)
    return rows[:limit]


def dataset_dict(splits: dict[str, list[dict[str, Any]]], **_: Any) -> Any:
    """lm-eval's ``custom_dataset`` callable (it passes task metadata as keywords): each split's
    rows."""
    import datasets

    return datasets.DatasetDict({s: datasets.Dataset.from_list(r) for s, r in splits.items()})


def _base(name: str, splits: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return {
        "task": name,
        "dataset_path": "json",  # not read: `custom_dataset` supplies the rows
        "custom_dataset": functools.partial(dataset_dict, splits),
        "test_split": "test",
        "fewshot_split": "test",
        "metadata": {"version": 1.0},
    }


def _context(doc: dict[str, Any]) -> str:
    return str(doc["context"])


def _scored(doc: dict[str, Any]) -> str:
    """The scored text, exactly (a template would be rendered and may strip it)."""
    return str(doc["scored"])


def _continuations(
    name: str, pairs: list[tuple[str, str]], lm: Any, limit: int | None
) -> dict[str, Any]:
    """A loglikelihood task scoring `` {continuation}`` after each context."""
    rows = []
    for row in _ordered([{"c": c, "t": t} for c, t in pairs], limit):
        tokens = len(lm._encode_pair(row["c"], " " + row["t"])[1])  # what lm-eval scores
        if tokens > lm.max_length:
            raise locator.LocatorError(
                f"task {name!r}: an item's continuation has {tokens} tokens, more than the "
                f"model's context of {lm.max_length}; use a model with a longer context."
            )
        rows.append({"context": row["c"], "scored": " " + row["t"], "tokens": tokens})
    return {
        **_base(name, {"test": rows}),
        "output_type": "loglikelihood",
        "doc_to_text": _context,
        "doc_to_target": _scored,
        "target_delimiter": "",  # the scored text starts with its space
        "process_results": _nll_results,
        "metric_list": NLL_METRICS,
    }


def _texts(name: str, texts: list[str], lm: Any, limit: int | None) -> dict[str, Any]:
    """A loglikelihood_rolling task scoring each text whole."""
    rows = [
        {"scored": row["scored"], "tokens": len(lm.tok_encode(row["scored"]))}
        for row in _ordered([{"scored": text} for text in texts], limit)
    ]
    return {
        **_base(name, {"test": rows}),
        "output_type": "loglikelihood_rolling",
        "doc_to_text": "",
        "doc_to_target": _scored,
        "process_results": _nll_results,
        "metric_list": NLL_METRICS,
    }


def _gsm8k_nll(lm: Any, data_dir: Path | None, limit: int | None) -> dict[str, Any]:
    records = _records("gsm8k", "test", data_dir)
    pairs = [(f"Question: {r['question']}\nAnswer:", r["answer"]) for r in records]
    return _continuations("gsm8k_nll", pairs, lm, limit)


def _math_nll(lm: Any, data_dir: Path | None, limit: int | None) -> dict[str, Any]:
    records = _records("math", "test", data_dir)
    pairs = [(f"Problem: {r['problem']}\nSolution:", r["solution"]) for r in records]
    return _continuations("math_nll", pairs, lm, limit)


def _wikitext_nll(lm: Any, data_dir: Path | None, limit: int | None) -> dict[str, Any]:
    dataset = require_dataset("wikitext")
    records = _records("wikitext", "train", data_dir)
    texts = [dataset.format(r) for r in records if dataset.keep(r)]
    return _texts("wikitext_nll", texts, lm, limit)


def _race_nll(lm: Any, data_dir: Path | None, limit: int | None) -> dict[str, Any]:
    records = _records("race", _split("race", "test", data_dir), data_dir)
    articles = list(dict.fromkeys(str(r["article"]).strip() for r in records))
    return _texts("race_nll", articles, lm, limit)


def _python_nll(lm: Any, data_dir: Path | None, limit: int | None) -> dict[str, Any]:
    texts = [str(r["text"]) for r in _records("python-code", "all", data_dir)]
    return _texts("python_nll", texts, lm, limit)


def corpus_nll(task: str, lm: Any, data_dir: Path | None, limit: int | None) -> dict[str, Any]:
    """The task ``nll:<corpus>``: the rolling NLL of the corpus's held-out texts."""
    corpus = locator.corpus_of_task(task)
    if corpus is None:
        raise locator.LocatorError(f"{task!r} is not an nll:<corpus> task.")
    return _texts(task, locator.held_out_texts(corpus, data_dir), lm, limit)


def arithmetic_problems(count: int, seed: int) -> list[dict[str, str]]:
    """`count` problems ``{"question": "23 + 58", "answer": "81"}`` drawn under `seed`: sums
    and differences of two- and three-digit numbers, products of a two-digit and a one-digit
    number, in equal shares."""
    rng = random.Random(seed)
    problems = []
    for index in range(count):
        operation = "+-*"[index % 3]
        if operation == "*":
            a, b = rng.randint(10, 99), rng.randint(2, 9)
        else:
            a, b = rng.randint(10, 999), rng.randint(10, 999)
        answer = {"+": a + b, "-": a - b, "*": a * b}[operation]
        problems.append({"question": f"{a} {operation} {b}", "answer": str(answer)})
    return problems


NUMBER = re.compile(r"-?\d+")


def _arithmetic_results(doc: dict[str, Any], results: Sequence[str]) -> dict[str, float]:
    """Exact match of the first integer in the answer."""
    found = NUMBER.search(results[0])
    return {"exact_match": float(found is not None and found.group() == doc["answer"])}


def _arithmetic(lm: Any, data_dir: Path | None, limit: int | None) -> dict[str, Any]:
    splits = {
        "train": arithmetic_problems(100, seed=1),
        "test": arithmetic_problems(ARITHMETIC_TEST_SIZE, seed=0)[:limit],
    }
    return {
        **_base("arithmetic_fewshot", splits),
        "fewshot_split": "train",
        "num_fewshot": ARITHMETIC_SHOTS,
        "output_type": "generate_until",
        "doc_to_text": "Q: {{question}} =\nA:",
        "doc_to_target": "{{answer}}",
        "target_delimiter": " ",
        "fewshot_delimiter": "\n\n",
        "generation_kwargs": {
            "until": ["\n"],
            "max_gen_toks": ARITHMETIC_MAX_TOKENS,
            "do_sample": False,
        },
        "process_results": _arithmetic_results,
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
    }


SKILL_TASKS: dict[str, Callable[[Any, Path | None, int | None], dict[str, Any]]] = {
    "gsm8k_nll": _gsm8k_nll,
    "math_nll": _math_nll,
    "wikitext_nll": _wikitext_nll,
    "race_nll": _race_nll,
    "python_nll": _python_nll,
    "arithmetic_fewshot": _arithmetic,
}
"""Locator's own lm-eval tasks: name -> ``build(lm, data_dir, limit)``, the lm-eval task config
for this evaluation (`lm` is lm-eval's model wrapper, for token counts; `limit` the first items
of the fixed order)."""
