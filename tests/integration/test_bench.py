"""The benchmark runner on a tiny saved model and local data: one row per planned cell, shared
statistics and baselines, matched counts, resume after SIGKILL, shards, the lm-eval backend."""

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import pyarrow.compute as pc
import pytest
import torch
from click.testing import CliRunner

import locator
from locator.bench import plan as planning
from locator.bench import results, runner
from locator.bench.suite import load_suite
from locator.cli import cli
from locator.localization import Localization
from locator.plugins import register_plugin, unregister_plugin
from tests.conftest import SHARED_DATA

from . import bench_plugin

HERE = Path(__file__).resolve().parent


def write_suite(folder, model, tables, **grid):
    """`bench_plugin.suite` written into `folder`."""
    path = folder / "suite.toml"
    path.write_text(bench_plugin.suite(model, tables, **grid))
    return path


GRID = """
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
    grid = {"proportions": (0.02, 0.1, 0.3), "factors": (0.0, 1.5), "seeds": (0, 1)}
    return write_suite(folder, model, GRID, **grid)


@contextmanager
def forwards():
    """Every outermost module call while the block runs, as (module, keyword arguments, whether
    gradients were on), seen by forward hooks: a statistics pass calls the model (or its
    decoder) once per batch, the test evaluator once per text, with ``labels``."""
    from torch.nn.modules.module import (
        register_module_forward_hook,
        register_module_forward_pre_hook,
    )

    calls, depth = [], [0]

    def enter(module, args):
        depth[0] += 1

    def leave(module, args, kwargs, output):
        depth[0] -= 1
        if depth[0] == 0:
            calls.append((module, kwargs, torch.is_grad_enabled()))

    handles = [
        register_module_forward_pre_hook(enter),
        register_module_forward_hook(leave, with_kwargs=True, always_call=True),
    ]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def statistics_batches(calls):
    """The calls of statistics passes (those of the evaluator pass labels)."""
    return [call for call in calls if "labels" not in call[1]]


def run(suite_file, out, **options):
    """`run_suite` without output."""
    suite = load_suite(suite_file)
    return runner.run_suite(suite, out, progress=False, echo=lambda _: None, **options)


@pytest.fixture(scope="module")
def whole(suite_file, tmp_path_factory):
    """The suite run once, uninterrupted, with every forward call it made."""
    out = tmp_path_factory.mktemp("whole")
    with forwards() as calls:
        summary = run(suite_file, out)
    return out, summary, calls


def _comparable(directory):
    """The rows without timings and provenance, as sorted tuples."""
    table = results.read_results(directory)
    kept = [c for c in table.column_names if c not in results.VARYING_COLUMNS]
    return sorted(tuple(row.values()) for row in table.select(kept).to_pylist())


def test_one_row_per_planned_cell_with_required_columns(whole, suite_file):
    out, summary, _ = whole
    suite = load_suite(suite_file)
    plan = planning.plan(suite)
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
    _, _, calls = whole
    # The model is never reloaded: every call went through one model (or its decoder).
    (model,) = {module for module, kwargs, _ in calls if "labels" in kwargs}
    assert {module for module, _, _ in calls} <= {model, model.base_model}
    # One pass per (corpus, seed): two corpora, seeds 0 and 1, of one batch each (6 samples
    # in batches of 8); none for the random baseline.
    assert len(statistics_batches(calls)) == 2 * 2
    # One evaluation per task for the baseline, then one per task per configuration: a call
    # per text, 16 of loss-short and 32 of loss-long.
    assert len(calls) - len(statistics_batches(calls)) == (1 + 24) * (16 + 32)


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
    plan = planning.plan(load_suite(suite_file))

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

    summary = run(suite_file, out)
    assert summary.skipped == done and summary.ran == 24 - done
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("part-*.parquet")}
    assert {name: after[name] for name in before} == before  # finished parts untouched
    assert _comparable(out) == _comparable(whole[0])
    # Same suite, same seeds: the same selections.
    for selection in (whole[0] / "_selections").iterdir():
        again = Localization.load(out / "_selections" / selection.name)
        assert again.jaccard(Localization.load(selection)) == 1.0
    # A run with nothing left to do loads no model.
    summary = run(suite_file, out)
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
    tables = '[[methods]]\nname = "mathneuro"\n[[tasks]]\nname = "race"\nlimit = 4\n'
    text = bench_plugin.suite(saved_model, tables, proportions=(0.2,), samples=4)
    text = text.replace('"words-a"', '"gsm8k"').replace('["words-b"]', '["race"]')
    suite_file = tmp_path / "lm-eval.toml"
    suite_file.write_text(f'data_dir = "{SHARED_DATA}"\n{text}')
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["bench", str(suite_file), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    table = results.read_results(out)
    assert set(table.column("task").to_pylist()) == {"race"}
    accuracy = table.filter(pc.equal(table.column("metric"), "acc")).to_pylist()
    assert len(accuracy) == 1 and 0 <= accuracy[0]["value"] <= 1
    assert "lm-eval.toml" not in result.output and "race:acc" in result.output


def test_every_method_runs_from_one_pass_per_corpus(saved_model, tmp_path):
    """Parameter- and neuron-level methods side by side; a neuron-level matched baseline."""
    methods = """
        [[methods]]
        name = "mathneuro"
        [[methods]]
        name = "wanda"
        options = { norm = "per_sample", group = "matrix" }
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
    suite_file = write_suite(tmp_path, saved_model, methods, seeds=(3,), samples=8)
    out = tmp_path / "out"
    with forwards() as calls:
        run(suite_file, out)
    # Target and control, every method's kinds at once: one batch of 8 samples each.
    assert len(statistics_batches(calls)) == 2
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


