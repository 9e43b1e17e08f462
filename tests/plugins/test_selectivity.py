"""The selectivity localizer (plugins/selectivity.py) and the per-sample mean statistics it
reads against the slow fp64 batch-1 reference; its contract."""

import copy

import pytest
import torch
from locator_plugins.statistics import NEURON_MEAN_SQUARE_SUM, NEURON_MEAN_SUM

from locator.passes import collect_statistics
from locator.testing import LocalizerContract, sample_texts

from ..integration import reference
from ..integration.reference import DOWN_PROJECTION, family_of
from .helpers import localized

TARGET = sample_texts(7, seed=31)  # lengths 3..24 words: padded batches
CONTROLS = [sample_texts(5, seed=32), sample_texts(4, seed=33)]


@pytest.mark.parametrize("proportion", [0.05, 0.3])
def test_selectivity_matches_the_fp64_batch1_reference(model, tokenizer, proportion):
    family = family_of(model)
    model64 = copy.deepcopy(model).double()
    down = [p for p, _ in model64.named_modules() if p.endswith("." + DOWN_PROJECTION[family])]
    expected, ties = reference.selectivity(model64, tokenizer, TARGET, CONTROLS, down, proportion)
    for candidate in (model, model64):
        found = localized(
            candidate, tokenizer, "selectivity", proportion, TARGET, CONTROLS, batch_size=3
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


class TestSelectivityContract(LocalizerContract):
    method = "selectivity"
