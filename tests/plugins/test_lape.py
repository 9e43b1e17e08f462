"""LAPE (plugins/lape.py) against the slow fp64 batch-1 reference, its published mode against
LAPE.py's behaviour; neuron-level localizations; its errors and contract."""

import copy
import random

import pytest
import torch
from click.testing import CliRunner
from locator_plugins.statistics import NEURON_ACTIVE_COUNT

import locator
from locator import LocatorError
from locator.cli import cli
from locator.localizer import build_context
from locator.passes import collect_statistics
from locator.testing import LocalizerContract, sample_texts

from ..integration import reference
from ..integration.reference import activation_modules, family_of
from .helpers import assert_cuts_equal_single_runs, localized

TARGET = sample_texts(6, seed=21)


def themed_texts(words, count, seed):
    """Texts drawn from a few words, so that corpora differ in what they activate."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 20))) for _ in range(count)]


MATH = "one two three four five plus minus times equals number sum product answer".split()


PROSE = "the a cat cats dog dogs bird sees runs eats red blue small big".split()


LOGIC = "and or but if then so because question solve compute total is are".split()


LAPE_CORPORA = [themed_texts(MATH, 6, 1), themed_texts(PROSE, 5, 2), themed_texts(LOGIC, 4, 3)]


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
        result = lape_localization(
            candidate, tokenizer, top_rate, filter_rate=filter_rate, activation_bar_ratio=bar
        )
        assert result.level == "neuron" and set(result.neurons) == set(expected)
        for name, neurons in result.neurons.items():
            found = {j for j in neurons.tolist() if (name, j) not in ties}
            wanted = {j for j in expected[name] if (name, j) not in ties}
            assert found == wanted, name
    if top_rate == 0.5:  # the comparison is not vacuous
        assert sum(1 for n, js in expected.items() for j in js if (n, j) not in ties) > 20


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
    results = assert_cuts_equal_single_runs(llama, lape, context, proportions)
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


def test_lape_needs_a_control_corpus(llama, tokenizer):
    with pytest.raises(LocatorError, match="'lape' needs at least 1 control corpus"):
        locator.localize(
            llama, tokenizer, method="lape", target=TARGET, proportion=0.1, progress=False
        )


@pytest.mark.parametrize("key", ["filter_rate", "activation_bar_ratio"])
@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_lape_thresholds_must_be_in_unit_interval(key, value):
    with pytest.raises(
        LocatorError, match=rf"'{key}' of lape must be a number >= 0 and <= 1, got {value}"
    ):
        locator.get_localizer("lape", {key: value})


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["-o", "filter_rate", "1.5"],
            "option 'filter_rate' of lape must be a number >= 0 and <= 1, got '1.5'.",
        ),
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


# LAPE.py of the MathNeuro repository: only each dataset's last text counts, line by line. The
# control's last text is one long line (its padded blank line counts too) and the target's many
# short ones, so that the set LAPE.py applies, the first dataset's, is not empty.
LAPE_CONTROL = [*sample_texts(3, seed=41), " ".join(sample_texts(8, seed=42, min_words=6))]


LAPE_TARGET = [
    *sample_texts(3, seed=43),
    "\n".join(sample_texts(4, seed=44, max_words=4)) + "\r\none two\rthree",
]


def lape_neurons(model, tokenizer, proportion, filter_rate, bar, controls=(LAPE_CONTROL,)):
    result = locator.localize(
        model,
        tokenizer,
        method="lape",
        options={"mode": "published", "filter_rate": filter_rate, "activation_bar_ratio": bar},
        target=LAPE_TARGET,
        controls=list(controls),
        proportion=proportion,
        progress=False,
    )
    assert result.level == "neuron"
    return {name: set(neurons.tolist()) for name, neurons in result.neurons.items()}


@pytest.mark.parametrize(
    "top_rate, filter_rate, bar", [(0.05, 0.95, 0.95), (0.3, 0.8, 0.9), (0.6, 0.5, 0.5)]
)
def test_published_lape_matches_the_scripts_behaviour(
    model, tokenizer, tmp_path, top_rate, filter_rate, bar
):
    activations = activation_modules(model, family_of(model))
    datasets = [LAPE_CONTROL, LAPE_TARGET]  # LAPE.py: calibration datasets, then the train set
    expected, ties = reference.lape_published(
        model, tokenizer, datasets, activations, top_rate, filter_rate, bar, tmp_path
    )
    found = lape_neurons(model, tokenizer, top_rate, filter_rate, bar)
    assert set(found) == set(expected)
    for name, neurons in found.items():
        assert {j for j in neurons if (name, j) not in ties} == {
            j for j in expected[name] if (name, j) not in ties
        }, name
    if top_rate == 0.6:  # not vacuous: the first dataset's set is not empty here
        assert sum(1 for n, js in expected.items() for j in js if (n, j) not in ties) > 5


def test_published_lape_applies_the_first_controls_neurons_not_the_targets(llama, tokenizer):
    faithful = localized(llama, tokenizer, "lape", 0.6, LAPE_TARGET, [LAPE_CONTROL])
    published = lape_neurons(llama, tokenizer, 0.6, 0.5, 0.5)
    # (a control equal to the target is refused: its first texts stand in for it)
    first = (LAPE_TARGET[:-1], LAPE_CONTROL)
    swapped = lape_neurons(llama, tokenizer, 0.6, 0.5, 0.5, controls=first)
    assert published != swapped  # which dataset comes first decides the set applied
    assert published != {n: set(js.tolist()) for n, js in faithful.neurons.items()}


def test_published_lape_adds_a_pad_token_on_copies(llama, tokenizer):
    """A tokenizer without a pad token gets "[PAD]" and the model a resized embedding, as
    LAPE.py does, but on copies: the caller's model and tokenizer are unchanged."""
    no_pad = copy.deepcopy(tokenizer)
    no_pad.pad_token = None
    rows = llama.get_input_embeddings().num_embeddings
    before = copy.deepcopy(llama.state_dict())
    first = lape_neurons(llama, no_pad, 0.6, 0.5, 0.5)
    assert first == lape_neurons(llama, no_pad, 0.6, 0.5, 0.5)  # the resize is seeded
    assert no_pad.pad_token is None and llama.get_input_embeddings().num_embeddings == rows
    assert all(torch.equal(before[k], v) for k, v in llama.state_dict().items())


