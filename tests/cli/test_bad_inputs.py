"""A broad list of bad inputs through the CLI (one through a real subprocess) and the API: each
gives one line, exit code 2 (API: a `LocatorError`), before any expensive work, leaving no
partial file and losing nothing."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

import locator
from locator.cli import cli
from locator.errors import LocatorError
from locator.localization import Localization
from locator.testing import sample_texts, tiny_model
from tests.conftest import suite_toml


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, llama, tokenizer):
    """A saved tiny Llama, broken copies of it, corpora and a localization made on it."""
    root = tmp_path_factory.mktemp("bad")
    model = root / "model"
    llama.save_pretrained(model)
    tokenizer.save_pretrained(model)
    (root / "empty-model").mkdir()
    for name, change in [("no-type", lambda c: c.pop("model_type")), ("shapes", None)]:
        folder = root / name
        llama.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        config = json.loads((folder / "config.json").read_text())
        if change:
            change(config)
        else:
            config["hidden_size"] *= 2
        (folder / "config.json").write_text(json.dumps(config))
    texts = "\n".join(json.dumps({"text": t}) for t in sample_texts(4, seed=3))
    (root / "target.jsonl").write_text(texts)
    controls = "\n".join(json.dumps({"text": t}) for t in sample_texts(4, seed=4))
    (root / "control.jsonl").write_text(controls)
    found = locator.localize(
        llama, tokenizer, method="random", target=sample_texts(2), proportion=0.01, progress=False
    )
    found.save(root / "good.safetensors")
    _corrupt_localization(found, root / "corrupt.safetensors")
    other = tiny_model("gpt2", vocab_size=len(tokenizer))
    locator.localize(
        other, tokenizer, method="random", target=sample_texts(2), proportion=0.1, progress=False
    ).save(root / "gpt2.safetensors")
    (root / "foreign").mkdir()
    (root / "foreign" / "notes.txt").write_text("mine")
    (root / "a-file").write_text("not a folder")
    return root


def _corrupt_localization(found, path):
    """Save `found` with one index list pointing past its parameter's end."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    found.save(path)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(path)
    key = next(k for k in tensors if k.endswith(".indices") and tensors[k].numel())
    tensors[key][-1] = 10**8
    save_file(tensors, str(path), metadata=metadata)


