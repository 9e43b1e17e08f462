"""A matrix suite end to end on the tiny model and the handbook languages: the suite expands its
skills into the grid with a matched random baseline per method, runs in two shards (the second
run resumes the first's results), and its report opens with the leaderboard, draws the matrices
and writes the CSVs. Bad matrix suites are one line, exit 2, before any model loads."""

import csv
import json

import pytest
from click.testing import CliRunner

from locator import LocatorError
from locator.bench import plan, results
from locator.bench.suite import load_suite
from locator.cli import cli
from tests.conftest import SHARED_DATA, suite_toml
from tests.integration.test_task_skills import CHOICE

needs_shared_data = pytest.mark.skipif(
    not (SHARED_DATA / "handbook").is_dir(), reason="needs the shared handbook data"
)
SKILLS = ("en", "fr", "es")
SKILL = """
[[skills]]
name = "{name}"
corpus = "handbook-{name}"
limit = 3
"""


def write(folder, text, name="suite.toml"):
    path = folder / name
    path.write_text(text)
    return path


def matrix_suite(model, skills=SKILLS, extra=""):
    """The text of the tiny matrix suite on `model` with the handbook languages `skills`."""
    text = suite_toml(
        model, name="matrix-tiny", data_dir=SHARED_DATA, proportions=[0.1], factors=[0.0],
        seeds=[0, 1], num_samples=[6], max_length=32, matrix=True,
        methods=[{"name": "mathneuro"}, {"name": "wanda"}],
    )  # fmt: skip
    return text + "".join(SKILL.format(name=name) for name in skills) + extra


def test_skills_expand_into_the_grid_with_matched_baselines(saved_model, tmp_path):
    suite = load_suite(write(tmp_path, matrix_suite(saved_model)))
    assert [s.name for s in suite.skills] == list(SKILLS)
    assert [(c.target, c.controls) for c in suite.corpora] == [
        ("handbook-en", ("handbook-fr", "handbook-es")),
        ("handbook-fr", ("handbook-en", "handbook-es")),
        ("handbook-es", ("handbook-en", "handbook-fr")),
    ]
    assert [(t.name, t.limit) for t in suite.tasks] == [(f"nll:handbook-{s}", 3) for s in SKILLS]
    assert [(m.label, m.match) for m in suite.methods] == [
        ("mathneuro", None),
        ("random-matched-mathneuro", "mathneuro"),
        ("wanda", None),
        ("random-matched-wanda", "wanda"),
    ]
    assert {s.metric for s in suite.skills} == {"nll_per_byte"}
    # 3 targets x 4 methods x 2 seeds, every skill measured in each
    configurations = plan.plan(suite)
    assert len(configurations) == 24
    assert all(len(c.tasks) == 3 for c in configurations)
    # Turned off, and stated controls.
    text = matrix_suite(saved_model).replace(
        "matrix = true", "matrix = true\nmatched_baseline = false"
    )
    text = text.replace('name = "en"\n', 'name = "en"\ncontrols = ["handbook-de"]\n')
    suite = load_suite(write(tmp_path, text, "off.toml"))
    assert [m.label for m in suite.methods] == ["mathneuro", "wanda"]
    assert suite.corpora[0].controls == ("handbook-de",)


