"""The toy testbed through locator's plugin paths: corpora, evaluation tasks, the CLI, the
tutorial."""

import re
import runpy
from pathlib import Path

import pytest
from click.testing import CliRunner

import locator
from locator.evaluation import evaluate
from locator.toy import load_toy_model
from locator.toy.data import END, grammatical_next_words, language_optimum
from tests.conftest import corpus_texts


@pytest.fixture(scope="module")
def toy():
    return load_toy_model()


def test_corpora_are_seeded_samples_of_each_skill():
    arithmetic = corpus_texts("toy-arithmetic", num_samples=50, seed=3)
    language = corpus_texts("toy-language", num_samples=50, seed=3)
    assert len(arithmetic) == len(language) == 50
    assert all(text.split()[1] in "+-*" and text.split()[3] == "=" for text in arithmetic)
    assert all(grammatical_next_words(text.split()) == {END} for text in language)
    assert arithmetic == corpus_texts("toy-arithmetic", num_samples=50, seed=3)
    assert arithmetic != corpus_texts("toy-arithmetic", num_samples=50, seed=4)
    assert {"toy-arithmetic", "toy-language"} <= set(locator.list_datasets())


def test_shipped_model_meets_the_skill_thresholds_through_evaluate(toy):
    model, tokenizer = toy
    results = evaluate(model, tokenizer, ["toy-arithmetic", "toy-language"])
    assert results["toy-arithmetic"]["exact_match"] >= 0.95
    assert results["toy-language"]["loss"] <= language_optimum() + 0.1
    assert results["toy-language"]["grammatical"] >= 0.95


def test_pruning_mathneuro_hits_arithmetic_not_language(toy):
    model, tokenizer = toy
    found = locator.localize(
        model,
        tokenizer,
        method="mathneuro",
        target="toy-arithmetic",
        controls=["toy-language"],
        num_samples=200,
        proportion=0.05,
        progress=False,
    )
    with locator.intervene(model, found, 0.0):
        pruned = evaluate(model, tokenizer, ["toy-arithmetic", "toy-language"])
    assert pruned["toy-arithmetic"]["exact_match"] < 0.7
    assert pruned["toy-language"]["loss"] <= language_optimum() + 0.1


def test_toy_train_command_writes_a_loadable_model(tmp_path):
    from locator.cli import cli
    from locator.plugins import plugin_manager

    plugin_manager().hook.register_commands(cli=cli)
    result = CliRunner().invoke(cli, ["toy", "train", "--out", str(tmp_path), "--steps", "3"])
    assert result.exit_code == 0, result.output
    assert "arithmetic exact match" in result.output
    model, _ = load_toy_model(tmp_path)
    assert sum(p.numel() for p in model.parameters()) > 300_000


def test_the_tutorials_first_localization_runs_as_documented(capsys):
    """docs/getting-started.md includes docs/examples/first_localization.py: run it as is."""
    script = Path(__file__).resolve().parents[2] / "docs" / "examples" / "first_localization.py"
    runpy.run_path(str(script), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("selected ") and "of the scored weights" in lines[0]
    arithmetic = re.fullmatch(r"toy-arithmetic exact_match: (\S+) unedited, (\S+) pruned", lines[1])
    assert float(arithmetic[1]) >= 0.95 and float(arithmetic[2]) < 0.7
    language = re.fullmatch(r"toy-language loss: (\S+) unedited, (\S+) pruned", lines[2])
    assert float(language[2]) <= language_optimum() + 0.1
