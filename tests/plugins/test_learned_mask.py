"""The learned HardConcrete mask against the slow fp64 batch-1 reference of METHODS.md (the same
training, one text at a time), determinism under the seed, bad options, and its contract."""

import pytest
import torch
from locator_plugins.learned_mask import LearnedMaskConfig, train_log_alpha

import locator
from locator.runs import ModelRunner
from locator.testing import LocalizerContract, sample_texts
from tests.plugins.helpers import assert_refused, localized
from tests.plugins.runs_reference import fp64, learned_mask, top_neurons

TARGET = sample_texts(5, seed=51)
CONTROLS = [sample_texts(4, seed=52)]
OPTIONS = {"steps": 6, "lr": 0.1, "penalty_step": 1.0}


@pytest.mark.parametrize("count", [4, 20])
def test_trained_gates_equal_the_reference(model, tokenizer, count):
    model64 = fp64(model)
    wanted = learned_mask(model64, tokenizer, TARGET, CONTROLS, count, seed=7, **OPTIONS)
    corpora = [("target", TARGET), ("c0", CONTROLS[0])]
    runner = ModelRunner.build(
        model64,
        tokenizer,
        corpora,
        locator.CalibrationOptions(batch_size=2),
        seed=7,
        progress=False,
    )
    got = train_log_alpha(runner, LearnedMaskConfig(**OPTIONS), count)
    torch.testing.assert_close(got, torch.cat(list(wanted.values())), rtol=1e-7, atol=1e-9)
    # The gates moved: the check is not of the starting values.
    assert got.std() > 1e-3


@pytest.mark.parametrize("proportion", [0.05, 0.2])
def test_selection_equals_the_reference(model, tokenizer, proportion):
    model64 = fp64(model)
    total = sum(p.shape[1] for n, p in model64.named_parameters() if "down_proj.weight" in n)
    total += sum(p.shape[0] for n, p in model64.named_parameters() if "mlp.c_proj.weight" in n)
    count = int(proportion * total)
    log_alpha = learned_mask(model64, tokenizer, TARGET, CONTROLS, count, seed=3, **OPTIONS)
    arguments = {"options": OPTIONS, "seed": 3, "batch_size": 2}
    found = localized(model64, tokenizer, "learned-mask", proportion, TARGET, CONTROLS, **arguments)
    wanted = top_neurons(log_alpha, proportion)
    assert {name: found.neurons.get(name, torch.empty(0)).tolist() for name in wanted} == wanted
    assert found.count() > 0


def test_fp32_selection_is_the_fp64_selection(llama, tokenizer):
    found = [
        localized(candidate, tokenizer, "learned-mask", 0.1, TARGET, CONTROLS, options=OPTIONS)
        for candidate in (llama, fp64(llama))
    ]
    assert {n: v.tolist() for n, v in found[0].neurons.items()} == {
        n: v.tolist() for n, v in found[1].neurons.items()
    }


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"options": {"steps": 0}}, "'steps' of learned-mask must be a positive integer, got 0."),
        ({"options": {"lr": 0}}, "'lr' of learned-mask must be a number > 0, got 0."),
        (
            {"options": {"penalty_step": -1}},
            "'penalty_step' of learned-mask must be a number >= 0, got -1.",
        ),
        ({}, "needs at least 1 control"),
    ],
)
def test_a_bad_request_is_one_line(llama, tokenizer, arguments, message):
    assert_refused(llama, tokenizer, "learned-mask", TARGET, arguments, message)


class TestLearnedMaskContract(LocalizerContract):
    method = "learned-mask"
    options = {"steps": 3}
