"""The CLI and plugin loading: a separately installed package, a broken one, errors as one line."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from locator.cli import cli
from tests.conftest import suite_toml

# The example packages the documentation includes (docs/plugins.md), installed here for real.
EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def _localize(model, method, target, proportion, out, *extra):
    """The arguments of ``locator localize``."""
    return [
        "localize", "--model", str(model), "--method", method, "--target", str(target),
        "--proportion", proportion, "--out", str(out), *extra,
    ]  # fmt: skip


def _package(root, name, module_source, entry_point):
    (root / name).mkdir()
    (root / name / f"{name}.py").write_text(module_source)
    (root / name / "pyproject.toml").write_text(
        textwrap.dedent(f'''
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{name.replace("_", "-")}"
        version = "0.3"
        [project.entry-points.locator]
        {entry_point} = "{name}"
        [tool.setuptools]
        py-modules = ["{name}"]
    ''')
    )
    return root / name


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Packages installed with pip into a folder: the two documented examples and a broken one."""
    root = tmp_path_factory.mktemp("plugins")
    target = root / "site"
    # Copies: building in place would leave build/ and *.egg-info in docs/examples.
    good = shutil.copytree(EXAMPLES / "locator-magnitude", root / "locator-magnitude")
    statistic = shutil.copytree(EXAMPLES / "locator-absmax", root / "locator-absmax")
    broken = _package(
        root, "locator_broken", "raise ImportError('missing dependency xyz')\n", "broken"
    )
    for package in (good, statistic, broken):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "--target",
                str(target),
                str(package),
            ],
            check=True,
            capture_output=True,
        )
    return target


def _run(installed, *args, code=None):
    env = {**os.environ, "PYTHONPATH": str(installed)}
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "locator", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_installed_package_registers_a_method_that_lists_and_runs(installed, saved_model, tmp_path):
    listing = _run(installed, "localizers", "--json")
    assert listing.returncode == 0, listing.stderr
    rows = {row["name"]: row for row in json.loads(listing.stdout)}
    assert {"magnitude", "mathneuro", "random"} <= set(rows)
    assert rows["magnitude"]["plugin"] == "magnitude"
    assert rows["magnitude"]["options"] == {"power": 1.0}
    # The broken plugin costs one warning naming its distribution; the rest still load.
    assert "plugin 'broken' from locator-broken 0.3 failed to load" in listing.stderr
    assert listing.stderr.count("failed to load") == 1

    (tmp_path / "t.jsonl").write_text('{"text": "one two three"}\n{"text": "four five"}\n')
    out = tmp_path / "m.safetensors"
    argv = _localize(saved_model, "magnitude", tmp_path / "t.jsonl", "0.1", out, "-o", "power", "2")
    run = _run(installed, *argv)
    assert run.returncode == 0, run.stderr
    assert "magnitude: selected" in run.stdout
    code = (
        f"import locator; l = locator.Localization.load({str(out)!r}); "
        "print(l.method, l.config['power'], round(l.fraction(), 3))"
    )
    assert _run(installed, code=code).stdout.split() == ["magnitude", "2.0", "0.1"]


