"""Reference modes: the authors' published arithmetic against slow loops written from its
description (batch 1, bf16 running sums), entry for entry up to exact ties at a cut."""

import pytest

import locator
from locator.testing import sample_texts

from . import reference

TARGET = sample_texts(6, seed=31)
CONTROLS = [sample_texts(5, seed=32)]


def flat_set(mask, transposed):
    """Flat [d_out, d_in] indices of a stored-layout mask."""
    matrix = mask.t() if transposed else mask
    return set(matrix.flatten().nonzero()[:, 0].tolist())


@pytest.mark.parametrize("proportion", [0.01, 0.1])
def test_published_mathneuro_matches_the_bf16_batch1_loop(model, tokenizer, proportion):
    expected = reference.mathneuro_published(model, tokenizer, TARGET, CONTROLS, proportion)
    result = locator.localize(
        model,
        tokenizer,
        method="mathneuro",
        options={"mode": "published"},
        target=TARGET,
        controls=CONTROLS,
        proportion=proportion,
        batch_size=4,
        progress=False,
    )
    parameters = locator.scored_parameters(model, head=True)
    assert set(result.selections) == set(parameters)
    for name, parameter in parameters.items():
        chosen = flat_set(result.masks[name], parameter.transposed)
        if name not in expected:  # Conv1D, a tied head: the published code selects nothing
            assert not chosen, name
            continue
        wanted, ties = expected[name]
        assert chosen - ties == wanted - ties, name
        assert len(chosen) <= int(parameter.numel * proportion)
    if type(model).__name__.startswith("GPT2"):
        assert result.count() == 0  # GPT-2's linears are Conv1D and its head is tied
    else:
        assert "lm_head.weight" in expected and result.selections["lm_head.weight"].count > 0


def test_random_matched_to_a_published_selection_copies_its_head_count(llama, tokenizer):
    published = locator.localize(
        llama,
        tokenizer,
        method="mathneuro",
        options={"mode": "published"},
        target=TARGET,
        controls=CONTROLS,
        proportion=0.1,
        progress=False,
    )
    matched = locator.localize(
        llama,
        tokenizer,
        method="random",
        target=TARGET,
        proportion=0.1,
        reference=published,
        progress=False,
    )
    assert matched.counts() == published.counts()
    assert matched.selections["lm_head.weight"].count > 0
