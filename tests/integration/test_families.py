"""Every supported model family: statistics equal slow references, all four methods select in
every decoder block, neuron pruning equals activation zeroing, and one pass serves all methods."""

import copy

import pytest
import torch
from locator_plugins.statistics import INPUT_NORM_SUM, INPUT_SQUARE_SUM, NEURON_ACTIVE_COUNT
from torch import nn

import locator
from locator import LocatorError
from locator.architecture import MlpLayout, mlp_layouts, mlp_neurons
from locator.localizer import build_context, get_localizer, run_method, statistic_kinds
from locator.passes import collect_statistics
from locator.plugins import register_plugin, unregister_plugin
from locator.testing import TINY_CONFIGS, sample_texts, tiny_model

from . import reference

TARGET = sample_texts(6, seed=31)
CONTROL = sample_texts(5, seed=32, max_words=40)
FAMILIES = ["llama", "mistral", "qwen2", "gemma2", "phi", "gpt2", "gpt_neox", "opt"]

# Per family, written from the transformers modeling code: (down projection, activation module),
# as paths inside a decoder block.
MLPS = {
    "llama": ("mlp.down_proj", "mlp.act_fn"),
    "mistral": ("mlp.down_proj", "mlp.act_fn"),
    "qwen2": ("mlp.down_proj", "mlp.act_fn"),
    "gemma2": ("mlp.down_proj", "mlp.act_fn"),
    "phi": ("mlp.fc2", "mlp.activation_fn"),
    "gpt2": ("mlp.c_proj", "mlp.act"),
    "gpt_neox": ("mlp.dense_4h_to_h", "mlp.act"),
    "opt": ("fc2", "activation_fn"),
}
NEVER_SCORED = ("embed", "lm_head", "project_in", "project_out", "wte", "wpe")


def test_every_listed_family_has_a_tiny_config():
    assert set(FAMILIES) <= set(TINY_CONFIGS)


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tokenizer):
    """(family name, its tiny model); shared within this module, never edited."""
    return request.param, tiny_model(request.param, vocab_size=len(tokenizer))


def activation_modules(model, family_name):
    """{down-projection parameter name: path of that MLP's activation module}."""
    down, activation = MLPS[family_name]
    return {
        f"{path}.weight": path.removesuffix(down) + activation
        for path, _ in model.named_modules()
        if path.endswith("." + down)
    }


def test_statistics_equal_the_fp64_batch1_reference(family, tokenizer):
    name, model = family
    model64 = copy.deepcopy(model).double()
    kinds = {INPUT_NORM_SUM, INPUT_SQUARE_SUM, NEURON_ACTIVE_COUNT}
    stats = collect_statistics(
        model64, tokenizer, TARGET, kinds=kinds, batch_size=4, progress=False
    )
    norms, squares = reference.channel_statistics(model64, tokenizer, TARGET)
    assert {f"{path}.weight" for path in norms} == set(stats.values[INPUT_NORM_SUM])
    for path in norms:
        parameter = f"{path}.weight"
        torch.testing.assert_close(stats.get(INPUT_NORM_SUM, parameter), norms[path])
        torch.testing.assert_close(stats.get(INPUT_SQUARE_SUM, parameter), squares[path])
    counts, tokens = reference.active_counts(
        model64, tokenizer, TARGET, activation_modules(model, name)
    )
    assert stats.num_tokens == tokens
    assert set(stats.values[NEURON_ACTIVE_COUNT]) == set(counts)
    for parameter, count in counts.items():
        assert torch.equal(stats.get(NEURON_ACTIVE_COUNT, parameter), count.double()), parameter


def test_all_methods_select_in_every_block_from_one_pass_per_corpus(family, tokenizer):
    name, model = family
    methods = [
        get_localizer("mathneuro"),
        get_localizer("wanda"),
        get_localizer("lape", {"filter_rate": 0.5, "activation_bar_ratio": 0.5}),
        get_localizer("random"),
        get_localizer("snip"),  # a backward pass in the same pass
        get_localizer("selectivity"),
    ]
    body = model.get_decoder()  # what every pass runs (the head only for gradients)
    calls = []
    handle = body.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        stats = [
            collect_statistics(
                model, tokenizer, texts, kinds=statistic_kinds(methods), progress=False
            )
            for texts in (TARGET, CONTROL)
        ]
    finally:
        handle.remove()
    assert len(calls) == 2  # one batch per corpus: one forward call each
    context = build_context(model, stats[0], stats[1:])
    blocks = {p.layer for p in context.parameters.values()}
    assert blocks == {0, 1}
    found = {method.name: run_method(model, method, context, [0.5])[0] for method in methods}
    matched = build_context(model, stats[0], reference=found["lape"])
    (found["matched"],) = run_method(model, get_localizer("random"), matched, [0.5])
    for method, localization in found.items():
        assert set(localization.counts_by_layer()) == blocks, (name, method)
        assert all(count > 0 for count in localization.counts_by_layer().values()), (name, method)
        for parameter in localization.selections:
            assert not any(word in parameter for word in NEVER_SCORED), parameter
    assert found["lape"].level == found["matched"].level == "neuron"
    assert found["matched"].counts() == found["lape"].counts()


