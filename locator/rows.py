"""How a corpus's texts become the token rows a statistics pass feeds the model.

By default each text is one row (truncated to `max_length` tokens when given); with `pack` = N the
texts are one token stream cut into rows of N tokens (`token_rows`). A row never exceeds the
model's positions (`model_positions`): a longer text is cut to its first tokens, as `max_length`
would cut it, and a `pack` longer than them is refused (`check_positions`), so the memory of a
pass is bounded by its batch, never by the longest text. `batches` right-pads rows into
``(input_ids, attention_mask)`` batches. A statistic kind may instead feed the model an input
of its own (`Feed`: a published code's input, reproduced).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from locator.data import CalibrationOptions
from locator.errors import LocatorError, LocatorWarning


def tokenize(tokenizer: object, texts: Sequence[str], max_length: int | None) -> list[list[int]]:
    """Token ids of each text, truncated to `max_length` tokens when given."""
    encoded = tokenizer(  # type: ignore[operator]
        list(texts),
        truncation=max_length is not None,
        max_length=max_length,
        add_special_tokens=True,
    )
    return [list(ids) for ids in encoded["input_ids"]]


def token_rows(
    tokenizer: object, texts: Sequence[str], max_length: int | None, pack: int | None = None
) -> list[list[int]]:
    """The token rows a statistics pass feeds the model: how a corpus becomes its samples.

    By default one row per text (truncated to `max_length` tokens when given). With `pack` = N,
    the corpus is read as LAPE's original code reads it: every text's token ids (as the
    tokenizer encodes it, special tokens included), concatenated in corpus order into one stream
    and cut into rows of N tokens, the tail shorter than N dropped; attention then crosses the
    texts a row spans, and each row is one sample of every per-sample statistic. The values
    are those of a `locator.CalibrationOptions`, which checked them.
    """
    if pack is None:
        return tokenize(tokenizer, texts, max_length)
    stream = [token for ids in tokenize(tokenizer, texts, None) for token in ids]
    return [stream[start : start + pack] for start in range(0, len(stream) - pack + 1, pack)]


def batches(
    token_ids: Sequence[Sequence[int]], batch_size: int, pad_id: int = 0, keep_order: bool = False
) -> Iterator[tuple[Tensor, Tensor]]:
    """Right-padded ``(input_ids, attention_mask)`` batches, ``[batch, seq]`` each.

    Texts are grouped longest first so that batches carry little padding (sums do not depend
    on the order), or kept in corpus order with `keep_order`. Texts with no tokens are skipped
    (they add nothing to any statistic).
    """
    order = [i for i, ids in enumerate(token_ids) if ids]
    if not keep_order:
        order.sort(key=lambda i: -len(token_ids[i]))
    for start in range(0, len(order), batch_size):
        rows = [token_ids[i] for i in order[start : start + batch_size]]
        length = len(rows[0])
        input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for row, ids in enumerate(rows):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        yield input_ids, attention_mask


POSITION_KEYS = ("max_position_embeddings", "n_positions", "n_ctx")
"""The config keys that give a model's positions, in the order lm-eval's Hugging Face model
reads them for its maximum length."""


def model_positions(model: object) -> int | None:
    """The most tokens `model` (or its config) takes in one row: the first of `POSITION_KEYS`
    its (text) config sets, or None when it sets none (no limit is then applied)."""
    config = getattr(model, "config", model)
    text_config = getattr(config, "get_text_config", None)
    for source in (text_config() if callable(text_config) else None, config):
        for key in POSITION_KEYS:
            value = getattr(source, key, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def input_device(model: nn.Module) -> torch.device:
    """Where token ids go: the input embedding's device, since with a device map (accelerate)
    the blocks sit on other devices (each hook accumulates on its own module's device); the
    first parameter's for a model without `get_input_embeddings`."""
    embeddings = getattr(model, "get_input_embeddings", None)
    weight = embeddings().weight if callable(embeddings) else next(model.parameters())
    return weight.device


def check_positions(positions: int | None, pack: int | None) -> None:
    """Refuse a `pack` row longer than the model's `positions` (cutting every packed row would
    silently make it another row length); call it as soon as the model's config is known."""
    if positions is not None and pack is not None and pack > positions:
        raise LocatorError(
            f"pack {pack} is longer than the model's {positions} positions; give pack <= "
            f"{positions}."
        )


def fit_positions(
    rows: list[list[int]], positions: int | None, corpus: str = ""
) -> list[list[int]]:
    """`rows` with every row longer than `positions` cut to its first `positions` tokens (the
    rule `max_length` = `positions` applies; recorded in a localization's provenance), with a
    `LocatorWarning` saying how many were cut."""
    if positions is None:
        return rows
    cut = sum(1 for row in rows if len(row) > positions)
    if cut:
        warnings.warn(
            f"corpus {corpus or '(unnamed)'}: {cut} of {len(rows)} texts are longer than the "
            f"model's {positions} positions and are cut to their first {positions} tokens "
            "(recorded in the provenance; give max_length to cut them shorter).",
            LocatorWarning,
            stacklevel=2,
        )
    return [row[:positions] for row in rows]


def check_texts(texts: Sequence[str], corpus: str = "") -> None:
    """Refuse a corpus with no texts, or whose texts are all empty or blank: it would select
    from the special tokens alone (a chat template that renders nothing is caught here too)."""
    label = corpus or "(unnamed)"
    if not texts:
        raise LocatorError(f"corpus {label} is empty: give at least one text.")
    if not any(isinstance(text, str) and text.strip() for text in texts):
        raise LocatorError(
            f"corpus {label}: all {len(texts)} texts are empty or blank; give texts with content."
        )


def check_corpora(corpora: Sequence[tuple[str, Sequence[str]]]) -> None:
    """The checks of a request's corpora (``(label, texts)``, the target first) that need no
    model: each has content (`check_texts`) and no control holds the target's very texts, in
    any order (removing the target's own top entries selects nothing)."""
    for label, texts in corpora:
        check_texts(texts, label)
    if not corpora:
        return
    target_label, target = corpora[0]
    for label, texts in corpora[1:]:
        if sorted(texts) == sorted(target):  # in another order: the same statistics
            raise LocatorError(
                f"the control corpus {label!r} holds the same texts as the target "
                f"{target_label!r}: removing the target's own entries selects nothing; give a "
                "control that differs from the target."
            )


def check_corpus_names(target: str, controls: Sequence[str]) -> None:
    """`check_corpora` on names alone (a suite's corpora, before anything is drawn): a control
    named as the target would be drawn as the very same texts."""
    if target in controls:
        raise LocatorError(
            f"the control {target!r} is the target itself: removing the target's own entries "
            "selects nothing; give a control that differs from the target."
        )


def corpus_rows(
    tokenizer: object,
    texts: Sequence[str],
    calibration: CalibrationOptions,
    corpus: str = "",
    positions: int | None = None,
) -> list[list[int]]:
    """`token_rows` of a corpus as `calibration` reads it, which must have some: raises for no
    texts, texts without content or no tokens. With the model's `positions`, a longer row is
    cut to them (`fit_positions`) and a longer `pack` refused (`check_positions`)."""
    label = corpus or "(unnamed)"
    max_length, pack = calibration.max_length, calibration.pack
    check_positions(positions, pack)
    check_texts(texts, corpus)
    rows = fit_positions(token_rows(tokenizer, texts, max_length, pack), positions, label)
    if not any(rows):
        unit = "" if pack is None else f" in rows of {pack} (a shorter tail is dropped)"
        raise LocatorError(f"corpus {label} has no tokens after tokenization{unit}.")
    return rows


class Feed:
    """What a pass feeds the model instead of the corpus's padded, masked token rows: the input
    of a published code, reproduced. Subclass it as a frozen dataclass (its repr is part of the
    statistics' cache key) and implement `prepare`."""

    def prepare(
        self, model: nn.Module, tokenizer: Any, texts: Sequence[str]
    ) -> tuple[nn.Module, list[Tensor]]:
        """The model to run (`model`, or a copy when the feed must change it; never change
        `model` itself) and the ``[batch, seq]`` input ids to feed it. Each batch runs without an
        attention mask, and every position, padding included, is observed as a token."""
        raise NotImplementedError(f"{type(self).__name__} does not implement prepare()")
