"""Train the toy two-skill model from a seed.

The model is a tiny ``LlamaForCausalLM`` (4 layers, hidden size 64, MLP size 256,
4 heads, untied embeddings; about 320k parameters). Each step draws a fresh batch:
60% arithmetic texts, whose loss counts only the answer and the end token (the
operands are random, there is nothing to learn in them), and 40% grammar sentences,
whose loss counts every next token. AdamW with linear warm-up and cosine decay, in
fp32, on one CPU thread with torch's deterministic algorithms.

What is reproducible: the same seed, step count, torch version and CPU instruction set
give byte-identical weights (the data order and the initial weights depend only on the
seed). Another CPU (another SIMD level or BLAS kernel, even on a machine sold as the same
kind) rounds differently in the last bits, and training amplifies that: such a run reaches
the same quality, not the same weights (measured: final loss 2.1951 vs 2.1993, arithmetic
0.9901 vs 0.9859).

Run ``python -m locator.toy.train --out DIR``; :func:`main` takes an argument list
so a CLI command can call it, and :func:`train` is the plain function under it.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from locator.toy.data import ArithmeticProblem, language_texts, sample_arithmetic_problems
from locator.toy.tokenizer import BOS, EOS, MAX_LENGTH, PAD, build_tokenizer, token_table

if TYPE_CHECKING:
    import torch
    from transformers import LlamaForCausalLM

TRAINING_FILE = "toy_training.json"
"""The recipe file `train` writes into the model folder; it marks the folder as its own."""

IGNORE_INDEX = -100
"""Label value that the Hugging Face causal-LM loss skips."""


def build_model(seed: int = 0) -> LlamaForCausalLM:
    """A freshly initialised toy Llama whose weights depend only on ``seed``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    table = token_table()
    config = LlamaConfig(
        vocab_size=len(table),
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=MAX_LENGTH,
        tie_word_embeddings=False,
        bos_token_id=table[BOS],
        eos_token_id=table[EOS],
        pad_token_id=table[PAD],
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).float()


Example = tuple[list[int], list[int]]
"""One text's token ids and its labels (`IGNORE_INDEX` where the loss does not count)."""


def problem_examples(problems: Sequence[ArithmeticProblem]) -> list[Example]:
    """The problems with their answers, only the answer and the end token counting in the loss
    (the operands are random, there is nothing to learn in them)."""
    table = token_table()
    examples = []
    for problem in problems:
        ids = [table[BOS]] + [table[word] for word in problem.text.split()] + [table[EOS]]
        prompt_length = 1 + len(problem.prompt.split())
        examples.append((ids, [IGNORE_INDEX] * prompt_length + ids[prompt_length:]))
    return examples


def training_examples(
    rng: random.Random, *, batch_size: int, arithmetic_fraction: float
) -> list[Example]:
    """One training batch's examples drawn from `rng`: arithmetic problems, then sentences."""
    table = token_table()
    num_arithmetic = round(batch_size * arithmetic_fraction)
    examples = problem_examples(sample_arithmetic_problems(num_arithmetic, rng))
    for sentence in language_texts(batch_size - num_arithmetic, rng):
        ids = [table[BOS]] + [table[word] for word in sentence.split()] + [table[EOS]]
        # Every token is a target; the one at index 0 (bos) is dropped by the loss's shift.
        examples.append((ids, list(ids)))
    return examples


def pad_batch(examples: Sequence[Example]) -> dict[str, torch.Tensor]:
    """The examples right-padded into one batch (input ids, attention mask, labels)."""
    import torch

    pad = token_table()[PAD]
    length = max(len(ids) for ids, _ in examples)
    input_ids = [ids + [pad] * (length - len(ids)) for ids, _ in examples]
    labels = [labels + [IGNORE_INDEX] * (length - len(labels)) for _, labels in examples]
    mask = [[1] * len(ids) + [0] * (length - len(ids)) for ids, _ in examples]
    return {
        "input_ids": torch.tensor(input_ids),
        "attention_mask": torch.tensor(mask),
        "labels": torch.tensor(labels),
    }


