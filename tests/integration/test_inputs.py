"""Inputs a pass cannot read as they are: rows longer than the model's positions, corpora without
content or equal to the target, files that are not UTF-8; provenance that tells every selection
apart; `Localization.save` that never overwrites silently; one rule for controls everywhere.
Each bad input is a one-line error (CLI: exit 2) before the model loads."""

import json

import pytest
import torch
from click.testing import CliRunner

import locator
from locator.bench.suite import load_suite
from locator.cli import cli
from locator.data import read_texts
from locator.errors import LocatorError
from locator.localization import Localization
from locator.passes import collect_statistics
from locator.rows import corpus_rows, model_positions
from locator.runs import ModelRunner
from locator.testing import sample_texts
from tests.conftest import suite_toml

POSITIONS = 128  # the tiny models' max_position_embeddings / n_positions


def _long_text(tokenizer, tokens):
    """A text of at least `tokens` tokens."""
    text = " ".join(sample_texts(400, seed=5))
    assert len(tokenizer(text)["input_ids"]) > tokens
    return text


def test_the_positions_are_read_from_either_config_key(llama, gpt2):
    assert model_positions(llama) == model_positions(gpt2) == POSITIONS
    assert model_positions(torch.nn.Linear(2, 2)) is None


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_text_longer_than_the_positions_is_cut_to_them(family, tokenizer, request):
    model = request.getfixturevalue(family)
    long = _long_text(tokenizer, 4 * POSITIONS)
    texts = [long, *sample_texts(3)]
    kinds = {"input_square_sum"}
    with pytest.warns(locator.LocatorWarning, match="1 of 4 texts are longer than the model's 128"):
        found = collect_statistics(
            model, tokenizer, texts, kinds=kinds, batch_size=2, progress=False
        )
    cut = collect_statistics(
        model, tokenizer, texts, kinds=kinds, batch_size=2, max_length=POSITIONS, progress=False
    )  # the stated rule: max_length = the model's positions
    assert found.num_tokens == cut.num_tokens <= POSITIONS * len(texts)
    for name, value in found.values["input_square_sum"].items():
        torch.testing.assert_close(value, cut.values["input_square_sum"][name])


def test_the_model_runner_cuts_the_same_rows(gpt2, tokenizer):
    long = _long_text(tokenizer, 2 * POSITIONS)
    with pytest.warns(locator.LocatorWarning, match="1 of 2 texts are longer"):
        runner = ModelRunner.build(gpt2, tokenizer, [("target", [long, "a cat"])], progress=False)
    assert max(len(row) for row in runner.target.rows) == POSITIONS
    assert [list(r) for r in runner.target.rows] == corpus_rows(
        tokenizer, [long, "a cat"], locator.CalibrationOptions(max_length=POSITIONS)
    )


def test_a_pack_longer_than_the_positions_is_refused(gpt2, tokenizer):
    long = _long_text(tokenizer, 4 * POSITIONS)
    with pytest.raises(LocatorError, match="pack 200 is longer than the model's 128 positions"):
        locator.localize(
            gpt2, tokenizer, method="wanda", target=[long], proportion=0.1, pack=200, progress=False
        )


def test_gpt2_localizes_a_long_text_and_records_the_cut(gpt2, tokenizer):
    long = _long_text(tokenizer, 4 * POSITIONS)
    with pytest.warns(locator.LocatorWarning, match="cut to their first 128 tokens"):
        found = locator.localize(
            gpt2, tokenizer, method="wanda", target=[long], proportion=0.1, progress=False
        )
    assert found.provenance["positions"] == POSITIONS


@pytest.mark.parametrize("texts", [["", ""], ["  ", "\n"]])
def test_corpora_without_content_are_refused(llama, tokenizer, texts):
    with pytest.raises(LocatorError, match="empty or blank"):
        locator.localize(
            llama, tokenizer, method="wanda", target=texts, proportion=0.1, progress=False
        )
    with pytest.raises(LocatorError, match="empty or blank"):
        locator.localize(
            llama, tokenizer, method="mathneuro", target=sample_texts(2), controls=[texts],
            proportion=0.1, progress=False,
        )  # fmt: skip


def test_a_control_equal_to_the_target_is_refused_before_any_pass(llama, tokenizer):
    texts = sample_texts(3)
    with pytest.raises(LocatorError, match="same texts as the target"):
        locator.localize(
            llama, tokenizer, method="mathneuro", target=texts, controls=[list(texts)],
            proportion=0.1, progress=False,
        )  # fmt: skip


# Provenance: every option that changes a selection is in it.


