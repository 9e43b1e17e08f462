"""Integrated gradients against the slow fp64 batch-1 reference of METHODS.md, completeness,
the published threshold and sharing rule, bad options, and its contract."""

import math

import pytest
import torch
from locator_plugins.integrated_gradients import sample_attributions

import locator
from locator.runs import ModelRunner
from locator.testing import LocalizerContract, sample_texts
from tests.plugins.helpers import assert_refused, localized
from tests.plugins.runs_reference import (
    fp64,
    ids_of,
    integrated_gradients,
    objective_of,
    run,
    sites,
    top_neurons,
)

TARGET = sample_texts(5, seed=41)
STEPS = 4


def reference_samples(model, tokenizer, scope="all", objective="log_likelihood"):
    """Per target text, in corpus order: {site: IG [n]} (fp64, batch 1)."""
    model = fp64(model)
    groups = None if scope == "all" else [[name] for name in sites(model)]
    return [
        integrated_gradients(model, ids_of(tokenizer, t), STEPS, groups, objective) for t in TARGET
    ]


def method_samples(model, tokenizer, scope="all", objective="log_likelihood"):
    """The plugin's per-sample attributions, batch 1 so rows are in corpus order."""
    runner = ModelRunner.build(
        model, tokenizer, [("target", TARGET)], locator.CalibrationOptions(batch_size=1)
    )
    runner.progress = False
    return [
        {name: a[0] for name, a in batch.items()}
        for batch in sample_attributions(runner, STEPS, scope, objective)
    ]


@pytest.mark.parametrize(
    "scope, objective",
    [("all", "log_likelihood"), ("layer", "log_likelihood"), ("all", "probability")],
)
def test_attributions_equal_the_reference(model, tokenizer, scope, objective):
    wanted = reference_samples(model, tokenizer, scope, objective)
    # Batches are longest first: compare per text, matched by order of length.
    order = sorted(range(len(TARGET)), key=lambda i: -len(ids_of(tokenizer, TARGET[i])[0]))
    got = method_samples(model, tokenizer, scope, objective)
    for row, index in enumerate(order):
        for name, value in wanted[index].items():
            torch.testing.assert_close(got[row][name], value, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("objective", ["log_likelihood", "probability"])
def test_completeness(llama, tokenizer, objective):
    """With many steps, one sample's attributions sum to F(x) - F(x | activations 0), F its
    log-likelihood log p(x) (or its tokens' mean probability)."""
    model = fp64(llama)
    with torch.no_grad():  # a random tiny MLP barely matters: make it matter
        for module in [*sites(model).values(), model.lm_head]:
            module.weight.mul_(30)
    text = TARGET[0]
    runner = ModelRunner.build(model, tokenizer, [("target", [text])], progress=False)
    (attributions,) = sample_attributions(runner, 400, "all", objective)
    total = sum(float(a.sum()) for a in attributions.values())
    ids = ids_of(tokenizer, text)
    with torch.no_grad():
        clean = float(objective_of(run(model, ids), objective))
        zeroed = run(model, ids, {n: torch.zeros_like for n in sites(model)})
        zero = float(objective_of(zeroed, objective))
    assert abs(clean - zero) > 0.05 * abs(zero)  # not a vacuous check
    assert total == pytest.approx(clean - zero, rel=1e-2)


@pytest.mark.parametrize(
    "options",
    [
        {"steps": STEPS},
        {"steps": STEPS, "threshold": 0.2, "share": 0.5},
        {"steps": STEPS, "scope": "layer"},
        {"steps": STEPS, "objective": "probability"},
    ],
)
@pytest.mark.parametrize("proportion", [0.05, 0.3])
def test_selection_equals_the_reference(model, tokenizer, options, proportion):
    samples = reference_samples(
        model, tokenizer, options.get("scope", "all"), options.get("objective", "log_likelihood")
    )
    scores = {name: sum(s[name] for s in samples) for name in samples[0]}
    if "threshold" in options:
        kept = {name: 0 for name in scores}
        for sample in samples:
            top = max(float(a.max()) for a in sample.values())
            for name, a in sample.items():
                kept[name] = kept[name] + (a > options["threshold"] * top).double()
        scores = {
            name: torch.where(kept[name] > options["share"] * len(samples), s, -math.inf)
            for name, s in scores.items()
        }
    found = localized(
        model, tokenizer, "integrated-gradients", proportion, TARGET, options=options, batch_size=2
    )
    wanted = top_neurons(scores, proportion)
    assert {name: found.neurons.get(name, torch.empty(0)).tolist() for name in wanted} == wanted


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"options": {"steps": 0}}, "'steps' of integrated-gradients must be a positive integer"),
        (
            {"options": {"threshold": 1.5}},
            "'threshold' of integrated-gradients must be a number >= 0 and <= 1",
        ),
        (
            {"options": {"share": 1.0}},
            "'share' of integrated-gradients must be a number >= 0 and < 1",
        ),
        ({"proportion": 0.001}, "selects no neuron of the model's 96"),  # before any pass
    ],
)
def test_a_bad_request_is_one_line(llama, tokenizer, arguments, message):
    assert_refused(llama, tokenizer, "integrated-gradients", TARGET, arguments, message)


class TestIntegratedGradientsContract(LocalizerContract):
    method = "integrated-gradients"
    options = {"steps": 3}