def _snapshot(root):
    return sorted(
        (str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*")
    )


def _localize(workspace, *extra, **options):
    values = {
        "--model": str(workspace / "model"),
        "--method": "mathneuro",
        "--target": str(workspace / "target.jsonl"),
        "--proportion": "0.1",
        "--out": str(workspace / "out.safetensors"),
        **options,
    }
    if values["--method"] == "mathneuro" and "--control" not in extra:
        extra = (*extra, "--control", str(workspace / "control.jsonl"))
    return ["localize", *[x for pair in values.items() for x in pair], *extra]


def _localize_on(model_folder):
    """The arguments of `_localize` on the model in `model_folder` of the workspace."""
    return lambda workspace: _localize(workspace, **{"--model": str(workspace / model_folder)})


def _evaluate(workspace, **options):
    values = {
        "--model": str(workspace / "model"),
        "--task": "toy-arithmetic",
        "--limit": "2",
        "--localization": str(workspace / "good.safetensors"),
        "--factor": "0",
        **options,
    }
    return ["evaluate", *[x for pair in values.items() for x in pair]]


def _edit(workspace, *extra, **options):
    values = {
        "--model": str(workspace / "model"),
        "--localization": str(workspace / "good.safetensors"),
        "--factor": "0",
        "--out": str(workspace / "edited"),
        **options,
    }
    return ["edit", *[x for pair in values.items() for x in pair], *extra]


CASES = {
    "max-length 0": (lambda w: _localize(w, "--max-length", "0"), "max_length must be"),
    "max-length -1": (lambda w: _localize(w, "--max-length", "-1"), "max_length must be"),
    "proportion nan": (lambda w: _localize(w, **{"--proportion": "nan"}), "proportion"),
    "batch size 0": (lambda w: _localize(w, "--batch-size", "0"), "batch_size must be"),
    "toy train with a negative seed": (
        lambda w: ["toy", "train", "--out", str(w / "toy"), "--seed", "-1"],
        "seed must be an integer >= 0",
    ),
    "out is a folder": (lambda w: _localize(w, **{"--out": str(w)}), "is a directory"),
    "out under a file": (
        lambda w: _localize(w, **{"--out": str(w / "a-file" / "x.safetensors")}),
        "is a file, not a folder",
    ),
    "out is another file": (
        lambda w: _localize(w, **{"--out": str(w / "model" / "model.safetensors")}),
        "not a file locator wrote",
    ),
    "target-only method with a control": (
        lambda w: _localize(w, "--control", str(w / "control.jsonl"), **{"--method": "wanda"}),
        "reads the target alone",
    ),
    "corrupt reference": (
        lambda w: _localize(
            w, "--reference", str(w / "corrupt.safetensors"), **{"--method": "random"}
        ),
        "is corrupt",
    ),
    "empty model folder": (_localize_on("empty-model"), "is empty"),
    "config without model_type": (_localize_on("no-type"), "has no 'model_type' key"),
    "weights not matching the config": (_localize_on("shapes"), "do not match its config.json"),
    "evaluate factor nan": (lambda w: _evaluate(w, **{"--factor": "nan"}), "finite number"),
    "evaluate factor inf": (lambda w: _evaluate(w, **{"--factor": "inf"}), "finite number"),
    "evaluate corrupt localization": (
        lambda w: _evaluate(w, **{"--localization": str(w / "corrupt.safetensors")}),
        "is corrupt",
    ),
    "evaluate localization of another model": (
        lambda w: _evaluate(w, **{"--localization": str(w / "gpt2.safetensors")}),
        "does not match the model",
    ),
    "edit factor -inf": (lambda w: _edit(w, **{"--factor": "-inf"}), "finite number"),
    "edit into a foreign folder": (
        lambda w: _edit(w, **{"--out": str(w / "foreign")}),
        "was not written by locator",
    ),
    "edit into a foreign folder with --force": (
        lambda w: _edit(w, "--force", **{"--out": str(w / "foreign")}),
        "was not written by locator",
    ),
    "edit into a file": (lambda w: _edit(w, **{"--out": str(w / "a-file")}), "is a file"),
    "edit over the input model": (
        lambda w: _edit(w, "--force", **{"--out": str(w / "model")}),
        "was not written by locator",
    ),
    "bench into a foreign folder": (
        lambda w: ["bench", str(w / "suite.toml"), "--out", str(w / "foreign")],
        "was not written by locator",
    ),
    "report of a folder with a corrupt part": (
        lambda w: ["report", str(w / "results")],
        "is corrupt",
    ),
    "report into a foreign folder": (
        lambda w: ["report", str(w / "results"), "--out", str(w / "foreign")],
        "was not written by locator",
    ),
    "toy train with 0 steps": (
        lambda w: ["toy", "train", "--out", str(w / "toy"), "--steps", "0"],
        "steps must be an integer >= 1",
    ),
    "toy train over a foreign folder": (
        lambda w: ["toy", "train", "--out", str(w / "foreign"), "--steps", "1"],
        "was not written by locator",
    ),
    "toy train over the shipped checkpoint without --force": (
        lambda w: ["toy", "train", "--out", str(w / "toy-model"), "--steps", "1"],
        "pass --force",
    ),
}


@pytest.fixture(scope="module")
def prepared(workspace):
    """The extra files some cases need: a suite, a results folder with a corrupt part, a toy
    model folder; and the plugins' commands (``toy train``)."""
    from locator.plugins import plugin_manager

    if "toy" not in cli.commands:
        plugin_manager().hook.register_commands(cli=cli)
    suite = suite_toml(
        workspace / "model", target="toy-arithmetic", proportions=[0.1], factors=[0.0],
        seeds=[0], num_samples=[2], methods=[{"name": "random"}],
        tasks=[{"name": "toy-arithmetic", "limit": 2}],
    )  # fmt: skip
    (workspace / "suite.toml").write_text(suite)
    results = workspace / "results"
    results.mkdir()
    (results / "_suite.json").write_text("{}")
    (results / "part-0123456789abcdef.parquet").write_bytes(b"PAR1 not really parquet")
    toy = workspace / "toy-model"
    toy.mkdir()
    (toy / "toy_training.json").write_text("{}")
    return workspace


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_cli_input_is_one_line_exit_2_and_writes_nothing(prepared, case, monkeypatch):
    import locator.models

    argv, message = CASES[case]
    loads = []
    real = locator.models.ModelOptions.load
    monkeypatch.setattr(
        locator.models.ModelOptions, "load", lambda options: loads.append(1) or real(options)
    )
    before = _snapshot(prepared)
    result = CliRunner().invoke(cli, argv(prepared))
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]  # above it only transformers' progress bar
    assert line.startswith("Error: ") and result.output.count("Error") == 1, result.output
    assert "Traceback" not in result.output and message in line, line
    assert _snapshot(prepared) == before, "a file was written, changed or left behind"
    if "model" not in case and "weights" not in case and "another model" not in case:
        assert not loads, "the model was loaded before the input was checked"


def test_a_bad_input_through_a_real_process_is_one_line(workspace):
    argv = _localize(workspace, "--max-length", "-1")
    command = [sys.executable, "-c", "from locator.cli import main; main()", *argv]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=os.environ)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().startswith("Error: max_length must be") and done.stdout == ""
    assert done.stderr.strip().count("\n") == 0, done.stderr


def test_ctrl_c_exits_130_and_leaves_nothing(workspace, monkeypatch):
    import locator.models

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(locator.models.ModelOptions, "load", interrupted)
    before = _snapshot(workspace)
    result = CliRunner().invoke(cli, _edit(workspace, **{"--out": str(workspace / "new")}))
    assert result.exit_code == 130 and "Interrupted" in result.output
    assert _snapshot(workspace) == before


