"""The random baseline (plugins/random.py): floor(K x numel) per matrix under a seed, and
matched to a reference's counts per matrix, per neuron layer, and in an untied head."""

import math

import locator
from locator.testing import LocalizerContract, sample_texts

from .test_lape import lape_localization

TARGET = sample_texts(6, seed=11)
CONTROLS = [sample_texts(5, seed=12), sample_texts(4, seed=13, max_words=40)]


def test_random_takes_floor_k_per_matrix_and_is_seeded(llama, tokenizer):
    first = locator.localize(
        llama, tokenizer, method="random", target=TARGET, proportion=0.1, seed=1, progress=False
    )
    again = locator.localize(
        llama, tokenizer, method="random", target=TARGET, proportion=0.1, seed=1, progress=False
    )
    other = locator.localize(
        llama, tokenizer, method="random", target=TARGET, proportion=0.1, seed=2, progress=False
    )
    for _name, selection in first.selections.items():
        assert selection.count == math.floor(0.1 * selection.numel)
    assert first.jaccard(again) == 1.0
    assert first.jaccard(other) < 0.5


def test_matched_random_copies_counts_per_matrix(model, tokenizer):
    mathneuro = locator.localize(
        model,
        tokenizer,
        method="mathneuro",
        target=TARGET,
        controls=CONTROLS[:1],
        proportion=0.1,
        progress=False,
    )
    matched = locator.localize(
        model,
        tokenizer,
        method="random",
        target=TARGET,
        proportion=0.1,
        reference=mathneuro,
        progress=False,
    )
    assert matched.counts() == mathneuro.counts()
    assert matched.matched_to == "mathneuro"
    assert matched.jaccard(mathneuro) < 0.5


def test_neuron_level_random_matches_neurons_per_layer(model, tokenizer):
    lape = lape_localization(model, tokenizer)
    matched = [
        locator.localize(
            model,
            tokenizer,
            method="random",
            target=TARGET,
            proportion=0.5,
            reference=lape,
            seed=seed,
            progress=False,
        )
        for seed in (0, 0, 1)
    ]
    first = matched[0]
    assert first.level == "neuron" and first.matched_to == "lape"
    assert {n: len(v) for n, v in first.neurons.items()} == {
        n: len(v) for n, v in lape.neurons.items()
    }
    assert first.counts() == lape.counts()
    assert first.jaccard(matched[1]) == 1.0 and first.jaccard(matched[2]) < 1.0
    assert first.jaccard(lape) < 1.0


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


class TestRandomContract(LocalizerContract):
    method = "random"
