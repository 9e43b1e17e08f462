"""MathNeuro against the slow fp64 reference; random and matched random."""

import copy
import math

import pytest
import torch

import locator
from locator import LocatorError
from locator.testing import LocalizerContract, sample_texts

from . import reference

TARGET = sample_texts(6, seed=11)
CONTROLS = [sample_texts(5, seed=12), sample_texts(4, seed=13, max_words=40)]


@pytest.mark.parametrize("num_controls", [0, 1, 2])
@pytest.mark.parametrize("proportion", [0.01, 0.1, 0.5])
def test_mathneuro_matches_fp64_batch1_reference(model, tokenizer, num_controls, proportion):
    model64 = copy.deepcopy(model).double()
    expected = reference.mathneuro(model64, tokenizer, TARGET, CONTROLS[:num_controls], proportion)
    for candidate in (model, model64):  # the fp32 model batched, and the fp64 one
        result = locator.localize(
            candidate,
            tokenizer,
            method="mathneuro",
            target=TARGET,
            controls=CONTROLS[:num_controls],
            proportion=proportion,
            batch_size=4,
            progress=False,
        )
        assert set(result.selections) == set(expected)
        for name, mask in result.masks.items():
            wanted, tied = expected[name]  # entries tied at a cut may go either way
            assert torch.equal(mask & ~tied, wanted & ~tied), name
            assert mask.sum() <= math.floor(proportion * mask.numel())


def test_mathneuro_many_proportions_equal_single_runs(llama, tokenizer):
    from locator_plugins.statistics import INPUT_NORM_SUM

    from locator.localizer import build_context
    from locator.passes import collect_statistics

    stats = [
        collect_statistics(llama, tokenizer, t, kinds={INPUT_NORM_SUM}, progress=False)
        for t in (TARGET, CONTROLS[0])
    ]
    context = build_context(llama, stats[0], stats[1:])
    method = locator.get_localizer("mathneuro")
    proportions = [0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15]
    for many, proportion in zip(
        method.localize_many(context, proportions), proportions, strict=False
    ):
        assert many.jaccard(method.localize(context, proportion)) == 1.0
        assert many.proportion == proportion


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


def test_reference_only_for_methods_that_take_one(llama, tokenizer):
    loc = locator.localize(
        llama, tokenizer, method="random", target=TARGET, proportion=0.1, progress=False
    )
    with pytest.raises(LocatorError, match="does not take a reference"):
        locator.localize(
            llama,
            tokenizer,
            method="mathneuro",
            target=TARGET,
            proportion=0.1,
            reference=loc,
            progress=False,
        )


@pytest.mark.parametrize("proportion", [0, -0.1, 1.5])
def test_proportion_outside_unit_interval(llama, tokenizer, proportion):
    with pytest.raises(LocatorError, match=r"proportion must be in \(0, 1\]"):
        locator.localize(
            llama,
            tokenizer,
            method="mathneuro",
            target=TARGET,
            proportion=proportion,
            progress=False,
        )


def test_unknown_option_is_an_error(llama, tokenizer):
    with pytest.raises(LocatorError, match="Unknown option of mathneuro 'alpha'"):
        locator.localize(
            llama,
            tokenizer,
            method="mathneuro",
            target=TARGET,
            proportion=0.1,
            options={"alpha": 1},
            progress=False,
        )


class TestMathNeuroContract(LocalizerContract):
    method = "mathneuro"


class TestRandomContract(LocalizerContract):
    method = "random"
