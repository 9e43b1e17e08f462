"""Tests of the shipped toy checkpoint, the evaluators and the trainer."""

import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from locator.toy import checkpoint_path, load_toy_model
from locator.toy.data import language_optimum
from locator.toy.evaluate import (
    TASKS,
    evaluate_arithmetic,
    evaluate_language,
    greedy_complete,
)
from locator.toy.train import learning_rate_factor, train

ARITHMETIC_THRESHOLD = 0.95
LANGUAGE_MARGIN = 0.1


def assert_meets_thresholds(model: torch.nn.Module, tokenizer: object) -> None:
    """The thresholds the shipped model (and a retrained one) must meet."""
    assert evaluate_arithmetic(model, tokenizer)["exact_match"] >= ARITHMETIC_THRESHOLD
    language = evaluate_language(model, tokenizer)
    assert language["loss"] - language_optimum() < LANGUAGE_MARGIN
    assert language["grammatical"] > 0.99


@pytest.fixture(scope="module")
def toy() -> tuple[torch.nn.Module, object]:
    return load_toy_model()


def test_checkpoint_is_a_small_hugging_face_folder() -> None:
    folder = checkpoint_path()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (folder / name).is_file(), name
    assert (folder / "model.safetensors").stat().st_size < 2_000_000


def test_shipped_checkpoint_meets_thresholds(toy: tuple[torch.nn.Module, object]) -> None:
    model, tokenizer = toy
    assert not model.config.tie_word_embeddings
    assert 300_000 < sum(p.numel() for p in model.parameters()) < 340_000
    assert_meets_thresholds(model, tokenizer)


def test_greedy_answers(toy: tuple[torch.nn.Module, object]) -> None:
    model, tokenizer = toy
    # Prompts of different lengths exercise left padding and position ids.
    completions = greedy_complete(
        model, tokenizer, ["3 * 4 =", "12 + 7 =", "9 - 9 ="], max_new_tokens=2
    )
    assert completions == ["12", "19", "0"]


def test_evaluation_sees_in_memory_weights_and_keeps_mode(
    toy: tuple[torch.nn.Module, object],
) -> None:
    model, tokenizer = toy
    model.train()
    saved = model.lm_head.weight.detach().clone()
    try:
        with torch.no_grad():
            model.lm_head.weight.zero_()  # every logit equal: no answer can be produced
        assert evaluate_arithmetic(model, tokenizer, limit=50)["exact_match"] < 0.1
        loss = evaluate_language(model, tokenizer, limit=50)["loss"]
        assert math.isclose(loss, math.log(model.config.vocab_size), rel_tol=1e-6)
        assert model.training
    finally:
        with torch.no_grad():
            model.lm_head.weight.copy_(saved)
        model.eval()


def test_limit(toy: tuple[torch.nn.Module, object]) -> None:
    model, tokenizer = toy
    first = evaluate_language(model, tokenizer, limit=100)
    assert first == evaluate_language(model, tokenizer, limit=100)
    assert first != evaluate_language(model, tokenizer, limit=50)
    assert set(evaluate_arithmetic(model, tokenizer, limit=10)) == {"exact_match"}
    assert set(TASKS) == {"toy-arithmetic", "toy-language"}


def test_learning_rate_schedule() -> None:
    kwargs = {"steps": 1000, "warmup_steps": 30, "final_fraction": 0.05}
    assert math.isclose(learning_rate_factor(29, **kwargs), 1.0)
    assert learning_rate_factor(0, **kwargs) < 0.05
    assert math.isclose(learning_rate_factor(999, **kwargs), 0.05)


def test_short_training_writes_a_loadable_folder(tmp_path: Path) -> None:
    folder = train(tmp_path / "toy", steps=3, batch_size=16, progress=False)
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert model.config.vocab_size == len(tokenizer)
    assert (folder / "toy_training.json").is_file()
    again = train(tmp_path / "again", steps=3, batch_size=16, progress=False)
    reloaded = AutoModelForCausalLM.from_pretrained(again)
    for (name, first), (_, second) in zip(
        model.state_dict().items(), reloaded.state_dict().items(), strict=True
    ):
        assert torch.equal(first, second), name


@pytest.mark.slow
def test_retraining_from_the_seed_meets_thresholds(tmp_path: Path) -> None:
    folder = train(tmp_path / "toy", seed=0, progress=False)
    model, tokenizer = load_toy_model(folder)
    assert_meets_thresholds(model, tokenizer)
