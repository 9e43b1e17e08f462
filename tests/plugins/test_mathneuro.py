"""MathNeuro and the set difference (plugins/mathneuro.py) against slow fp64 batch-1
references, the published mode against the bf16 batch-1 loop written from its description
(entry for entry up to exact ties at a cut), the request's errors and the contracts."""

import copy
import math

import pytest
import torch

import locator
from locator.testing import LocalizerContract, sample_texts

from ..integration import reference
from ..integration.reference import matrix_indices
from .helpers import assert_cuts_equal_single_runs, assert_refused, localized

TARGET = sample_texts(7, seed=31)  # lengths 3..24 words: padded batches
CONTROLS = [sample_texts(5, seed=32), sample_texts(4, seed=33)]


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
    assert_cuts_equal_single_runs(llama, method, context, proportions)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"proportion": 0}, "proportion must be in (0, 1]"),
        ({"proportion": -0.1}, "proportion must be in (0, 1]"),
        ({"proportion": 1.5}, "proportion must be in (0, 1]"),
        ({"options": {"alpha": 1}}, "Unknown option of mathneuro 'alpha'"),
        (
            {"reference": locator.Localization(selections={}, method="random", proportion=0.1)},
            "does not take a reference",
        ),
    ],
)
def test_a_bad_request_is_an_error_before_any_pass(llama, tokenizer, arguments, message):
    assert_refused(llama, tokenizer, "mathneuro", TARGET, arguments, message)


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
        arguments = {"options": options, "batch_size": 3}
        found = localized(
            candidate, tokenizer, "set-difference", proportion, TARGET, CONTROLS, **arguments
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


class TestMathNeuroContract(LocalizerContract):
    method = "mathneuro"


class TestSetDifferenceContract(LocalizerContract):
    method = "set-difference"
    options = {"score": "snip", "control_proportion": 0.1}
