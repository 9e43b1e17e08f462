"""An independent held-out check of a skill x skill matrix that `locator bench` measured.

For one method label, proportion and seed of a matrix suite's results folder, this script
re-measures every cell (removed skill, measured skill) without locator's evaluation or
intervention code: it reads each skill's saved selection file itself (safetensors; per
parameter its flat indices or a packed bit mask), zeroes those entries of the loaded model with
plain torch indexing, scores each measured skill's held-out texts one text at a time, restores
the entries, and compares with the suite's value. The unedited model is checked the same way.

What is scored mirrors the suite's ``nll:<corpus>`` tasks (lm-eval's rolling loglikelihood as
lm-eval 0.4.13 computes it for a Hugging Face model):

- the texts: ``locator.heldout.held_out_texts(corpus, data_dir)``, shuffled by
  ``random.Random(0)`` (the fixed order of locator's skill tasks), the first ``limit`` of them;
- the tokens: ``tokenizer.encode(text)`` with the tokenizer's default special tokens (none
  when the text starts with the prefix token's text), every token scored, the first one
  predicted after one prefix token (the tokenizer's BOS, else its EOS). A tokenizer that
  prepends BOS, as Gemma's does, thus has the text's own BOS scored after the prefix BOS:
  -log p(<bos> | <bos>) is part of every text's NLL (languages-cpu's rows count 160 tokens for
  the 157 of its first three English paragraphs);
- a text longer than the model's context is scored in windows of that many tokens, each
  window's tokens predicted from the tokens just before them (at most a context's worth);
- ``nll_per_byte``: the summed -log p (nats) of all scored tokens of all texts over their
  summed UTF-8 bytes; ``nll_per_token``: over their summed token counts.

Here log-probabilities are computed in float32 and summed in float64, batch 1, so the check is
also independent of the suite's batching and padding. A bfloat16 suite differs from it by
rounding: lm-eval takes the log-softmax in the model's dtype and rounds each text's summed
log-likelihood to it (bfloat16 keeps 8 significant bits: a relative error up to 2^-9 = 0.2%),
and batched and single-text forward passes round differently. The default tolerance is thus 1%
relative for 16-bit models (about five times that rounding) and 1e-4 for 32-bit ones.

Only cells measured by an ``nll:<corpus>`` task are checked (the others are listed as skipped).
Exit status: 0 when every checked cell agrees within the tolerance, 1 when one does not, 2 for
bad input. Run from the project root, e.g.:

    python benchmarks/check_matrix.py results/languages-cpu --method lape --proportion 0.02 \\
        --seed 0 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from locator.bench.results import read_json, read_results
from locator.bench.suite import declared_skills
from locator.errors import LocatorError
from locator.heldout import corpus_of_task, held_out_texts
from locator.models import load_model

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ORDER_SEED = 0
"""Seed of the fixed order in which locator's skill tasks take their first `limit` texts."""
TOLERANCES = {torch.bfloat16: 1e-2, torch.float16: 1e-2, torch.float32: 1e-4, torch.float64: 1e-4}
"""Default relative tolerance by the loaded model's dtype (see the module docs)."""


def selected_indices(path: Path) -> dict[str, torch.Tensor]:
    """Parameter name -> flat int64 indices of the entries a locator selection file selects,
    read from the file itself (tensors ``<name>.indices`` or ``<name>.bits``, a big-endian
    packed mask, and the shapes in the ``locator`` JSON metadata)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        shapes = json.loads(handle.metadata()["locator"])["shapes"]
        found = {}
        for name, shape in shapes.items():
            if f"{name}.indices" in handle.keys():
                found[name] = handle.get_tensor(f"{name}.indices").to(torch.int64)
            else:
                bits = handle.get_tensor(f"{name}.bits").numpy()
                mask = np.unpackbits(bits, count=math.prod(shape)).astype(bool)
                found[name] = torch.from_numpy(np.flatnonzero(mask))
    return found


def context_length(model: Any) -> int:
    """The model's context in tokens, as lm-eval reads it from the config."""
    config = getattr(model.config, "text_config", None) or model.config
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        if getattr(config, name, None) is not None:
            return int(getattr(config, name))
    raise LocatorError("the model's config states no context length.")


@torch.inference_mode()
def text_nll(model: Any, tokenizer: Any, text: str) -> tuple[float, int]:
    """(summed -log p in nats, scored token count) of one text (see the module docs)."""
    prefix = (
        tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    )
    # lm-eval adds no special tokens to a text that starts with the prefix token's text
    tokens = tokenizer.encode(
        text,
        **({} if not text.startswith(tokenizer.decode(prefix)) else {"add_special_tokens": False}),
    )
    sequence = [prefix, *tokens]  # sequence[i] is predicted from sequence[:i]
    window = context_length(model)
    total, done = 0.0, 0
    while done < len(tokens):
        end = min(done + window, len(tokens))  # this window predicts sequence[done + 1 : end + 1]
        start = max(0, end - window)
        logits = model(input_ids=torch.tensor([sequence[start:end]])).logits[0]
        logp = torch.log_softmax(logits.float(), dim=-1).double()
        for i in range(done + 1, end + 1):
            total -= float(logp[i - 1 - start, sequence[i]])
        done = end
    return total, len(tokens)