def lape_at_half(model, tokenizer, **arguments):
    """LAPE at K = 0.5 on the target and the control, its rates at 0.5 (neurons on tiny data)."""
    options = {"filter_rate": 0.5, "activation_bar_ratio": 0.5}
    return locator.localize(
        model,
        tokenizer,
        method="lape",
        target=TARGET,
        controls=[CONTROL],
        proportion=0.5,
        progress=False,
        options=options,
        **arguments,
    )


def test_neuron_prune_equals_zeroing_activations(family, tokenizer):
    name, model = family
    lape = lape_at_half(model, tokenizer, batch_size=4)
    assert lape.neuron_count() > 0
    modules = dict(model.named_modules())
    batch = tokenizer(TARGET[:3], return_tensors="pt", padding=True)
    with torch.no_grad(), locator.intervene(model, lape, 0.0):
        pruned = model(**batch).logits
    handles = []
    for parameter, path in activation_modules(model, name).items():

        def zero(module, args, output, neurons=lape.neurons[parameter]):
            output = output.clone()
            output[..., neurons] = 0
            return output

        handles.append(modules[path].register_forward_hook(zero))
    try:
        with torch.no_grad():
            zeroed = model(**batch).logits
    finally:
        for handle in handles:
            handle.remove()
    torch.testing.assert_close(pruned, zeroed, rtol=1e-5, atol=1e-6)


def test_one_pass_serves_every_method_exactly(llama, tokenizer):
    """Localizing several methods from one shared pass equals localizing each on its own."""
    methods = {
        "mathneuro": get_localizer("mathneuro"),
        "wanda": get_localizer("wanda"),
        "wanda-ablation": get_localizer("wanda", {"norm": "per_sample", "group": "matrix"}),
        "lape": get_localizer("lape", {"filter_rate": 0.6, "activation_bar_ratio": 0.6}),
        "random": get_localizer("random"),
    }
    kinds = statistic_kinds(methods.values())
    assert kinds == {INPUT_NORM_SUM, INPUT_SQUARE_SUM, NEURON_ACTIVE_COUNT}
    calls = []
    handle = llama.base_model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        stats = [
            collect_statistics(llama, tokenizer, texts, kinds=kinds, batch_size=4, progress=False)
            for texts in (TARGET, CONTROL)
        ]
    finally:
        handle.remove()
    assert len(calls) == 2 + 2  # 6 and 5 texts in batches of 4: two batches per corpus
    context = build_context(llama, stats[0], stats[1:])
    proportions = [0.01, 0.1]
    options = {
        "wanda-ablation": {"norm": "per_sample", "group": "matrix"},
        "lape": {"filter_rate": 0.6, "activation_bar_ratio": 0.6},
    }
    for label, method in methods.items():
        for shared in run_method(llama, method, context, proportions):
            alone = locator.localize(
                llama,
                tokenizer,
                method=method.name,
                target=TARGET,
                controls=[CONTROL] if method.uses_controls else [],
                proportion=shared.proportion,
                batch_size=4,
                progress=False,
                options=options.get(label, {}),
            )
            assert shared.jaccard(alone) == 1.0 and shared.count() == alone.count(), label


# A model whose MLP no built-in layout knows.


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.Linear(8, 8)
        self.w_in = nn.Linear(8, 16)
        self.w_out = nn.Linear(16, 8)

    def forward(self, x):
        x = x + self.attention(x)
        return x + self.w_out(torch.relu(self.w_in(x)))


class _Custom(nn.Module):
    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(vocab_size, 8)
        self.layers = nn.ModuleList([_Block(), _Block()])

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        hidden = self.embed(input_ids)
        for block in self.layers:
            hidden = block(hidden)
        return hidden


class _CustomLayout:
    @locator.hookimpl
    def register_layouts(self, register):
        register(MlpLayout(name="custom", pre_activation="w_in", down_projection="w_out"))


def test_unknown_mlp_is_one_clear_line_and_a_plugin_layout_fixes_it(tokenizer):
    model = _Custom(len(tokenizer))
    with pytest.raises(LocatorError) as error:
        lape_at_half(model, tokenizer)
    message = str(error.value)
    assert "\n" not in message
    assert "no recognizable MLP in decoder block 0" in message
    assert "register_layouts" in message and "MlpLayout(" in message
    # The parameter methods need no layout.
    locator.localize(
        model, tokenizer, method="wanda", target=TARGET, proportion=0.1, progress=False
    )
    register_plugin(_CustomLayout(), name="custom-layout")
    try:
        assert [site.pre_activation for site in mlp_neurons(model).values()] == [
            "layers.0.w_in",
            "layers.1.w_in",
        ]
        found = lape_at_half(model, tokenizer)
        assert found.level == "neuron" and set(found.neurons) == {
            "layers.0.w_out.weight",
            "layers.1.w_out.weight",
        }
    finally:
        unregister_plugin("custom-layout")


def test_a_plugin_cannot_replace_a_builtin_layout():
    class Clash:
        @locator.hookimpl
        def register_layouts(self, register):
            register(MlpLayout(name="gated", pre_activation="w1", down_projection="w2"))

    register_plugin(Clash(), name="clash")
    try:
        with pytest.raises(LocatorError, match="'gated' is registered twice"):
            mlp_layouts()
    finally:
        unregister_plugin("clash")