@needs_shared_data
def test_a_matrix_suite_runs_resumes_and_reports(saved_model, tmp_path):
    path = write(tmp_path, matrix_suite(saved_model))
    out = tmp_path / "results"
    run = CliRunner()
    first = run.invoke(
        cli, ["bench", str(path), "--out", str(out), "--no-progress", "--shard", "1/2"]
    )
    assert first.exit_code == 0, first.output
    again = run.invoke(cli, ["bench", str(path), "--out", str(out), "--no-progress"])
    assert again.exit_code == 0, again.output
    assert "12 already finished" in again.output
    table = results.read_results(out).to_pylist()
    # one row per configuration, evaluated skill and NLL metric (per token and per byte)
    assert len({r["config_hash"] for r in table}) == 24
    assert len(table) == 24 * 3 * 2
    assert {r["task"] for r in table} == {f"nll:handbook-{s}" for s in SKILLS}

    report = run.invoke(cli, ["report", str(out)])
    assert report.exit_code == 0, report.output
    text = (out / "_report" / "report.md").read_text()
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[:2] == ["## Leaderboard", "## Skill x skill matrix"]
    assert "baseline has 2 draws (< 3)" in text  # two seeds: the report says so
    with open(out / "_report" / "leaderboard.csv", newline="") as file:
        board = {row["method"]: row for row in csv.DictReader(file)}
    assert set(board) == {"mathneuro", "wanda"}
    assert {row["matched_baseline"] for row in board.values()} == {
        "random-matched-mathneuro",
        "random-matched-wanda",
    }
    assert all(row["score"] and row["baseline_draws"] == "2" for row in board.values()), board
    with open(out / "_report" / "matrix.csv", newline="") as file:
        cells = list(csv.DictReader(file))
    assert {(c["removed_skill"], c["measured_skill"]) for c in cells} == {
        (i, j) for i in SKILLS for j in SKILLS
    }
    assert list((out / "_report").glob("matrix-*.png"))


@pytest.fixture
def test_only_task(tmp_path):
    """A local-JSON lm-eval task whose one split is the evaluated one."""
    docs = [{"question": f"q{i}", "options": ["a", "b"], "label": i % 2} for i in range(4)]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    yaml = CHOICE.format(splits=f"test: {tmp_path}/test.jsonl", split_keys="test_split: test")
    return write(tmp_path, yaml, "test_only.yaml")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda t: t.replace('name = "fr"', 'name = "en"'),
            r"skills\[1\]\.name: 'en' is skills\[0\]",
        ),
        (lambda t: t.split("[[skills]]")[0] + "[[skills]]" + t.split("[[skills]]")[1], "one skill"),
        (lambda t: t.replace("matrix = true\n", ""), "skills make a matrix: add matrix = true"),
        (
            lambda t: t.replace('corpus = "handbook-es"', 'corpus = "missing/texts.jsonl"'),
            r"skills\[2\]\.corpus: .*missing/texts\.jsonl",
        ),
        (
            lambda t: t.replace(
                'corpus = "handbook-es"', 'corpus = "handbook-es"\ntask = "nll:gsm9k"'
            ),
            r"skills\[2\]\.task: .*gsm9k",
        ),
        (
            lambda t: t.replace('corpus = "handbook-es"', 'corpus = "task:{task}"\nmetric = "acc"'),
            r"skills\[2\]\.corpus: .*no split left|skills\[2\]\.corpus: .*calibration",
        ),
        (lambda t: t + '\n[[corpora]]\ntarget = "handbook-en"\n', "drop \\[\\[corpora\\]\\]"),
        (
            lambda t: t.replace(
                'corpus = "handbook-es"', 'corpus = "handbook-es"\ntask = "wikitext"'
            ),
            r"skills\[2\]\.metric: missing",
        ),
    ],
)
def test_bad_matrix_suites_fail_in_one_line_before_any_model_loads(
    change, message, tmp_path, test_only_task
):
    text = change(matrix_suite(tmp_path / "no-model")).replace("{task}", str(test_only_task))
    path = write(tmp_path, text)
    with pytest.raises(LocatorError, match=message) as error:
        load_suite(path)
    assert "\n" not in str(error.value)
    result = CliRunner().invoke(cli, ["bench", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output


def test_the_main_job_matches_every_method():
    """`make demo`'s suite: every method that is not itself a baseline has a matched random
    baseline, with three draws (seeds), so no verdict lacks one."""
    from locator.localizer import localizer_class
    from tests.cli.test_bench_cli import BENCHMARKS

    suite = load_suite(BENCHMARKS / "toy.toml")
    matched = {m.match for m in suite.methods if m.match is not None}
    methods = [m for m in suite.methods if m.match is None]
    assert all(m.label in matched for m in methods if not localizer_class(m.name).accepts_reference)
    assert len(suite.seeds) >= 3