def measure(model: Any, tokenizer: Any, texts: Sequence[str], metric: str) -> float:
    """One metric (``nll_per_byte`` or ``nll_per_token``) of `texts`, one text at a time."""
    scored = [text_nll(model, tokenizer, text) for text in texts]
    units = (
        sum(len(text.encode("utf-8")) for text in texts)
        if metric == "nll_per_byte"
        else sum(count for _, count in scored)
    )
    return sum(nll for nll, _ in scored) / units


def check(arguments: argparse.Namespace) -> int:
    """Measure, print the table and return the exit status (0 agree, 1 a cell differs)."""
    directory = Path(arguments.results)
    manifest = directory / "_suite.json"
    if not manifest.is_file():
        raise LocatorError(f"{str(manifest)!r} does not exist: give a `locator bench` folder.")
    source = read_json(manifest)["source"]
    skills = declared_skills(source, manifest)
    if not skills:
        raise LocatorError(f"{str(directory)!r} holds no matrix suite ([[skills]]).")
    rows = [
        row
        for row in read_results(directory).to_pylist()
        if row["label"] == arguments.method
        and math.isclose(row["proportion"], arguments.proportion)
        and row["seed"] == arguments.seed
        and row["factor"] == 0.0
    ]
    if not rows:
        raise LocatorError(
            f"no pruned rows of method {arguments.method!r} at proportion "
            f"{arguments.proportion} and seed {arguments.seed} in {str(directory)!r}."
        )
    models = {(row["model"], row["dtype"], row["num_samples"]) for row in rows}
    if len(models) > 1:
        raise LocatorError(f"rows of several models or sample counts {sorted(models)}.")
    ((model_name, dtype, _),) = models
    data_dir = arguments.data_dir
    if data_dir is None and "data_dir" in (recorded := tomllib.loads(source)):
        data_dir = Path(__file__).parent / recorded["data_dir"]  # shipped suites live here

    by_cell = {(row["target"], row["task"], row["metric"]): row for row in rows}
    model, tokenizer = load_model(model_name, dtype=dtype)
    tolerance = arguments.tolerance or TOLERANCES[next(model.parameters()).dtype]
    texts = {}
    for skill in skills:
        corpus = corpus_of_task(skill.task)
        limits = [
            r["limit"] for r in rows if (r["task"], r["metric"]) == (skill.task, skill.metric)
        ]
        if corpus is not None and limits and skill.metric in ("nll_per_byte", "nll_per_token"):
            ordered = held_out_texts(corpus, data_dir)
            random.Random(ORDER_SEED).shuffle(ordered)
            texts[skill.name] = ordered[: limits[0]]
    parameters = dict(model.named_parameters())

    print(
        f"{model_name} ({dtype}), {arguments.method} at proportion {arguments.proportion}, "
        f"seed {arguments.seed}; relative tolerance {tolerance:g}"
    )
    print(f"{'removed':<12} {'measured':<12} {'suite':>10} {'check':>10} {'diff':>10} {'rel':>8}")
    failed = False
    for removed in (None, *skills):
        edits = {}
        if removed is not None:
            found = [r for r in rows if r["target"] == removed.corpus]
            if not found:
                print(f"{removed.name:<12} (no rows: not measured)")
                continue
            with torch.no_grad():
                for key, indices in selected_indices(directory / found[0]["selection"]).items():
                    flat = parameters[key].data.view(-1)
                    edits[key] = (indices, flat[indices].clone())
                    flat[indices] = 0
        try:
            for measured in skills:
                failed |= _compare(model, tokenizer, removed, measured, texts, by_cell, tolerance)
        finally:
            with torch.no_grad():
                for key, (indices, saved) in edits.items():
                    parameters[key].data.view(-1)[indices] = saved
    return 1 if failed else 0


def _compare(
    model: Any,
    tokenizer: Any,
    removed: Any,
    measured: Any,
    texts: dict[str, list[str]],
    by_cell: dict[tuple[str, str, str], dict[str, Any]],
    tolerance: float,
) -> bool:
    """Measure one cell (`removed` None: the unedited model), print its line; True when it
    differs from the suite's value beyond `tolerance`."""
    name = "(unedited)" if removed is None else removed.name
    row = next(
        (
            r
            for (target, task, metric), r in by_cell.items()
            if (task, metric) == (measured.task, measured.metric)
            and (removed is None or target == removed.corpus)
        ),
        None,
    )
    if measured.name not in texts or row is None:
        print(f"{name:<12} {measured.name:<12} skipped ({measured.task} {measured.metric})")
        return False
    expected = row["baseline_value"] if removed is None else row["value"]
    found = measure(model, tokenizer, texts[measured.name], measured.metric)
    relative = abs(found - expected) / abs(expected)
    print(
        f"{name:<12} {measured.name:<12} {expected:>10.5f} {found:>10.5f} "
        f"{found - expected:>+10.5f} {relative:>8.3%}"
        + ("" if relative <= tolerance else "  DIFFERS")
    )
    return not relative <= tolerance


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docs)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a matrix suite's results folder (`locator bench --out`)")
    parser.add_argument("--method", required=True, help="method label, e.g. lape")
    parser.add_argument("--proportion", required=True, type=float)
    parser.add_argument("--seed", required=True, type=int)
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="the suite's data folder (default: its data_dir, relative to benchmarks/)",
    )
    parser.add_argument("--tolerance", type=float, help="relative; default by dtype (see docs)")
    arguments = parser.parse_args(argv)
    try:
        return check(arguments)
    except LocatorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