def learning_rate_factor(
    step: int, *, steps: int, warmup_steps: int, final_fraction: float
) -> float:
    """Multiplier of the peak learning rate: linear warm-up, then cosine to ``final_fraction``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps - 1)
    return final_fraction + (1 - final_fraction) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, progress))
    )


def train(
    out_dir: str | Path,
    *,
    seed: int = 0,
    steps: int = 1000,
    batch_size: int = 128,
    arithmetic_fraction: float = 0.6,
    learning_rate: float = 3e-3,
    betas: tuple[float, float] = (0.9, 0.98),
    weight_decay: float = 0.01,
    warmup_steps: int = 30,
    final_lr_fraction: float = 0.05,
    max_grad_norm: float = 1.0,
    threads: int | None = 1,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Train the toy model from ``seed`` and save it as a Hugging Face folder at ``out_dir``.

    The folder holds ``config.json``, ``model.safetensors``, the tokenizer files and
    ``toy_training.json`` (the recipe, wall time and final loss). ``threads`` sets
    torch's CPU thread count while training (restored afterwards); keep it at 1 for
    bit-reproducible weights. An existing model folder at ``out_dir`` is replaced only
    with ``force`` and only if this function wrote it; the folder appears whole or not at
    all. Returns the folder.
    """
    import torch
    from tqdm.auto import tqdm

    from locator.errors import LocatorError
    from locator.io import atomic_directory, check_output_directory

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise LocatorError(f"steps must be an integer >= 1, got {steps!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise LocatorError(f"seed must be an integer >= 0, got {seed!r}.")
    out = check_output_directory(out_dir, owned=is_toy_model, what="a toy model", force=force)
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    if threads is not None:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        started = time.perf_counter()
        rng = random.Random(seed)
        model = build_model(seed)
        model.train()
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=learning_rate, betas=betas, weight_decay=weight_decay
        )
        bar = tqdm(range(steps), desc="toy training", disable=not progress)
        loss_value = float("nan")
        for step in bar:
            factor = learning_rate_factor(
                step, steps=steps, warmup_steps=warmup_steps, final_fraction=final_lr_fraction
            )
            for group in optimizer.param_groups:
                group["lr"] = learning_rate * factor
            examples = training_examples(
                rng, batch_size=batch_size, arithmetic_fraction=arithmetic_fraction
            )
            loss = model(**pad_batch(examples)).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            loss_value = loss.item()
            if step % 10 == 0 or step == steps - 1:
                bar.set_postfix(loss=f"{loss_value:.3f}")
        wall_seconds = time.perf_counter() - started
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic)

    model.eval()
    recipe = {
        "seed": seed,
        "steps": steps,
        "batch_size": batch_size,
        "arithmetic_fraction": arithmetic_fraction,
        "learning_rate": learning_rate,
        "betas": list(betas),
        "weight_decay": weight_decay,
        "warmup_steps": warmup_steps,
        "final_lr_fraction": final_lr_fraction,
        "max_grad_norm": max_grad_norm,
        "threads": threads,
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "final_batch_loss": loss_value,
        "wall_seconds": round(wall_seconds, 1),
        "torch_version": torch.__version__,
    }

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        build_tokenizer().save_pretrained(folder)
        (folder / TRAINING_FILE).write_text(json.dumps(recipe, indent=2) + "\n")

    return atomic_directory(out, write, replace=force)


def is_toy_model(folder: Path) -> bool:
    """Whether `folder` is a model folder written by `train` (it holds the recipe file)."""
    return (folder / TRAINING_FILE).is_file()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: train, save to ``--out`` and print the evaluation of the result."""
    parser = argparse.ArgumentParser(
        prog="python -m locator.toy.train", description="Train the locator toy model."
    )
    parser.add_argument("--out", required=True, type=Path, help="folder to write the model to")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    parser.add_argument("--force", action="store_true", help="replace a toy model folder")
    args = parser.parse_args(argv)

    folder = train(args.out, seed=args.seed, steps=args.steps, force=args.force)
    print(f"saved to {folder}")
    if not args.no_eval:
        from locator.toy import load_toy_model
        from locator.toy.data import language_optimum
        from locator.toy.evaluate import evaluate_arithmetic, evaluate_language

        model, tokenizer = load_toy_model(folder)
        arithmetic = evaluate_arithmetic(model, tokenizer)
        language = evaluate_language(model, tokenizer)
        print(f"arithmetic exact match: {arithmetic['exact_match']:.4f}")
        print(
            f"language loss: {language['loss']:.4f} nats "
            f"(optimum {language_optimum():.4f}), grammatical: {language['grammatical']:.4f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
