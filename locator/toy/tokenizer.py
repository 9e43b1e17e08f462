"""Word-level tokenizer for the toy testbed.

Every word of both generators is one token, so a text is split on whitespace and
looked up in a fixed table; nothing is learned. The ``tokenizers`` pipeline adds
``<bos>`` in front of every text (as Llama tokenizers do) but no ``<eos>``, so a
prompt such as ``"3 * 4 ="`` can be continued directly. The result is wrapped as a
``transformers`` fast tokenizer, so ``save_pretrained`` and
``AutoTokenizer.from_pretrained`` work as for any Hugging Face model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from locator.toy.data import END, vocabulary

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

PAD = "<pad>"
BOS = "<bos>"
EOS = END
UNK = "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
MAX_LENGTH = 64
"""Longest text the toy model is meant for (sentences and problems have at most 10 tokens)."""


def token_table() -> dict[str, int]:
    """Token ids: the special tokens first (pad is 0), then every word of both skills."""
    return {token: index for index, token in enumerate([*SPECIAL_TOKENS, *vocabulary()])}


def word_tokenizer(
    table: Mapping[str, int],
    *,
    bos: str,
    pad: str,
    unk: str,
    split: str = "WhitespaceSplit",
    pair: str | None = None,
    **options: Any,
) -> PreTrainedTokenizerFast:
    """A fast tokenizer that looks each word up in `table` (`split`: the `tokenizers`
    pre-tokenizer) and puts `bos` in front of every text; `options` go to
    `PreTrainedTokenizerFast` (``eos_token``, ``padding_side``, ...)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(dict(table), unk_token=unk))
    backend.pre_tokenizer = getattr(pre_tokenizers, split)()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=pair, special_tokens=[(bos, table[bos])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, pad_token=pad, unk_token=unk, **options
    )


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Build the toy tokenizer (deterministic: the same table every time)."""
    # Split on whitespace only: "=" or "." must stay words of their own, never merge.
    return word_tokenizer(
        token_table(),
        bos=BOS,
        pad=PAD,
        unk=UNK,
        pair=f"{BOS} $A {BOS} $B",
        eos_token=EOS,
        # Left padding lets batched generation append new tokens at the right end.
        padding_side="left",
        model_max_length=MAX_LENGTH,
    )
