"""Wanda and LAPE against slow fp64 references; neuron-level localizations and random; errors."""

import copy
import math
import random

import pytest
import torch
from click.testing import CliRunner
from locator_plugins.statistics import INPUT_NORM_SUM, INPUT_SQUARE_SUM, NEURON_ACTIVE_COUNT

import locator
from locator import LocatorError
from locator.cli import cli
from locator.localizer import build_context
from locator.passes import collect_statistics
from locator.testing import LocalizerContract, sample_texts

from . import reference

TARGET = sample_texts(6, seed=21)
CONTROLS = [sample_texts(5, seed=22), sample_texts(4, seed=23, max_words=40)]

# Down projection and activation module names (inside an MLP) of the two test families.
ACTIVATIONS = {"llama": ("mlp.down_proj", "mlp.act_fn"), "gpt2": ("mlp.c_proj", "mlp.act")}


def activation_modules(model, family):
    """{down-projection parameter name: path of that MLP's activation module}."""
    down, activation = ACTIVATIONS[family]
    return {
        f"{path}.weight": path.removesuffix(down) + activation
        for path, _ in model.named_modules()
        if path.endswith("." + down) and ".mlp." in path + "."
    }


def themed_texts(words, count, seed):
    """Texts drawn from a few words, so that corpora differ in what they activate."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 20))) for _ in range(count)]


MATH = "one two three four five plus minus times equals number sum product answer".split()
PROSE = "the a cat cats dog dogs bird sees runs eats red blue small big".split()
LOGIC = "and or but if then so because question solve compute total is are".split()
LAPE_CORPORA = [themed_texts(MATH, 6, 1), themed_texts(PROSE, 5, 2), themed_texts(LOGIC, 4, 3)]


def family_of(model):
    return "gpt2" if type(model).__name__.startswith("GPT2") else "llama"


# Wanda


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
    floor = locator.get_localizer("wanda").localize(context, proportion)
    original = locator.get_localizer("wanda", {"count": "original"}).localize(context, proportion)
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
    assert wanda.localize(alone, 0.1).jaccard(wanda.localize(with_control, 0.1)) == 1.0
    ablation = locator.get_localizer("wanda", {"norm": "per_sample", "group": "matrix"})
    mathneuro = locator.get_localizer("mathneuro")
    assert ablation.localize(alone, 0.1).jaccard(mathneuro.localize(alone, 0.1)) == 1.0


@pytest.mark.parametrize("method, options", [("wanda", {}), ("wanda", {"group": "matrix"})])
def test_many_proportions_equal_single_runs(llama, tokenizer, method, options):
    stats = collect_statistics(
        llama, tokenizer, TARGET, kinds={INPUT_SQUARE_SUM}, batch_size=4, progress=False
    )
    context = build_context(llama, stats)
    localizer = locator.get_localizer(method, options)
    proportions = [0.001, 0.01, 0.05, 0.1, 0.5]
    for many, proportion in zip(
        localizer.localize_many(context, proportions), proportions, strict=True
    ):
        assert many.jaccard(localizer.localize(context, proportion)) == 1.0


# LAPE


@pytest.mark.parametrize(
    "top_rate, filter_rate, bar",
    [(0.1, 0.95, 0.95), (0.3, 0.8, 0.9), (0.5, 0.5, 0.5), (0.9, 0.7, 0.6)],
)
def test_lape_matches_fp64_batch1_reference(model, tokenizer, top_rate, filter_rate, bar):
    model64 = copy.deepcopy(model).double()
    activations = activation_modules(model, family_of(model))
    expected, ties = reference.lape(
        model64, tokenizer, LAPE_CORPORA, activations, top_rate, filter_rate, bar
    )
    for candidate in (model, model64):
        result = locator.localize(
            candidate,
            tokenizer,
            method="lape",
            target=LAPE_CORPORA[0],
            controls=LAPE_CORPORA[1:],
            proportion=top_rate,
            batch_size=3,
            progress=False,
            options={"filter_rate": filter_rate, "activation_bar_ratio": bar},
        )
        assert result.level == "neuron" and set(result.neurons) == set(expected)
        for name, neurons in result.neurons.items():
            found = {j for j in neurons.tolist() if (name, j) not in ties}
            wanted = {j for j in expected[name] if (name, j) not in ties}
            assert found == wanted, name
    if top_rate == 0.5:  # the comparison is not vacuous
        assert sum(1 for n, js in expected.items() for j in js if (n, j) not in ties) > 20


def lape_localization(model, tokenizer, proportion=0.5, **options):
    options = {"filter_rate": 0.5, "activation_bar_ratio": 0.5, **options}
    return locator.localize(
        model,
        tokenizer,
        method="lape",
        target=LAPE_CORPORA[0],
        controls=LAPE_CORPORA[1:],
        proportion=proportion,
        batch_size=3,
        progress=False,
        options=options,
    )


def test_lape_selects_exactly_the_down_projection_columns_of_its_neurons(model, tokenizer):
    result = lape_localization(model, tokenizer)
    assert result.neuron_count() > 0
    parameters = locator.scored_parameters(model)
    for name, selection in result.selections.items():
        if name not in result.neurons:
            assert selection.count == 0, name
            continue
        mask = selection.mask()
        matrix = mask.t() if parameters[name].transposed else mask  # [d_out, d_in]
        expected = torch.zeros_like(matrix)
        expected[:, result.neurons[name]] = True  # neuron j is input channel j
        assert torch.equal(matrix, expected), name
    d_model = model.config.hidden_size
    assert result.count() == result.neuron_count() * d_model
    assert result.fraction() == result.count() / result.numel()


def test_lape_prune_equals_zeroing_the_neurons_activations(model, tokenizer):
    result = lape_localization(model, tokenizer)
    activations = activation_modules(model, family_of(model))
    modules = dict(model.named_modules())
    batch = tokenizer(LAPE_CORPORA[0][:3], return_tensors="pt", padding=True)
    with torch.no_grad():
        clean = model(**batch).logits
        with locator.intervene(model, result, 0.0):
            pruned = model(**batch).logits
        handles = []
        for name, neurons in result.neurons.items():

            def zero(module, args, output, neurons=neurons):
                output = output.clone()
                output[..., neurons] = 0
                return output

            handles.append(modules[activations[name]].register_forward_hook(zero))
        try:
            zeroed = model(**batch).logits
        finally:
            for handle in handles:
                handle.remove()
    assert not torch.allclose(clean, pruned)
    torch.testing.assert_close(pruned, zeroed, rtol=1e-5, atol=1e-6)


def test_lape_many_proportions_equal_single_runs(llama, tokenizer):
    stats = [
        collect_statistics(llama, tokenizer, t, kinds={NEURON_ACTIVE_COUNT}, progress=False)
        for t in LAPE_CORPORA
    ]
    context = build_context(llama, stats[0], stats[1:])
    lape = locator.get_localizer("lape", {"filter_rate": 0.6, "activation_bar_ratio": 0.6})
    proportions = [0.01, 0.1, 0.3, 0.7, 1.0]
    results = lape.localize_many(context, proportions)
    for many, proportion in zip(results, proportions, strict=True):
        single = lape.localize(context, proportion)
        assert many.jaccard(single) == 1.0 and many.proportion == proportion
    counts = [r.neuron_count() for r in results]
    assert counts == sorted(counts) and counts[-1] > 0  # the sets grow with top_rate


def test_neuron_localization_saves_loads_and_combines(llama, tokenizer, tmp_path):
    small = lape_localization(llama, tokenizer, proportion=0.2)
    large = lape_localization(llama, tokenizer, proportion=0.6)
    loaded = locator.Localization.load(large.save(tmp_path / "lape.safetensors"))
    assert loaded.level == "neuron" and loaded.jaccard(large) == 1.0
    assert {n: v.tolist() for n, v in loaded.neurons.items()} == {
        n: v.tolist() for n, v in large.neurons.items()
    }
    assert loaded.metadata()["neuron_count"] == large.neuron_count()
    difference = large - small
    assert difference.level == "neuron"
    assert difference.neuron_count() == large.neuron_count() - small.neuron_count()
    assert difference.count() == large.count() - small.count()
    mixed = large | locator.localize(
        llama, tokenizer, method="random", target=TARGET, proportion=0.01, progress=False
    )
    assert mixed.level == "parameter" and not mixed.neurons


def test_neuron_localization_checks_its_input(gpt2):
    parameters = locator.scored_parameters(gpt2)
    down = "transformer.h.0.mlp.c_proj.weight"  # a Conv1D: neurons are rows as stored
    found = locator.Localization.from_neurons(
        {down: torch.tensor([3, 1])}, parameters, method="by-hand", proportion=None
    )
    assert found.selections[down].mask().nonzero()[:, 0].unique().tolist() == [1, 3]
    with pytest.raises(LocatorError, match="neuron index out of range"):
        locator.Localization.from_neurons(
            {down: torch.tensor([128])}, parameters, method="by-hand", proportion=None
        )
    with pytest.raises(LocatorError, match="not scored"):
        locator.Localization.from_neurons(
            {"lm_head.weight": torch.tensor([0])}, parameters, method="by-hand", proportion=None
        )
    with pytest.raises(LocatorError, match="neurons exactly when its level is 'neuron'"):
        locator.Localization(selections={}, method="x", proportion=None, level="neuron")


def test_neuron_level_random_matches_neurons_per_layer(model, tokenizer):
    lape = lape_localization(model, tokenizer)
    matched = [
        locator.localize(
            model,
            tokenizer,
            method="random",
            target=TARGET,
            proportion=0.5,
            reference=lape,
            seed=seed,
            progress=False,
        )
        for seed in (0, 0, 1)
    ]
    first = matched[0]
    assert first.level == "neuron" and first.matched_to == "lape"
    assert {n: len(v) for n, v in first.neurons.items()} == {
        n: len(v) for n, v in lape.neurons.items()
    }
    assert first.counts() == lape.counts()
    assert first.jaccard(matched[1]) == 1.0 and first.jaccard(matched[2]) < 1.0
    assert first.jaccard(lape) < 1.0


def test_lape_needs_a_control_corpus(llama, tokenizer):
    with pytest.raises(LocatorError, match="'lape' needs at least 1 control corpus"):
        locator.localize(
            llama, tokenizer, method="lape", target=TARGET, proportion=0.1, progress=False
        )


@pytest.mark.parametrize("key", ["filter_rate", "activation_bar_ratio"])
@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_lape_thresholds_must_be_in_unit_interval(key, value):
    with pytest.raises(LocatorError, match=rf"{key} must be in \[0, 1\], got {value}"):
        locator.get_localizer("lape", {key: value})


@pytest.mark.parametrize(
    "extra, message",
    [
        (["-o", "filter_rate", "1.5"], "invalid options for lape: filter_rate must be in [0, 1]"),
        ([], "method 'lape' needs at least 1 control corpus(es) besides the target, got 0"),
    ],
)
def test_cli_bad_lape_input_is_one_line_and_exit_code_2(saved_model, tmp_path, extra, message):
    (tmp_path / "target.jsonl").write_text('{"text": "one plus two"}\n')
    argv = [
        "localize",
        "--model",
        str(saved_model),
        "--method",
        "lape",
        "--target",
        str(tmp_path / "target.jsonl"),
        "--proportion",
        "0.1",
        "--out",
        str(tmp_path / "x.safetensors"),
        *extra,
    ]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output and result.output.strip().count("\n") == 0
    assert "Loading" not in result.output  # both fail before the model loads


class TestWandaContract(LocalizerContract):
    method = "wanda"
    controls = 0


class TestWandaAblationContract(LocalizerContract):
    method = "wanda"
    options = {"norm": "per_sample", "group": "matrix"}
    controls = 0


class TestLapeContract(LocalizerContract):
    method = "lape"
    options = {"filter_rate": 0.5, "activation_bar_ratio": 0.5}
    proportion = 0.5
    controls = 1
