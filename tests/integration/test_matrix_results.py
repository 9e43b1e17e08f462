"""What a matrix suite's results folder says, checked from outside: the report's per-experiment
sections name each skill's declared task (also where the task is not the corpus dataset's own),
and ``benchmarks/check_matrix.py`` re-measures the matrix independently, agreeing with the
suite and catching a tampered value.

One small matrix suite on the tiny model: English handbook prose and a JSON Lines file of
sentences in the tiny tokenizer's words (its task, ``nll:<file>``, is known to no dataset)."""

import importlib.util
import json
import random

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from locator.cli import cli
from tests.cli.test_bench_cli import BENCHMARKS
from tests.integration.test_matrix_suite import SKILL, matrix_suite, needs_shared_data, write

WORDS = "the cat dog bird sees eats runs slowly quickly and but big small red blue".split()


def _check_matrix():
    spec = importlib.util.spec_from_file_location("check_matrix", BENCHMARKS / "check_matrix.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def small_matrix(saved_model, tmp_path_factory):
    """A results folder of a two-skill matrix (mathneuro and its matched random baseline, one
    seed) and the path of its JSON Lines corpus."""
    folder = tmp_path_factory.mktemp("small-matrix")
    rng = random.Random(0)
    notes = folder / "notes.jsonl"
    lines = [" ".join(rng.choices(WORDS, k=rng.randint(4, 12))) for _ in range(60)]
    notes.write_text("".join(json.dumps({"text": line}) + "\n" for line in lines))
    text = matrix_suite(saved_model, skills=("en",)) + SKILL.format(name="notes").replace(
        '"handbook-notes"', json.dumps(str(notes))
    )
    text = text.replace("seeds = [0, 1]", "seeds = [0]").replace(
        '[[methods]]\nname = "wanda"\n', ""
    )
    out = folder / "results"
    result = CliRunner().invoke(
        cli, ["bench", str(write(folder, text)), "--out", str(out), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    return out, notes


@needs_shared_data
def test_the_report_names_each_skills_declared_task(small_matrix):
    out, notes = small_matrix
    result = CliRunner().invoke(cli, ["report", str(out)])
    assert result.exit_code == 0, result.output
    text = (out / "_report" / "report.md").read_text()
    assert "unknown (pass `--skill-task`)" not in text
    assert f"Skill: `nll:{notes}`; controls: `nll:handbook-en`" in text
    assert f"Skill: `nll:handbook-en`; controls: `nll:{notes}`" in text


@needs_shared_data
def test_check_matrix_agrees_with_the_suite_and_catches_a_tampered_value(
    small_matrix, tmp_path, capsys
):
    out, _ = small_matrix
    check = _check_matrix()
    arguments = [str(out), "--method", "mathneuro", "--proportion", "0.1", "--seed", "0"]
    assert check.main(arguments) == 0
    lines = capsys.readouterr().out.splitlines()
    cells = [line.split() for line in lines[2:]]
    # the unedited model and the 2 x 2 matrix, each measured (5 columns: no "skipped")
    assert len(cells) == 6 and all(len(cell) == 6 for cell in cells), lines
    assert {(c[0], c[1]) for c in cells} == {
        (removed, measured)
        for removed in ("(unedited)", "en", "notes")
        for measured in ("en", "notes")
    }

    # Removing en's set moves en's NLL more than the tolerance: a check that skipped the edit
    # would differ.
    values = {(c[0], c[1]): float(c[3]) for c in cells}
    assert abs(values["en", "en"] / values["(unedited)", "en"] - 1) > 1e-3

    # One value of the suite moved by 5%: that cell, and only it, differs.
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for path in out.glob("_*"):
        (tampered / path.name).symlink_to(path)
    for part in out.glob("part-*.parquet"):
        table = pq.read_table(part)
        rows = table.to_pylist()
        for row in rows:
            if (row["label"], row["target"], row["task"], row["metric"]) == (
                "mathneuro",
                "handbook-en",
                "nll:handbook-en",
                "nll_per_byte",
            ):
                row["value"] *= 1.05
        pq.write_table(type(table).from_pylist(rows, schema=table.schema), tampered / part.name)
    assert check.main([str(tampered), *arguments[1:]]) == 1
    differing = [
        line.split()[:2] for line in capsys.readouterr().out.splitlines() if "DIFFERS" in line
    ]
    assert differing == [["en", "en"]]


def test_check_matrix_scores_a_long_text_as_lm_evals_rolling_loglikelihood(llama, tokenizer):
    """A text three contexts long: the script's windows score what lm-eval's do."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    rng = random.Random(1)
    text = " ".join(rng.choices(WORDS, k=3 * llama.config.max_position_embeddings))
    nll, count = _check_matrix().text_nll(llama, tokenizer, text)
    assert count == len(tokenizer.encode(text)) > 2 * llama.config.max_position_embeddings
    request = Instance("loglikelihood_rolling", doc={}, arguments=(text,), idx=0)
    (expected,) = HFLM(pretrained=llama, tokenizer=tokenizer, batch_size=1).loglikelihood_rolling(
        [request]
    )
    assert nll == pytest.approx(-expected, rel=1e-5)
