"""`locator bench` and `locator report`: bad suites rejected before any model loads, a run with
its summary table, resume and shards from the command line, the report with its plots, and the
shipped suites."""

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from locator.bench import plan, results
from locator.bench.suite import load_suite
from locator.cli import cli
from locator.plugins import register_plugin, unregister_plugin
from tests.integration import bench_plugin

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

TABLES = """
[[methods]]
name = "mathneuro"
[[methods]]
name = "random"
match = "mathneuro"
[[tasks]]
name = "loss-short"
limit = 8
"""
SUITE = bench_plugin.suite("{model}", TABLES, (0.05, 0.3), (0.0, 2.0), (0, 1), samples=4)


@pytest.fixture(scope="module", autouse=True)
def plugin():
    register_plugin(bench_plugin, name="bench-plugin")
    yield
    unregister_plugin("bench-plugin")


@pytest.fixture
def write_suite(tmp_path, saved_model):
    def write(text=SUITE, **replacements):
        for old, new in replacements.items():
            assert text.count(old) == 1, old
            text = text.replace(old, new)
        path = tmp_path / "suite.toml"
        path.write_text(text.replace("{model}", str(saved_model)))
        return path

    return write


@pytest.mark.parametrize(
    "replacements, key, message",
    [
        (
            {"seeds =": "seed ="},
            "seed",
            "unknown key 'seed'. Did you mean 'seeds'?",
        ),
        (
            {'name = "mathneuro"': 'name = "mathnuero"'},
            "methods[0].name",
            "Unknown localizer 'mathnuero'. Did you mean 'mathneuro'? Installed:",
        ),
        (
            {'name = "mathneuro"\n': 'name = "mathneuro"\noptions = { x = 1 }\n'},
            "methods[0].options",
            "Unknown option of mathneuro 'x'.",
        ),
        (
            {'target = "words-a"': 'target = "words-z"'},
            "corpora[0].target",
            "Unknown dataset 'words-z'. Did you mean",
        ),
        (
            {'name = "loss-short"': 'name = "loss-shrt"'},
            "tasks[0].name",
            "Unknown evaluation task 'loss-shrt'. Did you mean 'loss-short'?",
        ),
        ({"proportions = [0.05, 0.3]": "proportions = []"}, "proportions", "the grid has no cells"),
        (
            {"proportions = [0.05, 0.3]": "proportions = [0.05, 30]"},
            "proportions[1]",
            "proportion must be in (0, 1], got 30.",
        ),
        ({"[[models]]": "[[model]]"}, "model", "unknown key 'model'. Did you mean 'models'?"),
        (
            {
                'controls = ["words-b"]': "",
                'name = "mathneuro"\n': 'name = "lape"\n',
                'match = "mathneuro"': 'match = "lape"',
            },
            "corpora[0].controls",
            "'lape': method 'lape' needs at least 1 control corpus(es) besides the target, got 0;",
        ),
    ],
)
def test_bad_suites_fail_in_one_line_before_any_model_loads(
    write_suite, tmp_path, replacements, key, message
):
    path = write_suite(**replacements)
    result = CliRunner().invoke(cli, ["bench", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith(f"Error: {path}: {key}: "), line
    assert message in line
    assert not (tmp_path / "out").exists()  # the run never started: no model was loaded


def test_a_bad_shard_or_missing_results_fail_in_one_line(write_suite, tmp_path):
    result = CliRunner().invoke(
        cli, ["bench", str(write_suite()), "--out", str(tmp_path / "o"), "--shard", "3/2"]
    )
    assert result.exit_code == 2 and "--shard 3/2: need 1 <= i <= n." in result.output
    result = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "holds no results" in result.output


def test_bench_runs_resumes_and_reports(write_suite, tmp_path):
    path, out = write_suite(), tmp_path / "results"
    first = CliRunner().invoke(cli, ["bench", str(path), "--out", str(out), "--shard", "1/2"])
    assert first.exit_code == 0, first.output
    assert "16 configurations, shard 1/2: 8; 0 finished, 8 to run" in first.output
    assert "ran 8 configurations, 0 already finished" in first.output
    second = CliRunner().invoke(cli, ["bench", str(path), "--out", str(out), "--no-progress"])
    assert second.exit_code == 0, second.output
    assert "ran 8 configurations, 8 already finished" in second.output
    # The summary table: the baseline and each (method, factor, proportion) cell.
    table = second.output[second.output.index("target words-a") :]
    assert "loss-short:loss" in table and "baseline" in table
    assert table.count("random-matched-mathneuro") == 4
    assert len(results.read_results(out)) == 16 * 2

    report = CliRunner().invoke(cli, ["report", str(out)])
    assert report.exit_code == 0, report.output
    written = out / "_report" / "report.md"
    assert f"report -> {written}" in report.output
    text = written.read_text()
    for image in (
        "effect-1-n4-x0.png",
        "effect-1-n4-x2.png",
        "consistency-1.png",
        "placement-1.png",
    ):
        assert f"]({image})" in text
        assert (out / "_report" / image).read_bytes().startswith(b"\x89PNG")
    assert "### Effect of editing: prune (x0), 4 calibration samples" in text
    assert "Across seeds:" in text and (out / "_report" / "report.html").is_file()


def test_a_grown_suite_runs_only_new_cells_and_a_changed_model_refuses(
    write_suite, tmp_path, llama, tokenizer
):
    from locator.testing import tiny_model

    model = tmp_path / "model"
    llama.save_pretrained(model)
    tokenizer.save_pretrained(model)
    small = SUITE.replace("{model}", str(model))
    small = small.replace("proportions = [0.05, 0.3]", "proportions = [0.05]")
    small = small.replace("factors = [0.0, 2.0]", "factors = [0.0]")
    small = small.replace("seeds = [0, 1]", "seeds = [0]")
    path, out = tmp_path / "grow.toml", tmp_path / "results"
    path.write_text(small)
    first = CliRunner().invoke(cli, ["bench", str(path), "--out", str(out), "--no-progress"])
    assert "ran 2 configurations, 0 already finished" in first.output, first.output
    cached = sorted(p.name for p in (out / "_statistics").iterdir())
    baselines = sorted(p.name for p in (out / "_baselines").iterdir())

    path.write_text(small.replace("proportions = [0.05]", "proportions = [0.05, 0.3]"))
    grown = CliRunner().invoke(cli, ["bench", str(path), "--out", str(out), "--no-progress"])
    assert grown.exit_code == 0, grown.output
    assert "ran 2 configurations, 2 already finished" in grown.output
    assert sorted(p.name for p in (out / "_statistics").iterdir()) == cached  # no new pass
    assert sorted(p.name for p in (out / "_baselines").iterdir()) == baselines
    rows = results.read_results(out).to_pylist()
    assert len(rows) == 4 * 2 and len({r["model_fingerprint"] for r in rows}) == 1
    assert rows[0]["model_fingerprint"] is not None

    # A new task adds a part file to each cell and rewrites none of the old ones.
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    grown = small.replace("proportions = [0.05]", "proportions = [0.05, 0.3]")
    path.write_text(grown + '\n[[tasks]]\nname = "loss-long"\nlimit = 4\n')
    more = CliRunner().invoke(cli, ["bench", str(path), "--out", str(out), "--no-progress"])
    assert more.exit_code == 0, more.output
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    assert {name: after[name] for name in before} == before and len(after) == 2 * len(before)
    assert sorted(p.name for p in (out / "_statistics").iterdir()) == cached
    tasks = [r["task"] for r in results.read_results(out).to_pylist() if r["metric"] == "loss"]
    assert sorted(tasks) == ["loss-long"] * 4 + ["loss-short"] * 4

    tiny_model("llama", seed=5).save_pretrained(model)  # same path, other weights
    path.write_text(small.replace("seeds = [0]", "seeds = [0, 1]"))
    changed = CliRunner().invoke(cli, ["bench", str(path), "--out", str(out), "--no-progress"])
    assert changed.exit_code == 2, changed.output
    assert "changed since the results" in changed.output
    assert len(results.read_results(out)) == 4 * 2 * 2


def test_a_shard_beyond_the_grid_has_nothing_to_do(write_suite, tmp_path):
    out = tmp_path / "o"
    result = CliRunner().invoke(
        cli, ["bench", str(write_suite()), "--out", str(out), "--shard", "2/40"]
    )
    assert result.exit_code == 0, result.output
    assert "shard 2/40 has nothing to do" in result.output


def test_shipped_suites_parse_and_plan():
    paper = load_suite(BENCHMARKS / "mathneuro-llama-3.2-1b.toml")
    assert paper.proportions == (0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15)
    assert paper.factors == (0.0, 1.1) and paper.seeds == (0, 1, 2, 3, 4)
    assert paper.num_samples == (500,) and paper.calibration.with_replacement
    assert paper.models[0].path == "meta-llama/Llama-3.2-1B-Instruct"
    assert paper.models[0].dtype == "bfloat16" and paper.models[0].device_map == "auto"
    assert [t.name for t in paper.tasks][0] == "gsm8k_cot" and paper.tasks[0].limit == 200
    assert len(plan.plan(paper)) == 2 * 5 * 2 * 8 * 2
    smoke = load_suite(BENCHMARKS / "smoke.toml")
    assert Path(smoke.located(smoke.models[0]).path).is_dir()  # a local model: no download
    published = load_suite(BENCHMARKS / "as-published-real.toml")
    labels = {method.label: method.config for method in published.methods}
    assert {labels[k].mode for k in ("mathneuro-published", "lape-published")} == {"published"}
    assert labels["lape"].mode == "faithful" and labels["wanda-original-count"].count == "original"
    assert len(plan.plan(published)) == 2 * 6 * 3
    for suite in BENCHMARKS.glob("*.toml"):  # every shipped suite is valid
        assert plan.plan(load_suite(suite)), suite.name


def test_the_smoke_suite_runs_reports_and_shows_the_skill_removed(tmp_path):
    """`locator bench benchmarks/smoke.toml` as a user runs it, on the shipped toy model."""
    suite = load_suite(BENCHMARKS / "smoke.toml")
    out = tmp_path / "smoke"
    result = CliRunner().invoke(cli, ["bench", str(suite.path), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    table = results.read_results(out)
    assert len(set(table.column("config_hash").to_pylist())) == len(plan.plan(suite)) == 128
    assert table.num_rows == 128 * 3  # exact_match; loss and grammatical
    report = CliRunner().invoke(cli, ["report", str(out)])
    assert report.exit_code == 0, report.output
    # The paper's finding on the toy: pruning MathNeuro's 5% removes arithmetic and keeps the
    # language; the matched random baseline keeps both.
    rows = [
        r
        for r in table.to_pylist()
        if r["factor"] == 0 and r["proportion"] == 0.05 and r["num_samples"] == 256
    ]

    def mean(label, metric):
        values = [r["value"] for r in rows if r["label"] == label and r["metric"] == metric]
        return sum(values) / len(values)

    baseline = {r["metric"]: r["baseline_value"] for r in rows}
    assert mean("mathneuro", "exact_match") < 0.5 * baseline["exact_match"]
    assert mean("random-matched-mathneuro", "exact_match") > 0.8 * baseline["exact_match"]
    assert mean("mathneuro", "loss") == pytest.approx(baseline["loss"], abs=0.05)
    # ... and Wanda-style top-K pruning at the same K hurts the language clearly more.
    assert mean("wanda", "loss") - baseline["loss"] > 0.1
    assert "proportion 0.05:" in report.output and "report ->" in report.output


def test_the_main_job_suite_covers_every_method_and_baseline():
    """`make demo` runs benchmarks/toy.toml: every built-in method, both random baselines,
    prune and scale, three seeds, on the shipped model (its full run is the slow test below)."""
    import locator

    suite = load_suite(BENCHMARKS / "toy.toml")
    assert {m.name for m in suite.methods} == set(locator.list_localizers())
    assert any(m.match == "mathneuro" for m in suite.methods)
    assert suite.factors == (0.0, 1.1) and len(suite.seeds) == 3
    assert Path(suite.located(suite.models[0]).path).is_dir()


@pytest.mark.slow
def test_the_main_job_shows_the_paper_claim(tmp_path):
    """The full `make demo` suite (about a minute): MathNeuro pruning at K = 5% lowers arithmetic
    clearly more than matched random and raises language loss clearly less than Wanda."""
    out = tmp_path / "toy"
    result = CliRunner().invoke(
        cli, ["bench", str(BENCHMARKS / "toy.toml"), "--out", str(out), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    rows = [
        r
        for r in results.read_results(out).to_pylist()
        if r["factor"] == 0 and r["proportion"] == 0.05
    ]

    def mean(label, metric):
        values = [r["value"] for r in rows if r["label"] == label and r["metric"] == metric]
        return sum(values) / len(values)

    baseline = {r["metric"]: r["baseline_value"] for r in rows}
    assert mean("mathneuro", "exact_match") < mean("random-matched-mathneuro", "exact_match") - 0.5
    assert mean("mathneuro", "loss") - baseline["loss"] < 0.02
    assert mean("wanda", "loss") - baseline["loss"] > 0.1


def test_a_run_waits_for_a_claim_while_its_heartbeat_is_fresh_then_takes_it_over(
    write_suite, tmp_path, monkeypatch
):
    import json
    import os
    import threading
    import time

    from locator.bench import claims, runner

    monkeypatch.setattr(claims, "STALE_SECONDS", 2.0)
    monkeypatch.setattr(runner, "POLL_SECONDS", 0.1)
    path, out = write_suite(), tmp_path / "results"
    suite = load_suite(path)
    first = plan.plan(suite)[0]
    lock = claims.lock_path(out, first.key)
    lock.parent.mkdir(parents=True)
    # A live run on another node: its pid cannot be checked from here, only its heartbeat.
    lock.write_text(json.dumps({"pid": 4242, "host": "node-17", "token": "x"}))
    results.check_manifest(out, plan.manifest(suite, plan.plan(suite), path.read_text()))
    stop = threading.Event()

    def heartbeat():  # the holder's heartbeat, for 8 s; then it dies
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and not stop.wait(0.2):
            os.utime(lock)

    beating = threading.Thread(target=heartbeat)
    beating.start()
    try:
        result = CliRunner().invoke(
            cli, ["bench", str(path), "--out", str(out), "--no-progress", "--shard", "1/4"]
        )
    finally:
        stop.set()
        beating.join()
    assert result.exit_code == 0, result.output
    waits = [line for line in result.output.splitlines() if "waiting for" in line]
    assert len(waits) == 1, result.output  # said once, with --no-progress too
    assert "1 configuration(s) claimed by another run" in waits[0]
    assert "node-17:4242, heartbeat 0 s ago" in waits[0] and "older than 2 s" in waits[0]
    # Once its heartbeat went stale the run took it over: nothing is left to a dead run.
    assert "ran 4 configurations, 0 already finished, in" in result.output
    assert set(first.parts.values()) <= results.finished(out)
    assert not list(lock.parent.iterdir())


def test_runs_started_at_once_on_a_fresh_folder_all_proceed_and_share_the_grid(
    write_suite, tmp_path
):
    import os
    import subprocess
    import sys

    path, out = write_suite(), tmp_path / "results"
    script = Path(bench_plugin.__file__)
    command = [sys.executable, str(script), "bench", str(path), "--out", str(out), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(3)
    ]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], outputs
    planned = plan.plan(load_suite(path))
    ran = skipped = 0
    for output in outputs:
        assert "Traceback" not in output
        line = next(line for line in output.splitlines() if line.startswith("ran "))
        counts = [int(word) for word in line.replace(",", "").split() if word.isdigit()]
        ran, skipped = ran + counts[0], skipped + counts[1]
    assert ran == len(planned)  # each configuration computed exactly once, by one of them
    assert len(results.finished(out)) == sum(len(c.parts) for c in planned)
    assert not list((out / "_claims").iterdir())
    assert not [p for p in out.rglob(".*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "old, new, named",
    [
        (
            'name = "mathneuro"\n',
            'name = "mathneuro"\noptions = { mode = "published" }\n',
            "config.mode",
        ),
        ("limit = 8", "limit = 4", "task 'loss-short' computed with limit = 8 there, 4 now"),
        ("max_length = 32", "max_length = 16", "calibration.max_length = 32 there, 16 now"),
    ],
)
def test_growing_a_folder_with_another_configuration_under_a_label_is_refused(
    write_suite, tmp_path, old, new, named
):
    one = {"proportions = [0.05, 0.3]": "proportions = [0.05]", "seeds = [0, 1]": "seeds = [0]"}
    path, out = write_suite(**one), tmp_path / "results"
    first = CliRunner().invoke(cli, ["bench", str(path), "--out", str(out), "--no-progress"])
    assert first.exit_code == 0, first.output
    rows = len(results.read_results(out))
    path.write_text(path.read_text().replace(old, new))
    again = CliRunner().invoke(cli, ["bench", str(path), "--out", str(out), "--no-progress"])
    assert again.exit_code == 2, again.output
    line = again.output.strip()
    assert "\n" not in line and named in line and "Traceback" not in again.output
    assert len(results.read_results(out)) == rows  # nothing added


# Damaged results folders: every file locator keeps there, damaged every way, gives a one-line
# error whose advice works when followed, or is recomputed to the same rows.

DAMAGED_FILES = {
    "manifest": "_suite.json",
    "model identity": "_identity/model-*.json",
    "corpus identity": "_identity/corpus-*.json",
    "baseline": "_baselines/*.json",
    "baseline scores": "_samples/baseline-*.parquet",
    "scores": "_samples/[!b]*.parquet",
    "selection": "_selections/*.safetensors",
    "part": "part-*.parquet",
}
DAMAGES = ("truncated", "empty", "wrong type", "folder", "foreign")


def _damage(path, damage):
    import shutil

    data = path.read_bytes()
    if damage == "folder":
        path.unlink()
        path.mkdir()
        (path / "inside").write_text("x")
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "wrong type":
        path.write_text("[1, 2]" if path.suffix == ".json" else "null")
    elif path.suffix == ".json":  # foreign: another program's JSON object
        path.write_text('{"schema": "other/1", "value": 3}')
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"a": [1, 2]}), path)
    else:
        shutil.copy(Path(__file__), path)


def _rows(out):
    keep = (*results.KEY_COLUMNS, "label", "value", "baseline_value", "config_hash")
    return sorted(tuple(row[k] for k in keep) for row in results.read_results(out).to_pylist())


@pytest.fixture(scope="module")
def finished_folder(tmp_path_factory, saved_model):
    folder = tmp_path_factory.mktemp("finished")
    text = SUITE.replace("{model}", str(saved_model))
    text = text.replace("proportions = [0.05, 0.3]", "proportions = [0.3]")
    text = text.replace("seeds = [0, 1]", "seeds = [0]").replace(
        "factors = [0.0, 2.0]", "factors = [0.0]"
    )
    path = folder / "suite.toml"
    path.write_text(text)
    out = folder / "results"
    done = CliRunner().invoke(cli, ["bench", str(path), "--out", str(out), "--no-progress"])
    assert done.exit_code == 0, done.output
    assert CliRunner().invoke(cli, ["report", str(out)]).exit_code == 0
    return path, out, _rows(out)


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("kind", DAMAGED_FILES)
def test_a_damaged_file_in_a_results_folder_is_one_line_or_recomputed(
    finished_folder, tmp_path, kind, damage
):
    import shutil

    suite, original, rows = finished_folder
    out = tmp_path / "results"
    shutil.copytree(original, out)
    shutil.rmtree(out / "_report")
    damaged = sorted(out.glob(DAMAGED_FILES[kind]))[0]
    _damage(damaged, damage)

    def run():
        bench = CliRunner().invoke(cli, ["bench", str(suite), "--out", str(out), "--no-progress"])
        if bench.exit_code != 0:
            return bench
        return CliRunner().invoke(cli, ["report", str(out)])

    result = run()
    assert "Traceback" not in result.output and result.exit_code in (0, 2), result.output
    if result.exit_code == 2:
        lines = [line for line in result.output.splitlines() if line.startswith("Error")]
        assert len(lines) == 1 and damaged.name in lines[0], result.output
        if not ("delete" in lines[0] or "move it away" in lines[0]):
            assert "--out" in lines[0]  # the folder's record of its suite: a new folder helps
            return
        # Follow the advice: delete (or move away) what it names, and rerun.
        if damaged.is_dir():
            shutil.rmtree(damaged)
        else:
            damaged.unlink()
        for name in re.findall(r"part-[0-9a-f-]+\.parquet", lines[0]):
            (out / name).unlink(missing_ok=True)
        result = run()
        assert result.exit_code == 0, result.output
    assert _rows(out) == rows


@pytest.mark.parametrize("damage", ["claims folder is a file", *DAMAGES])
def test_a_damaged_claim_is_taken_over_or_one_line(finished_folder, tmp_path, monkeypatch, damage):
    import os
    import shutil
    import time

    from locator.bench import claims, runner

    monkeypatch.setattr(claims, "STALE_SECONDS", 1.0)
    monkeypatch.setattr(runner, "POLL_SECONDS", 0.1)
    suite, original, rows = finished_folder
    out = tmp_path / "results"
    shutil.copytree(original, out)
    first = plan.plan(load_suite(suite))[0]
    for name in first.parts.values():
        results.part_path(out, name).unlink()  # left to compute, under a damaged claim
    lock = claims.lock_path(out, first.key)
    if damage == "claims folder is a file":
        shutil.rmtree(lock.parent, ignore_errors=True)
        lock.parent.write_text("x")
        damaged = lock.parent
    else:
        lock.parent.mkdir(exist_ok=True)
        lock.write_text('{"pid": 1, "host": "elsewhere", "token": "t"}')
        _damage(lock, damage)
        stamp = time.time() - 5  # no heartbeat for 5 s: stale
        os.utime(lock, (stamp, stamp))
        damaged = lock
    result = CliRunner().invoke(cli, ["bench", str(suite), "--out", str(out), "--no-progress"])
    assert "Traceback" not in result.output and result.exit_code in (0, 2), result.output
    if result.exit_code == 2:
        lines = [line for line in result.output.splitlines() if line.startswith("Error")]
        assert len(lines) == 1 and damaged.name in lines[0] and "move it away" in lines[0]
        shutil.rmtree(damaged) if damaged.is_dir() else damaged.unlink()
        result = CliRunner().invoke(cli, ["bench", str(suite), "--out", str(out), "--no-progress"])
        assert result.exit_code == 0, result.output
    assert _rows(out) == rows
