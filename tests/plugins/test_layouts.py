"""plugins/layouts.py: the built-in MLP layouts arrive through the plugin path and find, in every
decoder block of each family's tiny model, the MLP whose neurons the family's code defines."""

import pytest
from locator_plugins.layouts import LAYOUTS

from locator.architecture import decoder_blocks, mlp_layouts, mlp_neurons
from locator.testing import tiny_model

from ..integration.test_families import FAMILIES, MLPS


def test_the_builtin_layouts_are_registered_through_the_plugin_path():
    assert set(LAYOUTS) <= set(mlp_layouts())


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_has_one_neuron_site_per_block_where_its_code_puts_the_mlp(family, tokenizer):
    model = tiny_model(family, vocab_size=len(tokenizer))
    _, blocks = decoder_blocks(model)
    neurons = mlp_neurons(model)
    down = MLPS[family][0]
    assert len(neurons) == len(blocks)
    assert all(name.endswith(f".{down}.weight") for name in neurons)
    for name, site in neurons.items():
        width = dict(model.named_parameters())[name].shape
        assert site.size in width  # one neuron per input channel of the down projection
