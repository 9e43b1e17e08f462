"""The ground-truth suite: `locator bench` plants the toy and scores every method's cuts against S
in results rows, `locator report` ranks the methods (ground-truth.csv); a run resumes; bad
suites and a planting changed outside S are refused in one line; the interval is over the
plantings' means."""

import csv
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from safetensors.torch import load_file, save_file

from locator.bench.suite import load_suite

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

TINY = """
name = "gt-tiny"
seeds = [0, 1]
num_samples = [16]

[ground_truth]
levels = ["neuron"]
plantings = [1]
steps = 3

[[methods]]
name = "wanda"

[[methods]]
name = "random"

[[methods]]
name = "lape"
"""


def locator(*args):
    """Run the CLI in a subprocess, as a user does: exit code and output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    found = subprocess.run(
        [sys.executable, "-m", "locator", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    return found.returncode, found.stdout + found.stderr


def files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A tiny ground-truth suite run and reported: (suite file, results folder, outputs)."""
    root = tmp_path_factory.mktemp("gt")
    suite = root / "gt.toml"
    suite.write_text(TINY)
    out = root / "out"
    bench = locator("bench", suite, "--out", out, "--no-progress")
    assert bench[0] == 0, bench[1]
    report = locator("report", out)
    assert report[0] == 0, report[1]
    return suite, out, bench[1], report[1]


def test_the_suite_runs_reports_and_ranks_by_auprc(finished):
    _, out, bench, report = finished
    assert "1 plantings x 2 seeds x 3 methods = 6 cells" in bench
    assert "neuron-level truth: mean AUPRC [95%] (chance)" in report
    with open(out / "_report" / "ground-truth.csv", newline="") as handle:
        ranked = list(csv.DictReader(handle))
    assert [r["rank"] for r in ranked] == ["1", "2", "3"]
    assert {r["method"] for r in ranked} == {"wanda", "random", "lape"}
    auprc = [float(r["auprc"]) for r in ranked]
    assert auprc == sorted(auprc, reverse=True)
    by_method = {r["method"]: r for r in ranked}
    # A weight method is scored on the entries S spans, a neuron method on neurons.
    assert by_method["wanda"]["unit"] == "entry" and by_method["lape"]["unit"] == "neuron"
    assert float(by_method["lape"]["chance"]) == pytest.approx(32 / 1024)
    assert float(by_method["wanda"]["chance"]) == pytest.approx(32 * 3 * 64 / 262_144)
    assert all(r["cells"] == "2" and r["plantings"] == "1" for r in ranked)
    text = (out / "_report" / "report.md").read_text()
    assert "## Ground truth" in text and "### Neuron-level truth" in text


def test_rows_are_parquet_and_name_every_saved_cut_scored_by_held_out_code(finished):
    from locator.toy.plant import score_files

    _, out, _, _ = finished
    rows = ds.dataset(out, format="parquet").to_table().to_pylist()  # as any reader does
    tasks = {r["task"] for r in rows}
    assert tasks == {
        "ground-truth-entries",
        "ground-truth-neurons",
        "toy-planted",
        "toy-arithmetic",
        "toy-language",
    }
    planting = out / "_plantings" / "neuron-1"
    for label in ("wanda", "lape"):
        mine = [r for r in rows if r["label"] == label and r["seed"] == 0]
        cuts = sorted({r["selection"] for r in mine if r["task"].startswith("ground-truth")})
        assert len(cuts) >= 16
        found = score_files(planting, [out / cut for cut in cuts])
        auprc = next(r["value"] for r in mine if r["metric"] == "auprc")
        assert found.auprc == pytest.approx(auprc)
        # The pruned evaluation is of the cut of |S|'s size, beside the unpruned planted model.
        at = next(r for r in mine if r["metric"] == "auprc")["config_hash"]
        pruned = [r for r in mine if r["config_hash"] == at and r["task"] == "toy-planted"]
        assert pruned and pruned[0]["factor"] == 0.0 and pruned[0]["baseline_value"] is not None


