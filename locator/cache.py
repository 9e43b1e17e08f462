"""An on-disk cache of activation statistics, so a second method, proportion or factor costs no
forward pass.

Entries are keyed by the model (config, dtype and a strided sample of every weight), the exact
token rows of the corpus (so tokenizer, texts, order, truncation and packing all count) and hold
one tensor per statistic kind and key, with the identity of the kind that computed it (name,
class, version, dtype): a kind whose identity changed is computed again. A request for kinds an
entry lacks collects only the missing kinds and extends the entry. Files are safetensors,
written atomically.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from locator.io import atomic_write
from locator.passes import collect_from_rows
from locator.provenance import weights_fingerprint
from locator.stats import ActivationStats, get_statistic


def model_fingerprint(model: nn.Module) -> str:
    """A hash of the model's config and weights (`locator.provenance.weights_fingerprint`)."""
    digest = hashlib.sha256(weights_fingerprint(model).encode())
    config = getattr(model, "config", None)
    if config is not None:
        digest.update(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
    return digest.hexdigest()


def corpus_fingerprint(token_ids: Sequence[Sequence[int]]) -> str:
    """A hash of the token ids of every text, in order."""
    digest = hashlib.sha256()
    for ids in token_ids:
        digest.update(json.dumps(list(ids)).encode() + b"\n")
    return digest.hexdigest()


def cached_statistics(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    rows: Sequence[Sequence[int]],
    *,
    cache_dir: str | Path | None,
    kinds: frozenset[str] | set[str],
    batch_size: int = 8,
    corpus: str = "",
    progress: bool = True,
    model_key: str | None = None,
) -> ActivationStats:
    """`locator.passes.collect_from_rows`, reading and extending an on-disk cache in
    `cache_dir` (None: no cache): the corpus's token `rows` (`locator.rows.corpus_rows`) key it
    and feed the pass.

    `model_key` (from `model_fingerprint`) may be passed to avoid hashing the model per corpus.
    """
    if cache_dir is None:
        return collect_from_rows(model, tokenizer, texts, rows, kinds, batch_size, corpus, progress)
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import save

    model_key = model_key or model_fingerprint(model)
    key = hashlib.sha256((model_key + corpus_fingerprint(rows)).encode()).hexdigest()[:32]
    path = Path(cache_dir) / f"statistics-{key}.safetensors"
    values: dict[str, dict[str, torch.Tensor]] = {}
    header: dict[str, Any] = {}
    if path.is_file():
        try:
            with safe_open(str(path), framework="pt") as handle:
                header = json.loads((handle.metadata() or {})["locator"])
                if not isinstance(header, dict):
                    raise ValueError("a header that is not a JSON object")
                for tensor_key in handle.keys():
                    kind, name = tensor_key.split("/", 1)
                    values.setdefault(kind, {})[name] = handle.get_tensor(tensor_key)
        except (SafetensorError, OSError, KeyError, ValueError):
            values, header = {}, {}  # a damaged entry is a miss: recomputed and rewritten
    # A kind counts as cached only if the same computation (its identity) produced it; an entry
    # from another version of a kind is computed again and replaced.
    identities = {name: get_statistic(name).identity for name in kinds}
    stored = header.get("identities", {})
    missing = {name for name in kinds if name not in values or stored.get(name) != identities[name]}
    if missing or not header:
        fresh = collect_from_rows(
            model, tokenizer, texts, rows, missing, batch_size, corpus, progress
        )
        values.update({kind: dict(v) for kind, v in fresh.values.items()})
        header = {
            "num_samples": fresh.num_samples,
            "num_tokens": fresh.num_tokens,
            "identities": {**stored, **{kind: identities[kind] for kind in missing}},
        }
        tensors = {f"{k}/{n}": t.contiguous() for k, v in values.items() for n, t in v.items()}
        atomic_write(path, save(tensors, metadata={"locator": json.dumps(header)}))
    return ActivationStats(
        corpus=corpus,
        num_samples=header["num_samples"],
        num_tokens=header["num_tokens"],
        values={kind: values[kind] for kind in kinds},
    )
