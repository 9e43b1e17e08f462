"""Wanda (plugins/wanda.py) against the slow fp64 batch-1 reference: per row and per matrix,
pooled and per-sample norms, the original code's count; the contracts."""

import copy
import math

import pytest
import torch
from locator_plugins.statistics import INPUT_NORM_SUM, INPUT_SQUARE_SUM

import locator
from locator.localizer import build_context
from locator.passes import collect_statistics
from locator.testing import LocalizerContract, sample_texts

from ..integration import reference
from .helpers import assert_cuts_equal_single_runs

TARGET = sample_texts(6, seed=21)
CONTROLS = [sample_texts(5, seed=22), sample_texts(4, seed=23, max_words=40)]


@pytest.mark.parametrize(
    "norm, group", [("pooled", "row"), ("pooled", "matrix"), ("per_sample", "row")]
)
@pytest.mark.parametrize("proportion", [0.1, 0.5])
def test_wanda_matches_fp64_batch1_reference(model, tokenizer, norm, group, proportion):
    model64 = copy.deepcopy(model).double()
    expected = reference.wanda(model64, tokenizer, TARGET, proportion, norm=norm, group=group)
    for candidate in (model, model64):  # the fp32 model batched and padded, and the fp64 one
        result = locator.localize(
            candidate,
            tokenizer,
            method="wanda",
            target=TARGET,
            proportion=proportion,
            batch_size=4,
            progress=False,
            options={"norm": norm, "group": group},
        )
        assert set(result.selections) == set(expected)
        for name, mask in result.masks.items():
            wanted, tied = expected[name]  # entries tied at a cut may go either way
            assert torch.equal(mask & ~tied, wanted & ~tied), name


def test_wanda_row_takes_floor_k_of_every_output_row(model, tokenizer):
    result = locator.localize(
        model, tokenizer, method="wanda", target=TARGET, proportion=0.3, progress=False
    )
    parameters = locator.scored_parameters(model)
    for name, mask in result.masks.items():
        matrix = mask.t() if parameters[name].transposed else mask  # [d_out, d_in]
        assert (matrix.sum(dim=1) == math.floor(0.3 * matrix.shape[1])).all(), name


@pytest.mark.parametrize("proportion", [0.05, 0.3])
def test_wanda_original_count_keeps_what_the_reference_code_keeps(llama, tokenizer, proportion):
    stats = collect_statistics(llama, tokenizer, TARGET, kinds={INPUT_SQUARE_SUM}, progress=False)
    context = build_context(llama, stats)
    floor, original = (
        locator.run_method(llama, locator.get_localizer("wanda", options), context, [proportion])[0]
        for options in ({}, {"count": "original"})
    )
    for name, mask in original.masks.items():
        d_in = mask.shape[1]  # Llama: [d_out, d_in]
        kept = d_in - int(d_in * (1 - proportion))  # the reference prunes int(d_in * sparsity)
        assert (mask.sum(dim=1) == kept).all(), name
        assert (mask | floor.masks[name]).equal(mask), name  # one ranking: floor's is a prefix


def test_wanda_declares_only_the_statistic_its_config_needs():
    assert locator.get_localizer("wanda").statistics == {INPUT_SQUARE_SUM}
    assert locator.get_localizer("wanda", {"norm": "per_sample"}).statistics == {INPUT_NORM_SUM}


def test_wanda_ignores_controls_and_its_ablation_variant_is_mathneuro_without_controls(
    llama, tokenizer
):
    kinds = {INPUT_NORM_SUM, INPUT_SQUARE_SUM}
    target, control = (
        collect_statistics(llama, tokenizer, texts, kinds=kinds, batch_size=3, progress=False)
        for texts in (TARGET, CONTROLS[0])
    )
    alone, with_control = build_context(llama, target), build_context(llama, target, [control])
    wanda = locator.get_localizer("wanda")
    ablation = locator.get_localizer("wanda", {"norm": "per_sample", "group": "matrix"})
    mathneuro = locator.get_localizer("mathneuro")
    pairs = [((wanda, alone), (wanda, with_control)), ((ablation, alone), (mathneuro, alone))]
    for first, second in pairs:
        found = [
            locator.run_method(llama, method, context, [0.1])[0]
            for method, context in (first, second)
        ]
        assert found[0].jaccard(found[1]) == 1.0


@pytest.mark.parametrize("method, options", [("wanda", {}), ("wanda", {"group": "matrix"})])
def test_many_proportions_equal_single_runs(llama, tokenizer, method, options):
    stats = collect_statistics(
        llama, tokenizer, TARGET, kinds={INPUT_SQUARE_SUM}, batch_size=4, progress=False
    )
    context = build_context(llama, stats)
    localizer = locator.get_localizer(method, options)
    proportions = [0.001, 0.01, 0.05, 0.1, 0.5]
    assert_cuts_equal_single_runs(llama, localizer, context, proportions)


class TestWandaContract(LocalizerContract):
    method = "wanda"
    controls = 0


class TestWandaAblationContract(LocalizerContract):
    method = "wanda"
    options = {"norm": "per_sample", "group": "matrix"}
    controls = 0