def test_a_rerun_resumes_and_a_planting_changed_outside_s_is_refused(finished, tmp_path):
    import shutil

    suite, out, _, _ = finished
    copy = tmp_path / "copy"  # elsewhere: a results folder can move
    shutil.copytree(out, copy)
    code, output = locator("bench", suite, "--out", copy, "--no-progress")
    assert code == 0 and "ran 0 configurations, 6 already finished" in output, output
    # A run stopped before one (planting, seed, method) part was written runs that one alone.
    parts = sorted(copy.glob("part-*.parquet"))
    rows = ds.dataset(parts[0], format="parquet").to_table().to_pylist()
    parts[0].unlink()
    code, output = locator("bench", suite, "--out", copy, "--no-progress")
    assert code == 0 and "ran 1 configurations, 5 already finished" in output, output
    again = ds.dataset(parts[0], format="parquet").to_table().to_pylist()
    assert [r["value"] for r in again] == [r["value"] for r in rows]
    weights = load_file(copy / "_plantings" / "neuron-1" / "model.safetensors")
    weights["model.embed_tokens.weight"].view(-1)[1] += 1.0  # outside S
    save_file(weights, copy / "_plantings" / "neuron-1" / "model.safetensors", {"format": "pt"})
    before = files(copy)
    code, output = locator("bench", suite, "--out", copy, "--no-progress")
    lines = [line for line in output.splitlines() if "Error" in line or "outside S" in line]
    assert code == 2 and len(lines) == 1 and "outside S" in lines[0], output
    assert files(copy) == before


@pytest.mark.parametrize(
    "change, message",
    [
        ('[ground_truth]\nlevels = ["layer"]\n', "ground_truth.levels: must be one of"),
        ("[ground_truth]\nsteps = 0\n", "ground_truth.steps"),
        ('[ground_truth]\n[[corpora]]\ntarget = "toy-arithmetic"\n', "corpora: a ground-truth"),
        ("[ground_truth]\nplantings = []\n", "ground_truth.plantings"),
        ("[ground_truth]\nplantings = [1, 1]\n", "ground_truth.plantings: must be a non-empty"),
        ("[ground_truth]\nplantings = [-1]\n", "ground_truth.plantings: must be integers >= 0"),
    ],
)
def test_bad_ground_truth_suites_fail_in_one_line_and_write_nothing(tmp_path, change, message):
    suite = tmp_path / "bad.toml"
    suite.write_text('seeds = [0]\nnum_samples = [8]\n[[methods]]\nname = "random"\n' + change)
    code, output = locator("bench", suite, "--out", tmp_path / "out", "--no-progress")
    assert code == 2 and message in output and len(output.strip().splitlines()) == 1, output
    assert not (tmp_path / "out").exists()


def test_the_shipped_suite_runs_every_installed_method():
    import locator as package

    suite = load_suite(BENCHMARKS / "ground-truth.toml")
    assert {m.name for m in suite.methods} == set(package.list_localizers())
    assert suite.ground_truth is not None and len(suite.ground_truth.plantings) >= 3
    assert suite.ground_truth.levels == ("weight", "neuron") and len(suite.seeds) >= 2
    assert suite.factors == (0.0,) and suite.corpora[0].target == "toy-planted"


def test_the_interval_is_a_t_interval_over_the_plantings_means():
    from locator.bench.ground_truth import interval
    from locator.bench.specificity import t975

    # Three plantings, two seeds each: the unit is the planting's mean.
    values = {0: [0.2, 0.4], 1: [0.5, 0.5], 2: [0.6, 0.8]}
    means = [0.3, 0.5, 0.7]
    half = t975(2) * statistics.stdev(means) / math.sqrt(3)
    assert interval(values) == pytest.approx((0.5, 0.5 - half, 0.5 + half))
    # One planting: over its seeds; one value: no interval; bounds clipped to [0, 1].
    half = t975(1) * statistics.stdev([0.40, 0.42]) / math.sqrt(2)
    assert interval({0: [0.40, 0.42]}) == pytest.approx((0.41, 0.41 - half, 0.41 + half))
    assert interval({0: [0.0, 0.02]})[1] == 0.0
    assert interval({0: [0.4]}) == (0.4, 0.4, 0.4)


def test_records_rank_methods_by_mean_auprc_per_level():
    from locator.bench.ground_truth import records

    cells = []
    for planting, (good, bad) in enumerate([(0.5, 0.1), (0.6, 0.2), (0.7, 0.0)]):
        for method, auprc in (("bad", bad), ("good", good)):
            cells.append(
                {
                    "level": "weight",
                    "planting": planting,
                    "seed": 0,
                    "method": method,
                    "unit": "entry",
                    "auprc": auprc,
                    **dict.fromkeys(
                        ("precision", "recall", "chance", "planted_after_pruning"), 0.5
                    ),
                    **dict.fromkeys(("arithmetic_after_pruning", "language_loss_after_pruning"), 1),
                }
            )
    ranked = records(cells)
    assert [(r["rank"], r["method"]) for r in ranked] == [(1, "good"), (2, "bad")]
    half = 4.303 * 0.1 / math.sqrt(3)
    assert ranked[0]["auprc"] == pytest.approx(0.6)
    assert (ranked[0]["auprc_low"], ranked[0]["auprc_high"]) == pytest.approx(
        (0.6 - half, 0.6 + half), abs=1e-3
    )
    assert ranked[1]["auprc_low"] == 0.0  # clipped
