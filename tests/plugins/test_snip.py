"""SNIP (plugins/snip.py) and the gradient statistic it reads against the slow fp64 batch-1
reference; the gradient pass's side effects; its contract."""

import copy
import math

import pytest
import torch
from locator_plugins.statistics import INPUT_SQUARE_SUM, NEURON_MEAN_SUM, WEIGHT_SALIENCY

import locator
from locator.passes import collect_statistics
from locator.testing import LocalizerContract, sample_texts

from ..integration import reference
from ..integration.reference import matrix_indices
from .helpers import localized

TARGET = sample_texts(7, seed=31)  # lengths 3..24 words: padded batches
CONTROLS = [sample_texts(5, seed=32), sample_texts(4, seed=33)]


def test_gradient_statistics_equal_the_per_sample_reference(model, tokenizer, saliency):
    model64, expected = saliency(model, tokenizer)
    for candidate, tolerance in ((model, 1e-4), (model64, 1e-6)):
        stats = collect_statistics(
            candidate, tokenizer, TARGET, kinds={WEIGHT_SALIENCY}, batch_size=3, progress=False
        )
        assert set(stats.values[WEIGHT_SALIENCY]) == set(expected[0])
        for name, value in expected[0].items():
            got = stats.get(WEIGHT_SALIENCY, name)
            assert got.dtype == torch.float32
            torch.testing.assert_close(got.double(), value, rtol=tolerance, atol=1e-7)


def test_gradient_pass_leaves_the_model_as_it_was(llama, tokenizer):
    model = copy.deepcopy(llama).train()
    model.model.layers[0].mlp.up_proj.weight.requires_grad_(False)
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    stats = collect_statistics(
        model,
        tokenizer,
        TARGET[:3],
        kinds={WEIGHT_SALIENCY, INPUT_SQUARE_SUM, NEURON_MEAN_SUM},
        progress=False,
    )
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert model.training
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
    # Forward kinds collected in the same pass equal a forward-only pass.
    alone = collect_statistics(
        llama, tokenizer, TARGET[:3], kinds={INPUT_SQUARE_SUM, NEURON_MEAN_SUM}, progress=False
    )
    for kind in (INPUT_SQUARE_SUM, NEURON_MEAN_SUM):
        for name, value in alone.values[kind].items():
            torch.testing.assert_close(stats.get(kind, name), value)


def test_bf16_accumulation_is_close_to_fp32(llama, tokenizer):
    found = {
        accumulate: locator.localize(
            llama,
            tokenizer,
            method="snip",
            target=TARGET,
            proportion=0.1,
            options={"accumulate": accumulate},
            progress=False,
        )
        for accumulate in ("float32", "bfloat16")
    }
    assert found["bfloat16"].jaccard(found["float32"]) > 0.8


@pytest.mark.parametrize("group", ["matrix", "row"])
@pytest.mark.parametrize("proportion", [0.05, 0.3])
def test_snip_matches_the_fp64_batch1_reference(model, tokenizer, saliency, group, proportion):
    model64, expected = saliency(model, tokenizer)
    for candidate in (model, model64):
        arguments = {"options": {"group": group}, "batch_size": 3}
        found = localized(candidate, tokenizer, "snip", proportion, TARGET, **arguments)
        got = matrix_indices(found, candidate)
        for name, scores in expected[0].items():
            if group == "matrix":
                wanted, boundary = reference.top_set(
                    scores, math.floor(proportion * scores.numel())
                )
                ties = reference.near(scores, boundary)
            else:
                d_out, d_in = scores.shape
                wanted, ties = set(), set()
                for row in range(d_out):
                    top, boundary = reference.top_set(scores[row], math.floor(proportion * d_in))
                    wanted |= {row * d_in + j for j in top}
                    ties |= {row * d_in + j for j in reference.near(scores[row], boundary)}
            assert got[name] ^ wanted <= ties, name
            assert len(got[name]) == len(wanted)


class TestSnipContract(LocalizerContract):
    method = "snip"
    options = {"group": "row"}
    controls = 0
