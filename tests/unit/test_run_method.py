"""`run_method`: the one place a method's bare selections become localizations. It refuses, in
one line naming the method, a result of the wrong length, type or parameters, and it (not the
method) sets the metadata and `matched_to`."""

from dataclasses import dataclass

import pytest
import torch

import locator
from locator import LocatorError, Neurons, Selection
from locator.localizer import Localizer, build_context, run_method
from locator.passes import collect_statistics
from locator.testing import sample_texts

DOWN = "model.layers.0.mlp.down_proj.weight"


@dataclass(frozen=True, kw_only=True)
class FixedConfig:
    label: str = "x"


class Fixed(Localizer):
    """Returns what it was built with, whatever it is asked."""

    name = "fixed"
    Config = FixedConfig

    def __init__(self, result):
        super().__init__()
        self.result = result

    def localize_many(self, context, proportions):
        return self.result


@pytest.fixture(scope="module")
def stats(llama, tokenizer):
    return [
        collect_statistics(llama, tokenizer, texts, kinds=set(), corpus=label, progress=False)
        for label, texts in [("t", sample_texts(3, seed=1)), ("c", sample_texts(3, seed=2))]
    ]


def some_selection(context, name=DOWN, shape=None):
    shape = shape or context.parameters[name].shape
    return {name: Selection.from_indices(torch.tensor([0, 3]), shape)}


def built_localization(context):
    """What a method returned before the core wrapped its selections."""
    return locator.Localization(selections=some_selection(context), method="fixed", proportion=0.1)


@pytest.mark.parametrize(
    "result, message",
    [
        (lambda c: [some_selection(c)], "returned 1 results for 2 proportions"),
        (
            lambda c: some_selection(c),
            "returned a dict for 2 proportions; localize_many must return a list",
        ),
        (lambda c: [torch.zeros(3)] * 2, "returned a Tensor for proportion 0.1"),
        (
            lambda c: [built_localization(c)] * 2,
            "returned a Localization for proportion 0.1; return a dict",
        ),
        (lambda c: [{"lm_head.weight": None}] * 2, "selected in 'lm_head.weight', which is not"),
        (lambda c: [Neurons({"nowhere": torch.tensor([0])})] * 2, "selected in 'nowhere'"),
        (lambda c: [Neurons({DOWN: torch.tensor([10**6])})] * 2, "neuron index out of range"),
        (
            lambda c: [{DOWN: torch.tensor([0])}] * 2,
            f"a Tensor of shape [1] for {DOWN!r}; give a Selection",
        ),
        (lambda c: [some_selection(c, shape=(2, 2))] * 2, "a Selection of shape [2, 2] for"),
    ],
)
def test_a_wrong_result_is_refused_in_one_line_naming_the_method(llama, stats, result, message):
    context = build_context(llama, stats[0], stats[1:])
    with pytest.raises(LocatorError, match="^method 'fixed'") as error:
        run_method(llama, Fixed(result(context)), context, [0.1, 0.2])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_wrapper_sets_the_metadata_and_matched_to(llama, stats):
    reference = locator.Localization(selections={}, method="mathneuro", proportion=0.1)
    context = build_context(
        llama, stats[0], stats[1:], seed=3, reference=reference, reference_label="mn"
    )
    weights, neurons = run_method(
        llama,
        Fixed([some_selection(context), Neurons({DOWN: torch.tensor([1])})]),
        context,
        [0.1, 0.2],
    )
    for found, proportion in [(weights, 0.1), (neurons, 0.2)]:
        assert (found.method, found.proportion, found.seed) == ("fixed", proportion, 3)
        assert dict(found.config) == {"label": "x"}
        assert (found.target, found.controls, found.matched_to) == ("t", ("c",), "mn")
        assert list(found.selections) == list(context.parameters)  # the rest select nothing
    assert weights.count() == 2 and weights.level == "parameter"
    assert neurons.level == "neuron" and neurons.neuron_count() == 1
    assert neurons.counts()[DOWN] == context.parameters[DOWN].shape[0]  # one column