def test_the_published_pass_of_an_fp32_model_equals_a_bf16_load(llama, saved_model, tokenizer):
    """The authors load the model with from_pretrained(torch_dtype=bfloat16), which casts the
    weights and leaves RoPE's fp32 inv_freq alone; the bf16 copy of an fp32 model must equal it
    bit for bit (a plain .to(bfloat16) rounds inv_freq and moves every activation)."""
    from locator_plugins.mathneuro import INPUT_NORMS_BY_SAMPLE_BF16
    from transformers import AutoModelForCausalLM

    from locator.passes import collect_statistics
    from plugins.lape import LAPE_PUBLISHED_COUNT

    loaded = AutoModelForCausalLM.from_pretrained(saved_model, dtype=torch.bfloat16)
    kinds = {INPUT_NORMS_BY_SAMPLE_BF16, LAPE_PUBLISHED_COUNT}
    stats = [
        collect_statistics(m, tokenizer, LAPE_TARGET, kinds=kinds, progress=False)
        for m in (llama, loaded)
    ]
    for kind in kinds:
        for name in stats[0].names(kind):
            assert torch.equal(stats[0].get(kind, name), stats[1].get(kind, name)), (kind, name)
    assert next(llama.parameters()).dtype == torch.float32  # the caller's model is untouched


class TestLapeContract(LocalizerContract):
    method = "lape"
    options = {"filter_rate": 0.5, "activation_bar_ratio": 0.5}
    proportion = 0.5
    controls = 1
