"""Evaluation of the toy model's two skills.

* ``toy-arithmetic`` (:func:`evaluate_arithmetic`): exact match of the greedily
  generated answer on all 710 problems, in a seeded order so that ``limit`` takes
  a representative sample. The problems are the training distribution itself: the
  skill is a fact table, and what locator measures is whether pruning removes it.
* ``toy-language`` (:func:`evaluate_language`): mean next-token loss (nats) on
  seeded held-out grammar sentences, over the same positions as
  :func:`locator.toy.data.language_optimum`, plus the share of those positions
  where the most likely next token is one the grammar allows.

Both run on the model's current in-memory weights (so they see pruning done in
place), in eval mode and without gradients, and restore the model's train/eval
mode afterwards. Both take about a second on one CPU thread.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from locator.toy.data import (
    FIRST_SCORED_WORD,
    ArithmeticProblem,
    arithmetic_problems,
    grammatical_next_words,
    sample_sentence,
)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

ARITHMETIC_TASK = "toy-arithmetic"
LANGUAGE_TASK = "toy-language"
LANGUAGE_TEST_SIZE = 2000
"""Default number of held-out sentences (about 12,000 scored positions)."""


def arithmetic_test_set() -> list[ArithmeticProblem]:
    """All arithmetic problems in a fixed shuffled order."""
    problems = arithmetic_problems()
    random.Random("toy-arithmetic-test:0").shuffle(problems)
    return problems


def language_test_set(num: int = LANGUAGE_TEST_SIZE) -> list[list[str]]:
    """``num`` held-out sentences (lists of words); the first N are the same for any ``num``.

    The seed stream is separate from training's, and the grammar has billions of
    sentences, so overlap with the training data is negligible.
    """
    rng = random.Random("toy-language-test:0")
    return [sample_sentence(rng) for _ in range(num)]


@contextmanager
def _inference(model: PreTrainedModel) -> Iterator[torch.device]:
    """Eval mode without gradients for the block; yields the model's device."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield next(model.parameters()).device
    finally:
        model.train(was_training)


def greedy_complete(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
) -> list[str]:
    """Greedy continuations of ``prompts`` (one batch), each cut before its first eos.

    Prompts are left-padded; position ids are counted from each prompt's first real
    token so padding does not shift them. Sequences are a few tokens long, so the
    whole sequence is recomputed each step instead of keeping a KV cache.
    """
    import torch

    with _inference(model) as device:
        encoded = tokenizer(list(prompts), padding=True, padding_side="left", return_tensors="pt")
        ids = encoded["input_ids"].to(device)
        mask = encoded["attention_mask"].to(device)
        finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)
        new_tokens = []
        for _ in range(max_new_tokens):
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(
                input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False
            ).logits[:, -1]
            next_ids = logits.argmax(-1)
            next_ids = torch.where(finished, tokenizer.pad_token_id, next_ids)
            new_tokens.append(next_ids)
            finished |= next_ids == tokenizer.eos_token_id
            ids = torch.cat([ids, next_ids[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            if finished.all():
                break
    completions = []
    for row in torch.stack(new_tokens, dim=1).tolist():
        if tokenizer.eos_token_id in row:
            row = row[: row.index(tokenizer.eos_token_id)]
        completions.append(str(tokenizer.decode(row)))
    return completions


def evaluate_arithmetic(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    limit: int | None = None,
    batch_size: int = 256,
) -> dict[str, float]:
    """Exact match (0-1) of greedy answers on the arithmetic test set (first ``limit`` problems).

    An answer counts only if the model writes the number and then stops (eos).
    """
    problems = arithmetic_test_set()[:limit]
    if not problems:
        raise ValueError("no arithmetic problems to evaluate")
    # Answers are one token; one more step is needed to see the eos.
    return exact_match(model, tokenizer, problems, batch_size, max_new_tokens=2)


def exact_match(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Any],
    batch_size: int,
    max_new_tokens: int,
) -> dict[str, float]:
    """Exact match (0-1) of the greedy answers to `problems` (each with a `prompt` and an
    `answer`), in batches of `batch_size`."""
    correct = 0
    for start in range(0, len(problems), batch_size):
        chunk = problems[start : start + batch_size]
        completions = greedy_complete(
            model, tokenizer, [problem.prompt for problem in chunk], max_new_tokens=max_new_tokens
        )
        correct += sum(
            completion.strip() == str(problem.answer)
            for completion, problem in zip(completions, chunk, strict=True)
        )
    return {"exact_match": correct / len(problems)}


def evaluate_language(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    limit: int | None = None,
    batch_size: int = 256,
) -> dict[str, float]:
    """Mean next-token loss (nats) and grammatical next-word rate on held-out sentences.

    Scored positions are those of :func:`locator.toy.data.language_optimum`: the
    predictions of the third word onward and of the end of the sentence. The loss
    is pooled over all scored positions of the first ``limit`` test sentences.
    """
    import torch

    sentences = language_test_set(limit if limit is not None else LANGUAGE_TEST_SIZE)
    if not sentences:
        raise ValueError("no sentences to evaluate")
    total_loss = 0.0
    grammatical = 0
    scored = 0
    with _inference(model) as device:
        for start in range(0, len(sentences), batch_size):
            chunk = sentences[start : start + batch_size]
            token_lists = [[tokenizer.bos_token, *words, tokenizer.eos_token] for words in chunk]
            length = max(len(tokens) for tokens in token_lists)
            ids = torch.full((len(chunk), length), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, tokens in enumerate(token_lists):
                ids[row, : len(tokens)] = torch.tensor(tokenizer.convert_tokens_to_ids(tokens))
                mask[row, : len(tokens)] = 1
            log_probs = torch.log_softmax(
                model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
                .logits.float()
                .cpu(),
                dim=-1,
            )
            predictions = log_probs.argmax(-1).tolist()
            for row, words in enumerate(chunk):
                # Position k (token k is word k-1, token 0 is bos) predicts word k, or END.
                for k in range(FIRST_SCORED_WORD, len(words) + 1):
                    total_loss -= log_probs[row, k, ids[row, k + 1]].item()
                    predicted = tokenizer.convert_ids_to_tokens(predictions[row][k])
                    grammatical += predicted in grammatical_next_words(words[:k])
                    scored += 1
    return {"loss": total_loss / scored, "grammatical": grammatical / scored}


TASKS: dict[str, Callable[..., dict[str, float]]] = {
    ARITHMETIC_TASK: evaluate_arithmetic,
    LANGUAGE_TASK: evaluate_language,
}
"""Evaluation function of each toy task, by task name."""
