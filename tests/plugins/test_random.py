"""The random baseline (plugins/random.py): floor(K x numel) per matrix under a seed, and
matched to a reference's counts per matrix, per neuron layer, and in an untied head."""

import math

import locator
from locator.testing import LocalizerContract, sample_texts

from .test_lape import lape_localization

TARGET = sample_texts(6, seed=11)
CONTROLS = [sample_texts(5, seed=12), sample_texts(4, seed=13, max_words=40)]


def localize(model, tokenizer, method="random", **arguments):
    """`method` (the baseline unless named) on TARGET at K = 0.1 unless given otherwise."""
    arguments = {"target": TARGET, "proportion": 0.1, "progress": False, **arguments}
    return locator.localize(model, tokenizer, method=method, **arguments)


def test_random_takes_floor_k_per_matrix_and_is_seeded(llama, tokenizer):
    first, again, other = (localize(llama, tokenizer, seed=seed) for seed in (1, 1, 2))
    for _name, selection in first.selections.items():
        assert selection.count == math.floor(0.1 * selection.numel)
    assert first.jaccard(again) == 1.0
    assert first.jaccard(other) < 0.5


def test_matched_random_copies_counts_per_matrix(model, tokenizer):
    mathneuro = localize(model, tokenizer, "mathneuro", controls=CONTROLS[:1])
    matched = localize(model, tokenizer, reference=mathneuro)
    assert matched.counts() == mathneuro.counts()
    assert matched.matched_to == "mathneuro"
    assert matched.jaccard(mathneuro) < 0.5


def test_neuron_level_random_matches_neurons_per_layer(model, tokenizer):
    lape = lape_localization(model, tokenizer)
    matched = [
        localize(model, tokenizer, proportion=0.5, reference=lape, seed=seed) for seed in (0, 0, 1)
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
    options = {"mode": "published"}
    published = localize(llama, tokenizer, "mathneuro", options=options, controls=CONTROLS)
    matched = localize(llama, tokenizer, reference=published)
    assert matched.counts() == published.counts()
    assert matched.selections["lm_head.weight"].count > 0


class TestRandomContract(LocalizerContract):
    method = "random"
