"""How a corpus's texts become the token rows a statistics pass feeds the model.

By default each text is one row (truncated to `max_length` tokens when given); with `pack` = N the
texts are one token stream cut into rows of N tokens (`token_rows`). `batches` right-pads rows
into ``(input_ids, attention_mask)`` batches. A statistic kind may instead feed the model an input
of its own (`Feed`: a published code's input, reproduced).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from locator.errors import LocatorError


def check_batch_size(batch_size: object) -> None:
    """Raise unless `batch_size` is an integer >= 1."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise LocatorError(f"batch_size must be at least 1, got {batch_size!r}.")


def check_max_length(max_length: object) -> None:
    """Raise unless `max_length` is None (no truncation) or an integer >= 1."""
    if max_length is not None and (
        isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1
    ):
        raise LocatorError(
            f"max_length must be an integer >= 1 (tokens per text) or None for no "
            f"truncation, got {max_length!r}."
        )


def tokenize(tokenizer: object, texts: Sequence[str], max_length: int | None) -> list[list[int]]:
    """Token ids of each text, truncated to `max_length` tokens when given."""
    check_max_length(max_length)
    encoded = tokenizer(  # type: ignore[operator]
        list(texts),
        truncation=max_length is not None,
        max_length=max_length,
        add_special_tokens=True,
    )
    return [list(ids) for ids in encoded["input_ids"]]


def check_rows(max_length: int | None, pack: int | None) -> None:
    """Check how a corpus is to become token rows (before any model loads): `pack` a row length
    >= 1 or None, and not together with `max_length`."""
    if pack is None:
        return
    if isinstance(pack, bool) or not isinstance(pack, int) or pack < 1:
        raise LocatorError(f"pack must be a row length in tokens (an int >= 1), got {pack!r}.")
    if max_length is not None:
        raise LocatorError(
            f"give either max_length ({max_length}) or pack ({pack}), not both: packed rows are "
            "cut to the pack length."
        )


def token_rows(
    tokenizer: object, texts: Sequence[str], max_length: int | None, pack: int | None = None
) -> list[list[int]]:
    """The token rows a statistics pass feeds the model: how a corpus becomes its samples.

    By default one row per text (truncated to `max_length` tokens when given). With `pack` = N,
    the corpus is read as LAPE's original code reads it: every text's token ids (as the
    tokenizer encodes it, special tokens included), concatenated in corpus order into one stream
    and cut into rows of N tokens, the tail shorter than N dropped; attention then crosses the
    texts a row spans, and each row is one sample of every per-sample statistic.
    """
    check_rows(max_length, pack)
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


def corpus_rows(
    tokenizer: object,
    texts: Sequence[str],
    max_length: int | None,
    pack: int | None = None,
    corpus: str = "",
) -> list[list[int]]:
    """`token_rows` of a corpus that must have some: raises for no texts or no tokens."""
    label = corpus or "(unnamed)"
    if not texts:
        raise LocatorError(f"corpus {label} is empty: give at least one text.")
    rows = token_rows(tokenizer, texts, max_length, pack)
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
