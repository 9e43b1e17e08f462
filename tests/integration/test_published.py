"""Reference modes: the authors' published arithmetic against slow loops written from its
description (batch 1, bf16 running sums), entry for entry up to exact ties at a cut."""

import copy

import pytest
import torch

import locator
from locator.testing import sample_texts

from . import reference
from .test_wanda_lape import activation_modules, family_of

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


# LAPE.py of the MathNeuro repository: only each dataset's last text counts, line by line. The
# control's last text is one long line (its padded blank line counts too) and the target's many
# short ones, so that the set LAPE.py applies, the first dataset's, is not empty.
LAPE_CONTROL = [*sample_texts(3, seed=41), " ".join(sample_texts(8, seed=42, min_words=6))]
LAPE_TARGET = [
    *sample_texts(3, seed=43),
    "\n".join(sample_texts(4, seed=44, max_words=4)) + "\r\none two\rthree",
]


def lape_neurons(model, tokenizer, proportion, filter_rate, bar, controls=(LAPE_CONTROL,)):
    result = locator.localize(
        model,
        tokenizer,
        method="lape",
        options={"mode": "published", "filter_rate": filter_rate, "activation_bar_ratio": bar},
        target=LAPE_TARGET,
        controls=list(controls),
        proportion=proportion,
        progress=False,
    )
    assert result.level == "neuron"
    return {name: set(neurons.tolist()) for name, neurons in result.neurons.items()}


@pytest.mark.parametrize(
    "top_rate, filter_rate, bar", [(0.05, 0.95, 0.95), (0.3, 0.8, 0.9), (0.6, 0.5, 0.5)]
)
def test_published_lape_matches_the_scripts_behaviour(
    model, tokenizer, tmp_path, top_rate, filter_rate, bar
):
    activations = activation_modules(model, family_of(model))
    datasets = [LAPE_CONTROL, LAPE_TARGET]  # LAPE.py: calibration datasets, then the train set
    expected, ties = reference.lape_published(
        model, tokenizer, datasets, activations, top_rate, filter_rate, bar, tmp_path
    )
    found = lape_neurons(model, tokenizer, top_rate, filter_rate, bar)
    assert set(found) == set(expected)
    for name, neurons in found.items():
        assert {j for j in neurons if (name, j) not in ties} == {
            j for j in expected[name] if (name, j) not in ties
        }, name
    if top_rate == 0.6:  # not vacuous: the first dataset's set is not empty here
        assert sum(1 for n, js in expected.items() for j in js if (n, j) not in ties) > 5


def test_published_lape_applies_the_first_controls_neurons_not_the_targets(llama, tokenizer):
    faithful = locator.localize(
        llama,
        tokenizer,
        method="lape",
        target=LAPE_TARGET,
        controls=[LAPE_CONTROL],
        proportion=0.6,
        progress=False,
    )
    published = lape_neurons(llama, tokenizer, 0.6, 0.5, 0.5)
    swapped = lape_neurons(llama, tokenizer, 0.6, 0.5, 0.5, controls=(LAPE_TARGET, LAPE_CONTROL))
    assert published != swapped  # which dataset comes first decides the set applied
    assert published != {n: set(js.tolist()) for n, js in faithful.neurons.items()}


def test_published_lape_adds_a_pad_token_on_copies(llama, tokenizer):
    """A tokenizer without a pad token gets "[PAD]" and the model a resized embedding, as
    LAPE.py does, but on copies: the caller's model and tokenizer are unchanged."""
    no_pad = copy.deepcopy(tokenizer)
    no_pad.pad_token = None
    rows = llama.get_input_embeddings().num_embeddings
    before = copy.deepcopy(llama.state_dict())
    first = lape_neurons(llama, no_pad, 0.6, 0.5, 0.5)
    assert first == lape_neurons(llama, no_pad, 0.6, 0.5, 0.5)  # the resize is seeded
    assert no_pad.pad_token is None and llama.get_input_embeddings().num_embeddings == rows
    assert all(torch.equal(before[k], v) for k, v in llama.state_dict().items())


def test_the_published_pass_of_an_fp32_model_equals_a_bf16_load(llama, saved_model, tokenizer):
    """The authors load the model with from_pretrained(torch_dtype=bfloat16), which casts the
    weights and leaves RoPE's fp32 inv_freq alone; the bf16 copy of an fp32 model must equal it
    bit for bit (a plain .to(bfloat16) rounds inv_freq and moves every activation)."""
    from locator_plugins.mathneuro import INPUT_NORMS_BY_SAMPLE_BF16
    from transformers import AutoModelForCausalLM

    from locator.passes import collect_statistics
    from plugins.lape import LAPE_PUBLISHED_COUNT

    loaded = AutoModelForCausalLM.from_pretrained(saved_model, dtype=torch.bfloat16)
    kinds = {INPUT_NORMS_BY_SAMPLE_BF16, LAPE_PUBLISHED_COUNT}
    stats = [
        collect_statistics(m, tokenizer, LAPE_TARGET, kinds=kinds, progress=False)
        for m in (llama, loaded)
    ]
    for kind in kinds:
        for name in stats[0].names(kind):
            assert torch.equal(stats[0].get(kind, name), stats[1].get(kind, name)), (kind, name)
    assert next(llama.parameters()).dtype == torch.float32  # the caller's model is untouched
