"""The core's model runner: what its passes do, and what it guarantees around a method that runs
the model (weights bit-identical, no hook or gradient left, flags restored), also when the
method raises; the methods from the CLI and in `locator localizers`."""

import copy
import json

import pytest
import torch
from click.testing import CliRunner

import locator
from locator.cli import cli
from locator.localizer import Localizer
from locator.rows import token_rows
from locator.runs import ModelRunner, compose, record, replace, scale
from locator.testing import sample_texts
from tests.conftest import suite_toml
from tests.plugins.runs_reference import fp64, run, sites

TARGET = sample_texts(5, seed=61)
CONTROLS = [sample_texts(4, seed=62)]
METHODS = {
    "attribution-patching": {},
    "integrated-gradients": {"steps": 2},
    "learned-mask": {"steps": 2},
}


def state(model):
    """What a method must leave as it found it."""
    return {
        "weights": {n: p.detach().clone() for n, p in model.named_parameters()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "training": model.training,
    }


def assert_as_before(model, before):
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, before["weights"][name]), f"{name} changed"
        assert parameter.grad is None, f"{name} has a .grad"
        assert parameter.requires_grad == before["requires_grad"][name]
    assert model.training == before["training"]
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


@pytest.fixture
def fresh(request, tokenizer):
    """A private copy of the tiny Llama in training mode, one weight frozen."""
    model = copy.deepcopy(request.getfixturevalue("llama")).train()
    model.model.layers[0].mlp.up_proj.weight.requires_grad_(False)
    return model


def localize_each(model, tokenizer, method):
    """`method` with its test options at K = 10%; integrated gradients takes no controls."""
    controls = [] if method == "integrated-gradients" else CONTROLS
    return locator.localize(
        model,
        tokenizer,
        method=method,
        options=METHODS[method],
        target=TARGET,
        controls=controls,
        proportion=0.1,
        batch_size=2,
        progress=False,
    )


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_leaves_the_model_as_it_was(fresh, tokenizer, method):
    before = state(fresh)
    found = localize_each(fresh, tokenizer, method)
    assert found.count() > 0
    assert_as_before(fresh, before)


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_runs_on_a_bfloat16_model(llama, tokenizer, method):
    """The edits are computed in fp32 (gates, interpolations); the model's linears are bf16."""
    model = copy.deepcopy(llama).to(torch.bfloat16)
    found = localize_each(model, tokenizer, method)
    assert found.count() > 0


class Failing(Localizer):
    """Raises in the middle of a backward pass whose edit recorded activations."""

    name = "failing"
    runs_model = True

    def localize(self, context, proportion):
        store = {}
        log_probs = context.runner.token_log_probs(
            context.runner.target.batches[0], edit=record(store, grad=True), grad=True
        )
        log_probs.sum().backward()  # gradients reach only the recorded activations
        assert all(a.grad is not None for a in store.values())
        raise RuntimeError("failed on purpose")


def test_a_raising_method_leaves_the_model_as_it_was(fresh, tokenizer):
    before = state(fresh)
    with pytest.raises(RuntimeError, match="on purpose"):
        locator.localize(fresh, tokenizer, method=Failing(), target=TARGET, proportion=0.1)
    assert_as_before(fresh, before)


def test_a_method_that_writes_a_weight_is_stopped(fresh, tokenizer):
    class Editing(Localizer):
        name = "editing"
        runs_model = True

        def localize(self, context, proportion):
            with torch.no_grad():
                next(iter(context.weights.values())).mul_(1.0)  # same values, still a write
            return {}

    with pytest.raises(locator.LocatorError, match="wrote to weight 'model.layers.0"):
        locator.localize(fresh, tokenizer, method=Editing(), target=TARGET, proportion=0.1)


def test_runner_corpora_are_the_statistics_token_rows(llama, tokenizer):
    runner = ModelRunner.build(
        llama,
        tokenizer,
        [("t", TARGET), ("c", CONTROLS[0])],
        locator.CalibrationOptions(batch_size=2, max_length=6),
    )
    for corpus, texts in zip(runner.corpora, [TARGET, CONTROLS[0]], strict=True):
        rows = token_rows(tokenizer, texts, 6)
        assert corpus.rows == tuple(tuple(row) for row in rows)
        seen = sorted(
            tuple(ids[: int(mask.sum())].tolist())
            for input_ids, attention_mask in corpus.batches
            for ids, mask in zip(input_ids, attention_mask, strict=True)
        )
        assert seen == sorted(tuple(row) for row in rows)
        assert corpus.num_predicted == sum(len(row) - 1 for row in rows)


def test_edits_equal_the_same_edits_one_text_at_a_time(model, tokenizer):
    """Scaling, replacing and masking at the neuron sites of a padded batch give each row the
    log probabilities of its text edited alone (fp64); record sees every site."""
    model64 = fp64(model)
    runner = ModelRunner.build(
        model64,
        tokenizer,
        [("t", TARGET)],
        locator.CalibrationOptions(batch_size=5),
        progress=False,
    )
    names = list(runner.neurons)
    assert names == list(sites(model64))
    factors = {
        name: torch.linspace(0, 2, site.size, dtype=torch.float64)
        for name, site in runner.neurons.items()
    }
    constant = {names[0]: torch.full((runner.neurons[names[0]].size,), 0.3, dtype=torch.float64)}
    store = {}
    edit = compose(scale(factors), replace(constant), record(store))
    (batch,) = runner.target.batches
    got = runner.token_log_probs(batch, edit=edit)
    assert set(store) == set(names)
    edits = {
        name: (
            lambda x, name=name: (
                constant[name].expand_as(x) if name in constant else x * factors[name]
            )
        )
        for name in names
    }
    for row, (ids, mask) in enumerate(zip(*batch, strict=True)):
        length = int(mask.sum())
        with torch.no_grad():
            wanted = run(model64, ids[None, :length], edits)
        torch.testing.assert_close(got[row, : length - 1], wanted, rtol=1e-10, atol=1e-10)
        assert not got[row, length - 1 :].any()  # padding predicts nothing


