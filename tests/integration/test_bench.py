"""The benchmark runner on a tiny saved model and local data: one row per planned cell, shared
statistics and baselines, matched counts, resume after SIGKILL, shards, the lm-eval backend."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest
from click.testing import CliRunner

import locator
from locator.bench import results, runner
from locator.bench.suite import load_suite
from locator.cli import cli
from locator.localization import Localization
from locator.plugins import register_plugin, unregister_plugin
from tests.conftest import SHARED_DATA

from . import bench_plugin

HERE = Path(__file__).resolve().parent

GRID = """
name = "grid"
proportions = [0.02, 0.1, 0.3]
factors = [0.0, 1.5]
seeds = [0, 1]
num_samples = [6]
batch_size = 4
max_length = 48

[[models]]
path = "{model}"

[[corpora]]
target = "words-a"
controls = ["words-b"]

[[methods]]
name = "mathneuro"

[[methods]]
name = "random"
match = "mathneuro"
label = "matched"

[[tasks]]
name = "loss-short"
limit = 16

[[tasks]]
name = "loss-long"
"""


@pytest.fixture(scope="module", autouse=True)
def plugin():
    register_plugin(bench_plugin, name="bench-plugin")
    yield
    unregister_plugin("bench-plugin")


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory, saved_model):
    folder = tmp_path_factory.mktemp("suite")
    # The model is given relative to the suite file, as a suite in a repository would.
    model = os.path.relpath(saved_model, folder)
    path = folder / "grid.toml"
    path.write_text(GRID.format(model=model))
    return path


class Spy:
    """Wraps a function to count its calls (it still runs)."""

    def __init__(self, monkeypatch, owner, name):
        self.calls = 0
        function = getattr(owner, name)

        def wrapper(*args, **kwargs):
            self.calls += 1
            return function(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)


@pytest.fixture(scope="module")
def whole(suite_file, tmp_path_factory):
    """The suite run once, uninterrupted, counting model loads, passes and evaluations."""
    out = tmp_path_factory.mktemp("whole")
    with pytest.MonkeyPatch.context() as monkeypatch:
        import locator.cache
        import locator.evaluation
        import locator.models

        loads = Spy(monkeypatch, locator.models, "load_model")
        passes = Spy(monkeypatch, locator.cache, "collect_from_rows")
        evaluations = Spy(monkeypatch, locator.evaluation, "run_evaluation")
        summary = runner.run_suite(load_suite(suite_file), out, progress=False, echo=lambda _: None)
    counts = {"loads": loads.calls, "passes": passes.calls, "evaluations": evaluations.calls}
    return out, summary, counts


def _comparable(directory):
    """The rows without timings and provenance, as sorted tuples."""
    table = results.read_results(directory)
    kept = [c for c in table.column_names if c not in results.VARYING_COLUMNS]
    return sorted(tuple(row.values()) for row in table.select(kept).to_pylist())


def test_one_row_per_planned_cell_with_required_columns(whole, suite_file):
    out, summary, _ = whole
    suite = load_suite(suite_file)
    plan = runner.plan(suite)
    assert summary.planned == summary.ran == len(plan) == 3 * 2 * 2 * 2
    table = results.read_results(out)
    metrics = 2  # loss and perplexity, per task
    assert table.num_rows == len(plan) * len(suite.tasks) * metrics
    keys = {tuple(r.values()) for r in table.select(list(results.KEY_COLUMNS)).to_pylist()}
    assert len(keys) == table.num_rows
    assert {p.name for p in out.glob("part-*.parquet")} == {
        f"part-{name}.parquet" for c in plan for name in c.parts.values()
    }
    required = (
        "suite model method method_config target controls proportion factor seed num_samples "
        "task metric value baseline_value selected_count selected_fraction"
    ).split()
    assert set(required) <= set(table.column_names)
    rows = table.to_pylist()
    assert {r["method"] for r in rows} == {"mathneuro", "random"}
    assert {r["controls"] for r in rows} == {"words-b"}
    assert all(r["locator_version"] == locator.__version__ for r in rows)
    assert all(r["torch_version"] and r["transformers_version"] for r in rows)
    # Pruning 30% of a random model's weights changes its loss; the baseline is the unedited one.
    pruned = [r for r in rows if r["factor"] == 0 and r["proportion"] == 0.3]
    assert all(r["value"] != r["baseline_value"] for r in pruned)
    assert len({r["baseline_value"] for r in rows if r["metric"] == "loss"}) == 2


def test_work_is_shared_not_repeated(whole):
    _, _, counts = whole
    assert counts["loads"] == 1  # the model is never reloaded
    # One pass per (corpus, seed): two corpora, seeds 0 and 1; none for the random baseline.
    assert counts["passes"] == 2 * 2
    # One evaluation per task for the baseline, then one per task per configuration.
    assert counts["evaluations"] == 2 + 24 * 2


def test_matched_random_copies_counts_and_selections_are_saved(whole):
    out, _, _ = whole
    rows = results.read_results(out).to_pylist()
    files = {(r["label"], r["proportion"], r["seed"]): r["selection"] for r in rows}
    for (label, proportion, seed), relative in files.items():
        if label != "matched":
            continue
        matched = Localization.load(out / relative)
        reference = Localization.load(out / files[("mathneuro", proportion, seed)])
        # `matched_to` means the same in the saved selection and in the results.
        row = next(r for r in rows if r["selection"] == relative)
        assert json.loads(row["method_config"])["matched_to"] == matched.matched_to
        assert matched.matched_to == "mathneuro"  # the label the suite matches
        assert matched.counts() == reference.counts()
        assert matched.jaccard(reference) < 1
    mathneuro = [r for r in rows if r["label"] == "mathneuro"]
    for row in mathneuro:
        loaded = Localization.load(out / row["selection"])
        assert loaded.count() == row["selected_count"]
        assert loaded.fraction() == pytest.approx(row["selected_fraction"])
        assert loaded.proportion == row["proportion"] and loaded.seed == row["seed"]


def test_sigkill_mid_run_then_resume_gives_the_same_rows(whole, suite_file, tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "LOSS_EVALUATOR_DELAY": "0.2", "OMP_NUM_THREADS": "1"}
    script = HERE / "bench_plugin.py"
    command = [sys.executable, str(script), "bench", str(suite_file), "--out", str(out)]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    plan = runner.plan(load_suite(suite_file))

    def finished_configurations():
        names = results.finished(out)
        return [c for c in plan if set(c.parts.values()) <= names]

    deadline = time.monotonic() + 120
    while len(finished_configurations()) < 3:
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the run wrote no part in time"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("part-*.parquet")}
    done = len(finished_configurations())
    assert 3 <= done < 24, "the run was not killed mid-way"

    summary = runner.run_suite(load_suite(suite_file), out, progress=False, echo=lambda _: None)
    assert summary.skipped == done and summary.ran == 24 - done
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("part-*.parquet")}
    assert {name: after[name] for name in before} == before  # finished parts untouched
    assert _comparable(out) == _comparable(whole[0])
    # Same suite, same seeds: the same selections.
    for selection in (whole[0] / "_selections").iterdir():
        again = Localization.load(out / "_selections" / selection.name)
        assert again.jaccard(Localization.load(selection)) == 1.0
    # A run with nothing left to do loads no model.
    summary = runner.run_suite(load_suite(suite_file), out, progress=False, echo=lambda _: None)
    assert summary.ran == 0 and summary.skipped == 24


def test_shards_together_equal_the_whole(whole, suite_file, tmp_path):
    out = tmp_path / "sharded"
    suite = load_suite(suite_file)
    sizes = []
    for index in (1, 2, 3):
        before = len(results.finished(out))
        summary = runner.run_suite(
            suite, out, shard_spec=(index, 3), progress=False, echo=lambda _: None
        )
        sizes.append((len(results.finished(out)) - before) // len(suite.tasks))  # a part per task
        assert summary.ran == summary.in_shard == sizes[-1]
    assert sizes == [8, 8, 8]
    assert _comparable(out) == _comparable(whole[0])


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="the shared local dataset copies are absent")
def test_the_lm_eval_backend_runs_through_the_runner(saved_model, tmp_path):
    suite_file = tmp_path / "lm-eval.toml"
    suite_file.write_text(
        f"""
        data_dir = "{SHARED_DATA}"
        proportions = [0.2]
        factors = [0.0]
        seeds = [0]
        num_samples = [4]
        max_length = 48
        [[models]]
        path = "{saved_model}"
        [[corpora]]
        target = "gsm8k"
        controls = ["race"]
        [[methods]]
        name = "mathneuro"
        [[tasks]]
        name = "race"
        limit = 4
        """
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["bench", str(suite_file), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    table = results.read_results(out)
    assert set(table.column("task").to_pylist()) == {"race"}
    accuracy = table.filter(pc.equal(table.column("metric"), "acc")).to_pylist()
    assert len(accuracy) == 1 and 0 <= accuracy[0]["value"] <= 1
    assert "lm-eval.toml" not in result.output and "race:acc" in result.output


def test_every_method_runs_from_one_pass_per_corpus(saved_model, tmp_path, monkeypatch):
    """Parameter- and neuron-level methods side by side; a neuron-level matched baseline."""
    import locator.cache

    suite_file = tmp_path / "methods.toml"
    suite_file.write_text(
        f"""
        proportions = [0.1]
        factors = [0.0]
        seeds = [3]
        num_samples = [8]
        max_length = 32
        [[models]]
        path = "{saved_model}"
        [[corpora]]
        target = "words-a"
        controls = ["words-b"]
        [[methods]]
        name = "mathneuro"
        [[methods]]
        name = "wanda"
        options = {{ norm = "per_sample", group = "matrix" }}
        label = "wanda-paper"
        [[methods]]
        name = "lape"
        [[methods]]
        name = "random"
        match = "lape"
        [[tasks]]
        name = "loss-short"
        limit = 4
        """
    )
    passes = Spy(monkeypatch, locator.cache, "collect_from_rows")
    out = tmp_path / "out"
    runner.run_suite(load_suite(suite_file), out, progress=False, echo=lambda _: None)
    assert passes.calls == 2  # target and control, every method's kinds at once
    rows = {r["label"]: r for r in results.read_results(out).to_pylist() if r["metric"] == "loss"}
    assert set(rows) == {"mathneuro", "wanda-paper", "lape", "random-matched-lape"}
    assert '"norm": "per_sample"' in rows["wanda-paper"]["method_config"]
    lape = Localization.load(out / rows["lape"]["selection"])
    matched = Localization.load(out / rows["random-matched-lape"]["selection"])
    assert lape.level == matched.level == "neuron"
    assert {n: len(i) for n, i in matched.neurons.items()} == {
        n: len(i) for n, i in lape.neurons.items()
    }
    assert rows["lape"]["selected_count"] == lape.count() > 0


def test_only_corpora_of_methods_that_read_a_statistic_pay_for_it(suite_file, tmp_path):
    """SNIP reads the target alone: its gradient kind is collected on the target only."""
    text = suite_file.read_text()
    text = text.replace('name = "random"\nmatch = "mathneuro"\nlabel = "matched"', 'name = "snip"')
    text = text.replace("proportions = [0.02, 0.1, 0.3]", "proportions = [0.1]")
    text = text.replace("factors = [0.0, 1.5]", "factors = [0.0]").replace(
        "seeds = [0, 1]", "seeds = [0]"
    )
    small = suite_file.with_name("snip.toml")
    small.write_text(text)
    collected = []
    with pytest.MonkeyPatch.context() as monkeypatch:
        import locator.cache

        collect = locator.cache.collect_from_rows

        def spy(*args, **kwargs):
            collected.append((kwargs["corpus"], set(kwargs["kinds"])))
            return collect(*args, **kwargs)

        monkeypatch.setattr(locator.cache, "collect_from_rows", spy)
        runner.run_suite(load_suite(small), tmp_path / "out", progress=False, echo=lambda _: None)
    kinds = dict(collected)
    assert kinds["words-a"] == {"input_norm_sum", "weight_gradient_saliency"}
    assert kinds["words-b"] == {"input_norm_sum"}


def test_a_method_with_its_own_controls_and_a_task_on_some_cells(saved_model, tmp_path):
    """`controls` on a method replaces the corpora entry's for it (and for the baseline matched
    to it); `proportions`/`factors` on a task evaluate it only in those cells."""
    suite_file = tmp_path / "own.toml"
    suite_file.write_text(
        f"""
        proportions = [0.05, 0.1]
        factors = [0.0, 1.5]
        seeds = [0]
        num_samples = [6]
        max_length = 32
        [[models]]
        path = "{saved_model}"
        [[corpora]]
        target = "words-a"
        controls = ["words-b"]
        [[methods]]
        name = "mathneuro"
        [[methods]]
        name = "mathneuro"
        label = "mathneuro-c"
        controls = ["words-c"]
        [[methods]]
        name = "random"
        match = "mathneuro-c"
        [[tasks]]
        name = "loss-short"
        limit = 4
        [[tasks]]
        name = "loss-long"
        limit = 4
        proportions = [0.1]
        factors = [0.0]
        """
    )
    out = tmp_path / "out"
    summary = runner.run_suite(load_suite(suite_file), out, progress=False, echo=lambda _: None)
    assert summary.ran == 3 * 2 * 2
    rows = [r for r in results.read_results(out).to_pylist() if r["metric"] == "loss"]
    controls = {r["label"]: r["controls"] for r in rows}
    assert controls == {
        "mathneuro": "words-b",
        "mathneuro-c": "words-c",
        "random-matched-mathneuro-c": "words-c",
    }
    for label in ("mathneuro-c", "random-matched-mathneuro-c"):
        found = Localization.load(out / next(r for r in rows if r["label"] == label)["selection"])
        assert found.controls in ((), ("words-c",))  # random reads no control
    long = {(r["label"], r["proportion"], r["factor"]) for r in rows if r["task"] == "loss-long"}
    assert long == {(label, 0.1, 0.0) for label in controls}
    assert len([r for r in rows if r["task"] == "loss-short"]) == 12


def test_each_method_ranks_once_when_methods_bring_their_own_controls(saved_model, tmp_path):
    """Corpora interleaved in the plan are grouped: MathNeuro ranks once, though the baseline
    matched to it comes after a method with other controls."""
    suite_file = tmp_path / "order.toml"
    suite_file.write_text(
        f"""
        proportions = [0.1]
        factors = [0.0]
        seeds = [0]
        num_samples = [6]
        max_length = 32
        [[models]]
        path = "{saved_model}"
        [[corpora]]
        target = "words-a"
        controls = ["words-b"]
        [[methods]]
        name = "mathneuro"
        [[methods]]
        name = "mathneuro"
        label = "mathneuro-c"
        controls = ["words-c"]
        [[methods]]
        name = "random"
        match = "mathneuro"
        [[tasks]]
        name = "loss-short"
        limit = 2
        """
    )
    calls = []
    with pytest.MonkeyPatch.context() as monkeypatch:
        from locator_plugins import mathneuro

        rank = mathneuro.MathNeuroLocalizer.localize_many

        def spy(self, context, proportions):
            calls.append(tuple(stats.corpus for stats in context.controls))
            return rank(self, context, proportions)

        monkeypatch.setattr(mathneuro.MathNeuroLocalizer, "localize_many", spy)
        runner.run_suite(
            load_suite(suite_file), tmp_path / "out", progress=False, echo=lambda _: None
        )
    assert sorted(calls) == [("words-b",), ("words-c",)]
