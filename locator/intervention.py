"""The intervention engine: the only code in locator that edits weights.

`intervene` multiplies the selected entries by a factor (0 prunes, 1.1 scales) inside a `with`
block and restores them bit for bit on exit, also when the block raises. It saves only the touched
entries, so a small localization on a large model costs little memory and time. `apply` makes the
same edit permanently, for exporting an edited model with `save_pretrained` (`save_edited`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from locator.errors import LocatorError
from locator.io import atomic_directory, atomic_write, check_output_directory
from locator.localization import Localization

if TYPE_CHECKING:
    from locator.models import ModelOptions


def check_factor(factor: Any) -> float:
    """The intervention factor as a float; raise unless it is a finite real number (not bool).

    The one rule for factors, applied by `intervene`, `apply`, the CLI and suites alike.
    """
    if (
        isinstance(factor, bool)
        or not isinstance(factor, (int, float))
        or not math.isfinite(factor)
    ):
        raise LocatorError(
            f"factor must be a finite number (0 prunes, 1.1 scales by 10%), got {factor!r}."
        )
    return float(factor)


def _edit(
    model: nn.Module, localization: Localization, factor: float
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Scale the selected entries in place; return (flat weight, indices, old values) per edit."""
    factor = check_factor(factor)
    if not isinstance(localization, Localization):
        raise LocatorError(
            f"expected a Localization, got {type(localization).__name__}; read a file with "
            "locator.Localization.load(path)."
        )
    localization.check(model)
    parameters = dict(model.named_parameters())
    saved = []
    try:
        with torch.no_grad():
            for name, selection in localization.selections.items():
                if selection.count == 0:
                    continue
                weight = parameters[name].data
                if not weight.is_contiguous():
                    raise RuntimeError(f"{name} is not contiguous; cannot edit it in place")
                flat = weight.view(-1)
                indices = selection.indices().to(flat.device)
                old = flat.index_select(0, indices)  # a copy: the saved entries
                saved.append((flat, indices, old))
                if factor == 0:  # pruning: no scaled copy to build
                    flat.index_fill_(0, indices, 0.0)
                else:
                    flat.index_copy_(0, indices, old * factor)
    except BaseException:
        _restore(saved)
        raise
    return saved


def _restore(saved: list[tuple[Tensor, Tensor, Tensor]]) -> None:
    with torch.no_grad():
        for flat, indices, old in reversed(saved):
            flat.index_copy_(0, indices, old)


@contextmanager
def intervene(model: nn.Module, localization: Localization, factor: float) -> Iterator[nn.Module]:
    """Multiply the selected entries by `factor` inside the block; restore them exactly after.

    Example::

        with locator.intervene(model, localization, 0.0):  # prune
            evaluate(model)
    """
    saved = _edit(model, localization, factor)
    try:
        yield model
    finally:
        _restore(saved)


def apply(model: nn.Module, localization: Localization, factor: float) -> nn.Module:
    """Multiply the selected entries by `factor` permanently and return the model."""
    _edit(model, localization, factor)
    return model


EDIT_FILE = "locator_edit.json"
"""What `save_edited` records in the folder it writes (and what marks the folder as its own)."""


def save_edited(
    model: ModelOptions,
    localization: str | Path,
    factor: float,
    out: str | Path,
    *,
    force: bool = False,
) -> tuple[Localization, Path]:
    """Load `model`, scale the entries of the localization file by `factor` (`apply`) and save
    the model and its tokenizer as a normal HF folder `out` (``locator edit``); return the
    localization and the folder.

    Every check is made before the model loads. The folder records the edit in
    `EDIT_FILE` and in config.json (``locator_edit``): method, proportion, factor, count, the
    file's name, its `content_hash` and provenance. It appears whole or not at all; an existing
    folder is replaced only with `force` and only if this function wrote it.
    """
    check_factor(factor)
    folder = check_output_directory(
        out, owned=lambda p: (p / EDIT_FILE).is_file(), what="an edited model", force=force
    )
    model.check()
    found = Localization.load(localization)
    loaded, tokenizer = model.load()
    apply(loaded, found, factor)
    record = {
        "method": found.method,
        "proportion": found.proportion,
        "factor": factor,
        "count": found.count(),
        "localization": Path(localization).name,
        "localization_hash": found.content_hash(),
        "base_model": model.path,
        "provenance": dict(found.provenance),
    }
    loaded.config.locator_edit = {k: v for k, v in record.items() if k != "provenance"}

    def write(temporary: Path) -> None:
        loaded.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
        atomic_write(temporary / EDIT_FILE, json.dumps(record, indent=2, default=str))

    atomic_directory(folder, write, replace=force)
    return found, folder