def _identity(found):
    """What a localization says it is: everything but the outcome (its counts)."""
    metadata = found.metadata()
    for outcome in ("count", "fraction", "neuron_count"):
        metadata.pop(outcome)
    metadata["provenance"] = {k: v for k, v in metadata["provenance"].items() if k != "versions"}
    return json.dumps(metadata, sort_keys=True)


def test_two_different_selections_never_carry_identical_provenance(llama, tokenizer):
    texts = sample_texts(6, seed=1)
    controls = sample_texts(6, seed=2)
    base = {"method": "mathneuro", "target": texts, "controls": [controls], "proportion": 0.05}
    variants = {
        "base": {},
        "pack": {"pack": 8},
        "other pack": {"pack": 12},
        "max_length": {"max_length": 6},
        "batch_size": {"batch_size": 1},
        "seed": {"seed": 3},
        "texts": {"target": texts[:4]},
        "option": {"options": {"mode": "published"}},
        "proportion": {"proportion": 0.2},
    }
    found = {
        name: locator.localize(llama, tokenizer, progress=False, **{**base, **change})
        for name, change in variants.items()
    }
    assert found["pack"].provenance["pack"] == 8
    for first in found:
        for second in found:
            if first < second and found[first].content_hash() != found[second].content_hash():
                assert _identity(found[first]) != _identity(found[second]), (first, second)
    assert found["base"].content_hash() != found["pack"].content_hash()


def test_drawing_options_are_in_the_provenance(llama, tokenizer):
    base = {"method": "wanda", "target": "toy-arithmetic", "proportion": 0.05, "num_samples": 4}
    variants = {"base": {}, "num_samples": {"num_samples": 3}, "replace": {"replace": True}}
    found = {
        name: locator.localize(llama, tokenizer, progress=False, **{**base, **change})
        for name, change in variants.items()
    }
    for first in found:
        for second in found:
            if first < second and found[first].content_hash() != found[second].content_hash():
                assert _identity(found[first]) != _identity(found[second]), (first, second)


def test_a_matched_baseline_records_its_reference(llama, tokenizer):
    texts = sample_texts(4)
    references = [
        locator.localize(
            llama, tokenizer, method="wanda", target=texts, proportion=p, progress=False
        )
        for p in (0.05, 0.2)
    ]
    matched = [
        locator.localize(
            llama,
            tokenizer,
            method="random",
            target=texts,
            proportion=0.1,
            reference=r,
            progress=False,
        )
        for r in references
    ]
    assert matched[0].content_hash() != matched[1].content_hash()
    assert _identity(matched[0]) != _identity(matched[1])
    assert matched[0].provenance["reference"] == references[0].content_hash()


def test_save_never_overwrites_silently(llama, tokenizer, tmp_path):
    found = locator.localize(
        llama, tokenizer, method="random", target=sample_texts(2), proportion=0.1, progress=False
    )
    other = tmp_path / "notes.safetensors"
    other.write_text("mine")
    with pytest.raises(LocatorError, match="not a localization file"):
        found.save(other)
    with pytest.raises(LocatorError, match="not a localization file"):
        found.save(other, overwrite=True)
    assert other.read_text() == "mine"
    path = found.save(tmp_path / "found.safetensors")
    before = path.read_bytes()
    with pytest.raises(LocatorError, match="pass overwrite=True"):
        found.save(path)
    assert path.read_bytes() == before
    assert Localization.load(found.save(path, overwrite=True)).content_hash() == (
        found.content_hash()
    )


# Files that are not UTF-8.


def test_a_jsonl_file_that_is_not_utf8_names_the_file_and_position(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"text": "a"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(LocatorError, match=r"latin1.jsonl' is not UTF-8 text: .* line 2"):
        read_texts(path)


def test_a_task_yaml_that_is_not_utf8_is_one_line(tmp_path):
    from locator.evaluation import route

    path = tmp_path / "task.yaml"
    path.write_bytes(b"task: caf\xe9\n")
    with pytest.raises(LocatorError, match="task file .* is not UTF-8 text"):
        route([str(path)])


# Through the CLI: one line, exit 2, nothing written, the model not loaded.


@pytest.fixture(scope="module")
def folder(tmp_path_factory, llama, tokenizer):
    """A saved tiny Llama (one copy with a chat template that renders nothing) and corpora."""
    root = tmp_path_factory.mktemp("inputs")
    for name, template in [("model", None), ("silent-chat", "{{ '' }}")]:
        llama.save_pretrained(root / name)
        tokenizer.chat_template = template
        tokenizer.save_pretrained(root / name)
    tokenizer.chat_template = None

    def jsonl(name, texts):
        (root / name).write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))

    jsonl("target.jsonl", sample_texts(4, seed=3))
    jsonl("control.jsonl", sample_texts(4, seed=4))
    jsonl("empty.jsonl", ["", " "])
    (root / "latin1.jsonl").write_bytes(b'{"text": "caf\xe9"}\n')
    return root


