"""What a file locator writes was made from: the model's identity, versions, corpora.

A localization, an edited model folder and every results row record the model they belong to
(its hub id and revision or its path, a fingerprint of its weights, its dtype), so a file shared
across machines and months can be checked against the model it is used with.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from locator.io import sha256_of

if TYPE_CHECKING:
    from locator.data import CalibrationOptions

DISTRIBUTION = "skill-locator"
"""The distribution (pip) name of locator; the import name is ``locator``."""

_SAMPLES_PER_WEIGHT = 257


def version(distribution: str) -> str | None:
    """The installed version of `distribution`, or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """Versions of locator, torch and transformers."""
    return {
        "locator": version(DISTRIBUTION),
        "torch": version("torch"),
        "transformers": version("transformers"),
    }


def weights_fingerprint(model: Any) -> str:
    """A cheap hash of the weights: every parameter's name, shape, dtype and a strided sample
    of its values (257 per tensor), so two checkpoints of one architecture differ."""
    import torch

    digest = hashlib.sha256(type(model).__name__.encode())
    for name, parameter in model.named_parameters():
        flat = parameter.detach().reshape(-1)
        step = max(1, flat.numel() // _SAMPLES_PER_WEIGHT)
        sample = flat[::step].to("cpu", torch.float64)
        digest.update(f"{name}:{list(parameter.shape)}:{parameter.dtype}".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:32]


def model_identity(model: Any) -> dict[str, Any]:
    """``{"name", "revision", "fingerprint", "dtype"}``: where the model came from (hub id or
    path as loaded; the hub commit when known) and what its weights are."""
    config = getattr(model, "config", None)
    name = getattr(model, "name_or_path", None) or getattr(config, "_name_or_path", "") or ""
    dtype = getattr(model, "dtype", None)
    return {
        "name": str(name),
        "revision": getattr(config, "_commit_hash", None),
        "fingerprint": weights_fingerprint(model),
        "dtype": str(dtype).removeprefix("torch.") if dtype is not None else None,
    }


def texts_hash(texts: Iterable[str]) -> str:
    """A hash of a corpus's texts, in order."""
    digest = hashlib.sha256()
    for text in texts:
        encoded = text.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little") + encoded)
    return digest.hexdigest()[:32]


def file_hash(path: str | Path) -> str:
    """A hash of a file's bytes."""
    return sha256_of(path)[:32]


def describe_model_difference(
    recorded: Mapping[str, Any], current: Mapping[str, Any]
) -> str | None:
    """What differs between two model identities in words, or None when the weights match."""
    if recorded.get("fingerprint") in (None, current.get("fingerprint")):
        return None
    parts = [f"weights fingerprint {recorded['fingerprint'][:12]} vs {current['fingerprint'][:12]}"]
    for key in ("name", "revision", "dtype"):
        if recorded.get(key) != current.get(key):
            parts.append(f"{key} {recorded.get(key)!r} vs {current.get(key)!r}")
    return ", ".join(parts)


def with_provenance(
    localization: Any,
    *,
    model: dict[str, Any],
    corpora: Iterable[tuple[str, Any]],
    calibration: CalibrationOptions,
    positions: int | None = None,
    reference: Any = None,
) -> Any:
    """`localization` recording the model identity, versions, how each corpus became rows
    (`calibration`'s `max_length`, `pack` and `batch_size`, and `positions`: the model's
    positions every longer row was cut to, `locator.rows.fit_positions`), each corpus
    (``(label, texts)``: its label, text count and content hash) and the `reference` a matched
    baseline copied its counts from (its `content_hash`): every input that changes a
    selection, so two different selections never carry identical provenance."""
    from dataclasses import replace

    described = [
        {"label": label, "texts": len(texts), "sha256": texts_hash(texts)}
        for label, texts in corpora
    ]
    provenance = {
        **localization.provenance,
        "model": model,
        "versions": versions(),
        "max_length": calibration.max_length,
        "pack": calibration.pack,
        "batch_size": calibration.batch_size,
        "positions": positions,
        "corpora": described,
        "reference": None if reference is None else reference.content_hash(),
    }
    return replace(localization, provenance=provenance)