def test_only_corpora_of_methods_that_read_a_statistic_pay_for_it(saved_model, tmp_path):
    """SNIP reads the target alone: its gradient kind is collected on the target only, so the
    control's pass runs without gradients."""
    methods = """
        [[methods]]
        name = "mathneuro"
        [[methods]]
        name = "snip"
        [[tasks]]
        name = "loss-short"
        limit = 4
        """
    with forwards() as calls:
        run(write_suite(tmp_path, saved_model, methods), tmp_path / "out")
    # The target (words-a), then the control: a batch each, with gradients on the target's.
    assert [grad for _, _, grad in statistics_batches(calls)] == [True, False]


def test_a_method_with_its_own_controls_and_a_task_on_some_cells(saved_model, tmp_path):
    """`controls` on a method replaces the corpora entry's for it (and for the baseline matched
    to it); `proportions`/`factors` on a task evaluate it only in those cells. Corpora
    interleaved in the plan are grouped: each method ranks once per corpora, though the
    baseline matched to the first comes after a method with other controls."""
    tables = """
        [[methods]]
        name = "counted-mathneuro"
        label = "mathneuro"
        [[methods]]
        name = "counted-mathneuro"
        label = "mathneuro-c"
        controls = ["words-c"]
        [[methods]]
        name = "random"
        label = "matched"
        match = "mathneuro"
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
    grid = {"proportions": (0.05, 0.1), "factors": (0.0, 1.5)}
    out = tmp_path / "out"
    register_plugin(Counted, name="counted-mathneuro")
    try:
        summary = run(write_suite(tmp_path, saved_model, tables, **grid), out)
    finally:
        unregister_plugin("counted-mathneuro")
    assert sorted(Counted.rankings) == [("words-b",), ("words-c",)]
    assert summary.ran == 4 * 2 * 2
    rows = [r for r in results.read_results(out).to_pylist() if r["metric"] == "loss"]
    controls = {r["label"]: r["controls"] for r in rows}
    assert controls == {
        "mathneuro": "words-b",
        "mathneuro-c": "words-c",
        "random-matched-mathneuro-c": "words-c",
        "matched": "words-b",
    }
    for label in ("mathneuro-c", "random-matched-mathneuro-c"):
        found = Localization.load(out / next(r for r in rows if r["label"] == label)["selection"])
        assert found.controls in ((), ("words-c",))  # random reads no control
    long = {(r["label"], r["proportion"], r["factor"]) for r in rows if r["task"] == "loss-long"}
    assert long == {(label, 0.1, 0.0) for label in controls}
    assert len([r for r in rows if r["task"] == "loss-short"]) == 16


class Counted:
    """A plugin registering MathNeuro as ``counted-mathneuro``, recording the controls of each
    of its rankings."""

    rankings: ClassVar[list[tuple[str, ...]]] = []

    @staticmethod
    @locator.hookimpl
    def register_localizers(register):
        from locator_plugins.mathneuro import MathNeuroLocalizer

        class CountedMathNeuro(MathNeuroLocalizer):
            name = "counted-mathneuro"

            def localize_many(self, context, proportions):
                Counted.rankings.append(tuple(stats.corpus for stats in context.controls))
                return super().localize_many(context, proportions)

        register(CountedMathNeuro)
