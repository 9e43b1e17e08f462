"""SNIP, the set difference and the selectivity localizer against slow fp64 batch-1 references;
the gradient pass's side effects; the three methods' contracts."""

import copy
import math

import pytest
import torch
from locator_plugins.statistics import (
    INPUT_SQUARE_SUM,
    NEURON_MEAN_SQUARE_SUM,
    NEURON_MEAN_SUM,
    WEIGHT_SALIENCY,
)

import locator
from locator.passes import collect_statistics
from locator.testing import LocalizerContract, sample_texts

from . import reference

TARGET = sample_texts(7, seed=31)  # lengths 3..24 words: padded batches
CONTROLS = [sample_texts(5, seed=32), sample_texts(4, seed=33)]
DOWN_PROJECTION = {"llama": "mlp.down_proj", "gpt2": "mlp.c_proj"}


def family_of(model):
    return "gpt2" if type(model).__name__.startswith("GPT2") else "llama"


def matrix_indices(found, model):
    """{parameter name: selected flat indices into the [d_out, d_in] matrix}."""
    modules = dict(model.named_modules())
    result = {}
    for name, mask in found.masks.items():
        module = modules[name.removesuffix(".weight")]
        result[name] = set(reference.as_matrix(module, mask).flatten().nonzero()[:, 0].tolist())
    return result


@pytest.fixture(scope="module")
def saliency(request):
    """Per family: the fp64 model and its reference saliency of the target and the controls."""
    cache = {}

    def get(model, tokenizer):
        family = family_of(model)
        if family not in cache:
            model64 = copy.deepcopy(model).double()
            cache[family] = (
                model64,
                [
                    reference.snip_saliency(model64, tokenizer, texts)
                    for texts in [TARGET, *CONTROLS]
                ],
            )
        return cache[family]

    return get


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
        found = locator.localize(
            candidate,
            tokenizer,
            method="snip",
            target=TARGET,
            proportion=proportion,
            options={"group": group},
            batch_size=3,
            progress=False,
        )
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


@pytest.mark.parametrize(
    "score, proportion, control_proportion",
    [("wanda", 0.3, 0.05), ("wanda", 0.2, None), ("snip", 0.3, 0.05), ("snip", 0.2, None)],
)
def test_set_difference_matches_the_fp64_batch1_reference(
    model, tokenizer, saliency, score, control_proportion, proportion
):
    model64, expected_saliency = saliency(model, tokenizer)
    if score == "snip":
        scores = expected_saliency
    else:
        linears = reference.decoder_linears(model64)
        scores = []
        for texts in [TARGET, *CONTROLS]:
            _, squares = reference.channel_statistics(model64, tokenizer, texts)
            scores.append(
                {
                    f"{path}.weight": reference.as_matrix(m, m.weight.detach()).abs()
                    * squares[path].sqrt()[None, :]
                    for path, m in linears.items()
                }
            )
    expected = reference.set_difference(scores[0], scores[1:], proportion, control_proportion)
    options = {"score": score, "control_proportion": control_proportion}
    compared = 0
    for candidate in (model, model64):
        found = locator.localize(
            candidate,
            tokenizer,
            method="set-difference",
            target=TARGET,
            controls=CONTROLS,
            proportion=proportion,
            options=options,
            batch_size=3,
            progress=False,
        )
        got = matrix_indices(found, candidate)
        for name, (wanted, ties) in expected.items():
            assert got[name] ^ wanted <= ties, name
            compared += len(wanted - ties)
    assert compared > 20, compared  # not vacuous


def test_mathneuro_is_the_set_difference_with_its_score_and_one_budget(llama, tokenizer):
    found = {
        method: locator.localize(
            llama,
            tokenizer,
            method=method,
            target=TARGET,
            controls=CONTROLS,
            proportion=0.2,
            options=options,
            progress=False,
        )
        for method, options in [("mathneuro", None), ("set-difference", {"score": "mathneuro"})]
    }
    assert found["mathneuro"].jaccard(found["set-difference"]) == 1.0
    assert found["mathneuro"].config == {"mode": "faithful"}


def test_a_larger_control_budget_removes_more(llama, tokenizer):
    counts = [
        locator.localize(
            llama,
            tokenizer,
            method="set-difference",
            target=TARGET,
            controls=CONTROLS,
            proportion=0.2,
            options={"control_proportion": q},
            progress=False,
        ).count()
        for q in (0.0, 0.1, 0.5)
    ]
    assert counts[0] > counts[1] > counts[2]


@pytest.mark.parametrize("proportion", [0.05, 0.3])
def test_selectivity_matches_the_fp64_batch1_reference(model, tokenizer, proportion):
    family = family_of(model)
    model64 = copy.deepcopy(model).double()
    down = [p for p, _ in model64.named_modules() if p.endswith("." + DOWN_PROJECTION[family])]
    expected, ties = reference.selectivity(model64, tokenizer, TARGET, CONTROLS, down, proportion)
    for candidate in (model, model64):
        found = locator.localize(
            candidate,
            tokenizer,
            method="selectivity",
            target=TARGET,
            controls=CONTROLS,
            proportion=proportion,
            batch_size=3,
            progress=False,
        )
        assert found.level == "neuron" and set(found.neurons) == set(expected)
        for name, neurons in found.neurons.items():
            got, wanted = set(neurons.tolist()), set(expected[name])
            assert {(name, j) for j in got ^ wanted} <= ties, name
        assert found.neuron_count() == sum(len(js) for js in expected.values())


def test_sample_mean_statistics_equal_the_reference(model, tokenizer):
    family = family_of(model)
    down = [p for p, _ in model.named_modules() if p.endswith("." + DOWN_PROJECTION[family])]
    means = reference.sample_mean_activations(model, tokenizer, TARGET, down)
    stats = collect_statistics(
        model,
        tokenizer,
        TARGET,
        kinds={NEURON_MEAN_SUM, NEURON_MEAN_SQUARE_SUM},
        batch_size=3,
        progress=False,
    )
    for name, table in means.items():
        torch.testing.assert_close(
            stats.get(NEURON_MEAN_SUM, name), table.sum(0), rtol=1e-5, atol=1e-6
        )
        torch.testing.assert_close(
            stats.get(NEURON_MEAN_SQUARE_SUM, name), table.square().sum(0), rtol=1e-5, atol=1e-6
        )


class TestSnipContract(LocalizerContract):
    method = "snip"
    options = {"group": "row"}
    controls = 0


class TestSetDifferenceContract(LocalizerContract):
    method = "set-difference"
    options = {"score": "snip", "control_proportion": 0.1}


class TestSelectivityContract(LocalizerContract):
    method = "selectivity"
