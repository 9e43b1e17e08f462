"""Attribution patching against the slow fp64 batch-1 reference of METHODS.md, and its contract."""

import pytest
import torch
from locator_plugins.attribution_patching import attribution_scores

import locator
from locator.runs import ModelRunner
from locator.testing import LocalizerContract, sample_texts
from tests.plugins.helpers import assert_refused, localized
from tests.plugins.runs_reference import attribution_patching, fp64, top_neurons

TARGET = sample_texts(7, seed=31)  # lengths 3..24 words: padded batches
CONTROLS = [sample_texts(5, seed=32), sample_texts(4, seed=33)]


@pytest.fixture(scope="module")
def expected():
    """Per model family: the reference scores."""
    cache = {}

    def get(model, tokenizer):
        key = type(model).__name__
        if key not in cache:
            cache[key] = attribution_patching(model, tokenizer, TARGET, CONTROLS)
        return cache[key]

    return get


def test_scores_equal_the_reference(model, tokenizer, expected):
    wanted = expected(model, tokenizer)
    for candidate, tolerance in ((model, 1e-4), (fp64(model), 1e-9)):
        corpora = [("target", TARGET), ("c0", CONTROLS[0]), ("c1", CONTROLS[1])]
        runner = ModelRunner.build(
            candidate, tokenizer, corpora, locator.CalibrationOptions(batch_size=3), progress=False
        )
        got = attribution_scores(runner)
        assert list(got) == list(wanted)
        for name, value in wanted.items():
            torch.testing.assert_close(got[name], value, rtol=tolerance, atol=1e-9)


@pytest.mark.parametrize("proportion", [0.05, 0.2])
def test_selection_equals_the_reference(model, tokenizer, expected, proportion):
    found = localized(
        model, tokenizer, "attribution-patching", proportion, TARGET, CONTROLS, batch_size=3
    )
    wanted = top_neurons(expected(model, tokenizer), proportion)
    assert found.level == "neuron"
    assert {name: found.neurons[name].tolist() for name in wanted} == wanted


def test_needs_a_control(llama, tokenizer):
    assert_refused(llama, tokenizer, "attribution-patching", TARGET, {}, "needs at least 1 control")


class TestAttributionPatchingContract(LocalizerContract):
    method = "attribution-patching"
