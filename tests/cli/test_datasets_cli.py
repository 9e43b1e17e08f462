"""The CLI of datasets and evaluation: `datasets`, `localize` with dataset names, `evaluate`,
`edit`; bad input is one line and exit code 2."""

import json

import pytest
import torch
from click.testing import CliRunner

from locator.cli import cli
from tests.conftest import SHARED_DATA

needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason="the shared local dataset copies are absent"
)


def _run(*argv):
    return CliRunner().invoke(cli, [str(arg) for arg in argv])


def test_datasets_lists_names_splits_and_tasks():
    result = _run("datasets")
    assert result.exit_code == 0, result.output
    assert "gsm8k: Grade-school math" in result.output and "task: gsm8k_cot" in result.output
    rows = json.loads(_run("datasets", "--json").output)
    by_name = {row["name"]: row for row in rows}
    assert {"gsm8k", "math", "math500", "mmlu", "race", "wikitext", "python-code"} <= set(by_name)
    assert by_name["mmlu"]["calibration_split"] == "validation"
    assert by_name["gsm8k"]["plugin"] == "datasets"


@pytest.fixture(scope="module")
def localization(saved_model, tmp_path_factory):
    """A MathNeuro localization from dataset names and local copies, through the CLI."""
    if not SHARED_DATA.is_dir():
        pytest.skip("the shared local dataset copies are absent")
    out = tmp_path_factory.mktemp("cli") / "gsm8k.safetensors"
    result = _run(
        "localize", "--model", saved_model, "--method", "mathneuro", "--target", "gsm8k",
        "--control", "race", "--num-samples", 4, "--data-dir", SHARED_DATA,
        "--max-length", 32, "--proportion", 0.05, "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def test_localize_with_dataset_names(localization):
    from locator import Localization

    found = Localization.load(localization)
    assert found.target == "gsm8k:train:n=4:seed=0"
    assert found.controls == ("race:race_1000-calibration:n=4:seed=0",)  # less nll:race
    assert found.count() > 0


@needs_shared_data
def test_evaluate_prints_numbers_as_edited(saved_model, localization):
    common = ["--model", saved_model, "--task", "race", "--limit", 3, "--data-dir", SHARED_DATA]
    plain = _run("evaluate", *common, "--json")
    assert plain.exit_code == 0, plain.output
    results = json.loads(plain.output[plain.output.index("{") :])
    assert 0.0 <= results["race"]["acc"] <= 1.0
    table = _run("evaluate", *common, "--localization", localization, "--factor", 0.0)
    assert table.exit_code == 0, table.output
    assert "model edited: mathneuro selection" in table.output
    assert any(line.split()[:2] == ["race", "acc"] for line in table.output.splitlines())


def test_edit_writes_a_model_from_pretrained_loads(saved_model, localization, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import locator
    from locator.models import load_model

    out = tmp_path / "edited"
    result = _run(
        "edit", "--model", saved_model, "--localization", localization, "--factor", 1.1,
        "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert AutoTokenizer.from_pretrained(out)("one plus two")["input_ids"]
    expected, _ = load_model(str(saved_model))
    locator.apply(expected, locator.Localization.load(localization), 1.1)
    original, _ = load_model(str(saved_model))
    state, edited = reloaded.state_dict(), expected.state_dict()
    assert state.keys() == edited.keys()
    assert all(torch.equal(state[name], edited[name]) for name in state)
    assert any(not torch.equal(state[n], original.state_dict()[n]) for n in state)
    again = _run(
        "edit", "--model", saved_model, "--localization", localization, "--factor", 1.1,
        "--out", out,
    )  # fmt: skip
    assert again.exit_code == 2 and "--force" in again.output


@pytest.mark.parametrize(
    "argv, message",
    [
        (["localize", "--target", "gsm8", "--control", "race"], "Did you mean 'gsm8k'?"),
        (["localize", "--target", "gsm8k", "--control", "race"], "--data-dir"),  # offline
        pytest.param(
            ["localize", "--target", "math500", "--num-samples", "501", "--data-dir", SHARED_DATA],
            "cannot draw 501 without replacement",
            marks=needs_shared_data,
        ),
        (["evaluate", "--task", "race", "--factor", "0"], "--localization and --factor go"),
        (["evaluate", "--task", "chain_of_thought"], "is an lm-eval tag"),
        (["evaluate", "--task", "race", "--limit", "0"], "limit must be a positive integer"),
        (["evaluate", "--task", "race", "--data-dir", "/no/such"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(saved_model, tmp_path, argv, message):
    extra = ["--model", saved_model]
    if argv[0] == "localize":
        extra += ["--method", "mathneuro", "--proportion", 0.05, "--out", tmp_path / "x"]
    result = _run(*argv, *extra)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output and result.output.strip().count("\n") == 0