def _suite(folder, controls=("toy-language",), method=None):
    return suite_toml(
        folder / "model", target="toy-arithmetic", controls=controls, proportions=[0.1],
        factors=[0.0], seeds=[0], num_samples=[2], methods=[method or {"name": "mathneuro"}],
        tasks=[{"name": "toy-arithmetic", "limit": 2}],
    )  # fmt: skip


WANDA_WITH_CONTROLS = {"name": "wanda", "controls": ["toy-language"]}


def _localize(folder, *extra, target="target.jsonl", model="model"):
    return [
        "localize", "--model", str(folder / model), "--method", "mathneuro",
        "--target", str(folder / target), "--control", str(folder / "control.jsonl"),
        "--proportion", "0.1", "--out", str(folder / "out.safetensors"), *extra,
    ]  # fmt: skip


CLI_CASES = {
    "pack longer than the positions": (
        lambda f: _localize(f, "--pack", "500"),
        "pack 500 is longer than the model's 128 positions",
    ),
    "pack longer than the corpus": (
        lambda f: _localize(f, "--pack", "120"),
        "has no tokens after tokenization in rows of 120",
    ),
    "all-empty target": (lambda f: _localize(f, target="empty.jsonl"), "empty or blank"),
    "control equal to the target": (
        lambda f: _localize(f, target="control.jsonl"),
        "same texts as the target",
    ),
    "no chat template": (lambda f: _localize(f, "--chat-template"), "has no chat template"),
    "a chat template that renders nothing": (
        lambda f: _localize(f, "--chat-template", model="silent-chat"),
        "renders the texts of corpus target as nothing",
    ),
    "target not UTF-8": (
        lambda f: _localize(f, target="latin1.jsonl"),
        "latin1.jsonl' is not UTF-8 text: byte 0xe9 at line 1",
    ),
    "suite not UTF-8": (
        lambda f: ["bench", str(f / "latin1.toml"), "--out", str(f / "results")],
        "latin1.toml' is not UTF-8 text",
    ),
    "suite with a control equal to the target": (
        lambda f: ["bench", str(f / "same.toml"), "--out", str(f / "results")],
        "is the target itself",
    ),
    "suite with controls on a target-only method": (
        lambda f: ["bench", str(f / "wanda.toml"), "--out", str(f / "results")],
        "reads the target alone",
    ),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_bad_input_is_one_line_before_the_model_loads(folder, case, monkeypatch):
    import locator.models

    (folder / "latin1.toml").write_bytes(_suite(folder).encode() + b"# caf\xe9\n")
    (folder / "same.toml").write_text(_suite(folder, controls=["toy-arithmetic"]))
    (folder / "wanda.toml").write_text(_suite(folder, (), WANDA_WITH_CONTROLS))
    argv, message = CLI_CASES[case]
    loads = []
    monkeypatch.setattr(locator.models.ModelOptions, "load", lambda options: loads.append(1))
    before = sorted(p.name for p in folder.iterdir())
    result = CliRunner().invoke(cli, argv(folder))
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("Error: ") and result.output.count("Error") == 1, result.output
    assert "Traceback" not in result.output and message in line, line
    assert not loads, "the model was loaded before the input was checked"
    assert sorted(p.name for p in folder.iterdir()) == before


def test_a_suite_refuses_controls_on_a_target_only_method(folder, tmp_path):
    path = tmp_path / "suite.toml"
    path.write_text(_suite(folder, (), WANDA_WITH_CONTROLS))
    with pytest.raises(LocatorError, match=r"methods\[0\]\.controls.*reads the target alone"):
        load_suite(path)


def test_the_cli_cuts_a_long_text_says_so_and_records_it(folder, tokenizer, tmp_path):
    long = _long_text(tokenizer, 2 * POSITIONS)
    (tmp_path / "long.jsonl").write_text(json.dumps({"text": long}) + "\n")
    out = tmp_path / "found.safetensors"
    argv = ["localize", "--model", str(folder / "model"), "--method", "wanda", "--target"]
    argv += [str(tmp_path / "long.jsonl"), "--proportion", "0.1", "--out", str(out)]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 0, result.output
    assert "cut to their first 128 tokens" in result.output
    assert Localization.load(out).provenance["positions"] == POSITIONS
    again = CliRunner().invoke(cli, argv)  # a localization file locator wrote is replaced
    assert again.exit_code == 0, again.output
