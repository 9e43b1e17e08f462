"""Every place a corpus value is resolved takes a dataset name, a JSON Lines file and
``task:<lm-eval task>``: the CLI's ``localize``, `locator.localize` and suites (through
`locator.data.sample_corpus`), and none uses a text that ``nll:<corpus>`` evaluates."""

import json

import pytest
from click.testing import CliRunner

import locator
from locator.cli import cli
from locator.data import sample_corpus
from locator.heldout import is_held_out
from locator.localization import Localization
from locator.testing import sample_texts
from tests.integration.test_task_skills import tasks  # noqa: F401 (a fixture)


@pytest.fixture
def texts_file(tmp_path):
    path = tmp_path / "texts.jsonl"
    texts = sample_texts(60, seed=5, max_words=20)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def test_sample_corpus_takes_a_file_and_a_task(texts_file, tasks):  # noqa: F811
    drawn = sample_corpus(str(texts_file), num_samples=10, seed=1)
    assert drawn.dataset == str(texts_file) and len(drawn.texts) == 10
    assert not any(is_held_out(text) for text in drawn.texts)
    task = sample_corpus(f"task:{tasks}/generate.yaml", num_samples=4)
    assert task.label.startswith(f"task:{tasks}/generate.yaml:train:n=4")


def test_localize_takes_corpus_values(llama, tokenizer, texts_file, tasks):  # noqa: F811
    found = locator.localize(
        llama, tokenizer, method="mathneuro", target=f"task:{tasks}/generate.yaml",
        controls=[str(texts_file)], proportion=0.05, num_samples=4, progress=False,
    )  # fmt: skip
    assert found.count() > 0
    assert found.target.startswith("task:") and found.controls[0].startswith(str(texts_file))


def test_the_cli_localizes_on_a_task_against_a_file(saved_model, texts_file, tasks, tmp_path):  # noqa: F811
    out = tmp_path / "found.safetensors"
    arguments = ["localize", "--model", str(saved_model), "--method", "mathneuro"]
    arguments += ["--target", f"task:{tasks}/generate.yaml", "--control", str(texts_file)]
    arguments += ["--proportion", "0.05", "--num-samples", "4", "--out", str(out)]
    result = CliRunner().invoke(cli, arguments)
    assert result.exit_code == 0, result.output
    found = Localization.load(out)
    assert found.target.startswith("task:") and found.count() > 0
    # A task with no split left for calibration: one line, exit 2, before the model loads.
    arguments[arguments.index("--target") + 1] = f"task:{tasks}/test_only.yaml"
    result = CliRunner().invoke(cli, arguments)
    # (the lines before it are the datasets library's progress bars, on stderr)
    assert result.exit_code == 2
    assert "no split left for calibration" in result.output.strip().splitlines()[-1]