def test_linear_input_sites_are_keyed_by_parameter_name(llama, tokenizer):
    runner = ModelRunner.build(llama, tokenizer, [("t", TARGET)], progress=False)
    store = {}
    runner.token_log_probs(runner.target.batches[0], edit=record(store), site="linear_input")
    assert list(store) == list(runner.parameters)
    with torch.no_grad():
        zeroed = runner.token_log_probs(
            runner.target.batches[0],
            edit=scale({name: 0.0 for name in runner.parameters}),
            site="linear_input",
        )
    assert not torch.equal(zeroed, runner.token_log_probs(runner.target.batches[0]))


def test_cli_localize_runs_a_model_running_method(saved_model, tmp_path):
    (tmp_path / "target.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in TARGET))
    (tmp_path / "control.jsonl").write_text(json.dumps({"text": CONTROLS[0][0]}) + "\n")
    out = tmp_path / "loc.safetensors"
    argv = ["localize", "--model", str(saved_model), "--method", "attribution-patching"]
    argv += [
        "--target",
        str(tmp_path / "target.jsonl"),
        "--control",
        str(tmp_path / "control.jsonl"),
    ]
    argv += ["--proportion", "0.1", "--out", str(out)]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 0, result.output
    loaded = locator.Localization.load(out)
    assert loaded.method == "attribution-patching" and loaded.level == "neuron"


def test_cli_bad_option_is_one_line_exit_2(saved_model, tmp_path):
    (tmp_path / "target.jsonl").write_text(json.dumps({"text": TARGET[0]}) + "\n")
    argv = ["localize", "--model", str(saved_model), "--method", "integrated-gradients"]
    argv += ["--target", str(tmp_path / "target.jsonl"), "--proportion", "0.1"]
    argv += ["--out", str(tmp_path / "x"), "-o", "threshold", "2"]
    result = CliRunner().invoke(cli, argv)
    assert (
        result.exit_code == 2
        and "'threshold' of integrated-gradients must be a number >= 0 and <= 1" in result.output
    )
    assert result.output.strip().count("\n") == 0


def test_localizers_lists_the_methods():
    names = {
        row["name"] for row in json.loads(CliRunner().invoke(cli, ["localizers", "--json"]).output)
    }
    assert set(METHODS) <= names


@pytest.mark.parametrize("method", list(METHODS))
def test_an_unknown_mlp_layout_fails_in_one_line_before_any_pass(llama, tokenizer, method):
    model = copy.deepcopy(llama)
    for layer in model.model.layers:  # a layout no table knows (and a forward that would fail)
        layer.mlp.out_proj = layer.mlp.down_proj
        del layer.mlp.down_proj
    controls = [] if method == "integrated-gradients" else CONTROLS
    with pytest.raises(locator.LocatorError, match="no recognizable MLP") as error:
        locator.localize(
            model,
            tokenizer,
            method=method,
            target=TARGET,
            controls=controls,
            proportion=0.1,
            progress=False,
        )
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("family", ["mistral", "qwen2", "gemma2", "phi", "gpt_neox", "opt"])
def test_every_family_runs_and_is_left_as_it_was(tokenizer, family):
    """OPT flattens a batch's tokens around its MLP; Gemma 2 ties its head; all run."""
    from locator.testing import tiny_model

    model = tiny_model(family, vocab_size=len(tokenizer))
    before = state(model)
    for method, options in METHODS.items():
        controls = [] if method == "integrated-gradients" else CONTROLS
        found = locator.localize(
            model, tokenizer, method=method, options=options, target=TARGET, controls=controls,
            proportion=0.05, batch_size=2, progress=False,
        )  # fmt: skip
        assert found.level == "neuron" and found.count() > 0
    assert_as_before(model, before)


def test_a_context_without_a_runner_is_a_one_line_error(llama, tokenizer):
    from locator.localizer import build_context
    from locator.passes import collect_statistics

    stats = collect_statistics(llama, tokenizer, TARGET, kinds=set(), progress=False)
    context = build_context(llama, stats)
    method = locator.get_localizer("integrated-gradients")
    with pytest.raises(locator.LocatorError, match="runs the model, and its context has no runner"):
        locator.run_method(llama, method, context, [0.1])


def test_a_suite_runs_the_methods_and_a_baseline_matched_to_one(tmp_path):
    from locator.toy import checkpoint_path

    suite = tmp_path / "suite.toml"
    text = suite_toml(
        checkpoint_path(), target="toy-arithmetic", controls=["toy-language"], name="runs",
        proportions=[0.05], factors=[0.0], seeds=[0], num_samples=[16], matched_baseline=False,
        methods=[
            {"name": "attribution-patching"},
            {"name": "integrated-gradients", "options": {"steps": 2}},
            {"name": "learned-mask", "options": {"steps": 2}},
            {"name": "random", "match": "learned-mask"},
        ],
        tasks=[{"name": "toy-language", "limit": 8}],
    )  # fmt: skip
    suite.write_text(text)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["bench", str(suite), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    import pyarrow.parquet as pq

    labels = {row["label"] for row in pq.read_table(out).to_pylist()}
    assert labels == {*METHODS, "random-matched-learned-mask"}