def test_installed_statistic_kind_runs_through_localize_and_bench(installed, saved_model, tmp_path):
    """A package that brings its own statistic kind and a method reading it."""
    import pandas

    (tmp_path / "t.jsonl").write_text('{"text": "one two three"}\n{"text": "four five six"}\n')
    out = tmp_path / "a.safetensors"
    run = _run(installed, *_localize(saved_model, "absmax", tmp_path / "t.jsonl", "0.1", out))
    assert run.returncode == 0, run.stderr
    # The selection is |W| x max |x| computed here by hand.
    code = f"""
import json, torch
import locator
from locator.testing import tiny_tokenizer
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained({str(saved_model)!r})
tokenizer = tiny_tokenizer()
stats = locator.collect_statistics(model, tokenizer, ["one two three", "four five six"],
                                   kinds={{"input_abs_max"}}, progress=False)
name = "model.layers.0.mlp.down_proj.weight"
ids = tokenizer(["one two three"], return_tensors="pt")["input_ids"]
captured = []
handle = model.model.layers[0].mlp.down_proj.register_forward_pre_hook(
    lambda m, a: captured.append(a[0].abs().amax(dim=(0, 1))))
ids2 = tokenizer(["four five six"], return_tensors="pt")["input_ids"]
with torch.no_grad():
    model(input_ids=ids); model(input_ids=ids2)
handle.remove()
expected = torch.maximum(captured[0], captured[1]).double()
print(torch.allclose(stats.get("input_abs_max", name), expected))
print(json.dumps(locator.Localization.load({str(out)!r}).method))
"""
    checked = _run(installed, code=code)
    assert checked.stdout.split() == ["True", '"absmax"'], checked.stderr
    # The same package in a benchmark suite, beside a built-in method.
    suite = tmp_path / "absmax.toml"
    text = suite_toml(
        saved_model, target="words-a", controls=["words-b"], name="absmax",
        proportions=[0.05, 0.2], factors=[0.0], seeds=[0], num_samples=[6], batch_size=4,
        matched_baseline=False, methods=[{"name": "absmax"}, {"name": "mathneuro"}],
        tasks=[{"name": "loss-short", "limit": 4}],
    )  # fmt: skip
    suite.write_text(text)
    script = Path(__file__).resolve().parents[1] / "integration" / "bench_plugin.py"
    env = {**os.environ, "PYTHONPATH": str(installed)}
    bench = subprocess.run(
        [
            sys.executable,
            str(script),
            "bench",
            str(suite),
            "--out",
            str(tmp_path / "r"),
            "--no-progress",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bench.returncode == 0, bench.stderr
    rows = pandas.read_parquet(tmp_path / "r")
    assert set(rows["method"]) == {"absmax", "mathneuro"}
    assert (rows[rows["method"] == "absmax"]["selected_count"] > 0).all()


def test_plugins_command_lists_distributions_and_hooks(installed):
    result = _run(installed, "plugins", "--json")
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["magnitude"]["distribution"] == "locator-magnitude"
    assert plugins["magnitude"]["version"] == "0.1.0"
    assert plugins["mathneuro"]["hooks"] == ["register_localizers", "register_statistics"]
    assert "broken" not in plugins


def test_load_plugins_variable_restricts_loading(installed):
    env = {**os.environ, "PYTHONPATH": str(installed), "LOCATOR_LOAD_PLUGINS": "mathneuro"}
    code = "import locator; print(locator.list_localizers())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "['mathneuro', 'set-difference']"
    assert "failed" not in out.stderr


@pytest.fixture
def corpora(tmp_path):
    (tmp_path / "target.jsonl").write_text(
        "\n".join(json.dumps({"text": t}) for t in ["one plus two", "three times four is"])
    )
    (tmp_path / "control.jsonl").write_text(json.dumps({"text": "the cat sees a dog"}) + "\n")
    return tmp_path


def test_cli_localize_writes_a_localization(saved_model, corpora):
    out = corpora / "loc.safetensors"
    target, control = corpora / "target.jsonl", str(corpora / "control.jsonl")
    argv = _localize(saved_model, "mathneuro", target, "0.05", out, "--control", control)
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 0, result.output
    from locator import Localization

    loaded = Localization.load(out)
    assert loaded.method == "mathneuro" and loaded.proportion == 0.05
    assert 0 < loaded.fraction() <= 0.05


@pytest.mark.parametrize(
    "overrides, extra, message",
    [
        ({"--method": "mathnero"}, [], "Unknown localizer 'mathnero'. Did you mean 'mathneuro'?"),
        ({"--proportion": "1.5"}, [], "proportion must be in (0, 1], got 1.5."),
        ({}, ["-o", "alpha", "1"], "Unknown option of mathneuro 'alpha'."),
        ({"--target": "missing.jsonl"}, [], "data file 'missing.jsonl' does not exist"),
        ({"--model": "no/such/model"}, [], "no such file or folder"),
        ({"--method": "random"}, ["--reference", "missing.safetensors"], "does not exist"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_code_2(
    saved_model, corpora, overrides, extra, message, monkeypatch
):
    monkeypatch.chdir(corpora)
    options = {
        "--model": str(saved_model),
        "--method": "mathneuro",
        "--target": "target.jsonl",
        "--proportion": "0.05",
        "--out": "x.safetensors",
        **overrides,
    }
    argv = ["localize", *[item for pair in options.items() for item in pair], *extra]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0


def test_empty_corpus_file_is_one_line(saved_model, corpora):
    (corpora / "empty.jsonl").write_text("")
    argv = _localize(saved_model, "random", corpora / "empty.jsonl", "0.1", corpora / "x")
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2 and "the corpus is empty" in result.output


def test_localizers_json(tmp_path):
    result = CliRunner().invoke(cli, ["localizers", "--json"])
    names = [row["name"] for row in json.loads(result.output)]
    assert names[:2] == sorted(names)[:2] and "mathneuro" in names


def test_statistics_lists_every_kind_with_site_and_dtype():
    result = CliRunner().invoke(cli, ["statistics", "--json"])
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["input_norm_sum"]["site"] == "linear_input"
    assert rows["weight_gradient_saliency"] == {
        **rows["weight_gradient_saliency"],
        "site": "weight_gradient",
        "dtype": "float32",
    }
    assert rows["weight_gradient_saliency_bf16"]["dtype"] == "bfloat16"
    text = CliRunner().invoke(cli, ["statistics"]).output
    assert "neuron_sample_mean_sum (neuron_activation, float64): per MLP neuron" in text