def test_edit_records_the_edit_and_replaces_only_its_own_folder_with_force(workspace):
    out = workspace / "edited-ok"
    assert CliRunner().invoke(cli, _edit(workspace, **{"--out": str(out)})).exit_code == 0
    record = json.loads((out / "locator_edit.json").read_text())
    found = Localization.load(workspace / "good.safetensors")
    assert record["method"] == "random" and record["factor"] == 0.0
    assert record["localization_hash"] == found.content_hash()
    assert json.loads((out / "config.json").read_text())["locator_edit"]["factor"] == 0.0
    assert record["provenance"]["model"]["fingerprint"]
    again = CliRunner().invoke(cli, _edit(workspace, **{"--out": str(out)}))
    assert again.exit_code == 2 and "pass --force" in again.output
    forced = CliRunner().invoke(cli, _edit(workspace, "--force", **{"--out": str(out)}))
    assert forced.exit_code == 0, forced.output
    assert not [p for p in workspace.iterdir() if p.name.startswith(".")]
    (out / "notes.txt").write_text("the user's")  # --force must not delete what it did not write
    refused = CliRunner().invoke(cli, _edit(workspace, "--force", **{"--out": str(out)}))
    assert refused.exit_code == 2 and "notes.txt" in refused.output, refused.output
    assert (out / "notes.txt").read_text() == "the user's"
    copied = workspace / "copied"  # nor is a copied marker enough
    copied.mkdir()
    for name in ("locator_edit.json", ".locator-written.json"):
        (copied / name).write_bytes((out / name).read_bytes())
    refused = CliRunner().invoke(cli, _edit(workspace, "--force", **{"--out": str(copied)}))
    assert refused.exit_code == 2 and "did not write" in refused.output, refused.output
    assert sorted(p.name for p in copied.iterdir()) == [
        ".locator-written.json",
        "locator_edit.json",
    ]


# The API: the same rules.


@pytest.mark.parametrize("factor", [math.nan, math.inf, -math.inf, True, "0", None])
def test_intervention_factors_must_be_finite_numbers(llama, workspace, factor):
    found = Localization.load(workspace / "good.safetensors")
    before = {n: p.clone() for n, p in llama.named_parameters()}
    with pytest.raises(LocatorError, match="finite number"):
        with locator.intervene(llama, found, factor):
            pass
    with pytest.raises(LocatorError, match="finite number"):
        locator.apply(llama, found, factor)
    assert all(torch.equal(p, before[n]) for n, p in llama.named_parameters())


def test_a_path_where_a_localization_belongs_is_one_line(llama, workspace):
    path = str(workspace / "good.safetensors")
    with pytest.raises(LocatorError, match="expected a Localization"):
        locator.apply(llama, path, 0.0)
    with pytest.raises(LocatorError, match="Localization.load"):
        Localization.load(path).jaccard(path)


@pytest.mark.parametrize("max_length", [0, -1, True, 2.5])
def test_localize_refuses_a_bad_max_length(llama, tokenizer, max_length):
    with pytest.raises(LocatorError, match="max_length"):
        locator.localize(
            llama,
            tokenizer,
            method="random",
            target=["a b"],
            proportion=0.1,
            max_length=max_length,
            progress=False,
        )


def test_corrupt_localization_files_fail_on_load(workspace, tmp_path):
    with pytest.raises(LocatorError, match="is corrupt"):
        Localization.load(workspace / "corrupt.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes((workspace / "good.safetensors").read_bytes()[:-7])
    with pytest.raises(LocatorError):
        Localization.load(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(LocatorError):
        Localization.load(garbage)


def test_save_to_a_folder_or_an_unwritable_place_is_one_line_and_leaves_nothing(workspace):
    found = Localization.load(workspace / "good.safetensors")
    before = _snapshot(workspace)
    for target in (workspace / "foreign", workspace / "a-file" / "x.safetensors"):
        with pytest.raises(LocatorError, match="cannot write"):
            found.save(target)
    assert _snapshot(workspace) == before


def test_sigint_to_a_real_process_exits_130_and_leaves_nothing(tmp_path):
    import signal
    import time

    out = tmp_path / "toy"
    command = [sys.executable, "-m", "locator", "toy", "train", "--out", str(out)]
    command += ["--steps", "100000"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=os.environ)
    seen = ""
    deadline = time.monotonic() + 120
    while "toy training" not in seen and time.monotonic() < deadline:
        seen += process.stderr.read(1)  # the progress bar appears once training runs
    process.send_signal(signal.SIGINT)
    rest = process.communicate(timeout=60)[1]
    assert process.returncode == 130, seen + rest
    assert "Interrupted" in rest and "Traceback" not in rest
    assert list(tmp_path.iterdir()) == []
