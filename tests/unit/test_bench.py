"""The benchmark harness without a model: suite checks, planning, shards, the schema, the report."""

import re
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from locator.bench import plan as planning
from locator.bench import results
from locator.bench.report import summary_table, write_report
from locator.bench.suite import CorporaSpec, MethodSpec, Suite, TaskSpec, parse_suite
from locator.data import CalibrationOptions
from locator.errors import LocatorError
from locator.localization import Localization
from locator.models import ModelOptions


def _suite(**changes):
    values = dict(
        name="unit",
        path=Path("/nowhere/unit.toml"),
        models=(ModelOptions(path="model"),),
        corpora=(
            CorporaSpec(target="gsm8k", controls=("race",)),
            CorporaSpec(target="gsm8k", controls=("mmlu",)),
        ),
        methods=(
            MethodSpec(name="mathneuro", label="mathneuro"),
            MethodSpec(name="random", label="random-matched", match="mathneuro"),
        ),
        tasks=(TaskSpec(name="gsm8k", limit=5), TaskSpec(name="race")),
        proportions=(0.01, 0.05, 0.1),
        factors=(0.0, 1.1),
        seeds=(0, 1, 2),
        num_samples=(8,),
    )
    values.update(changes)
    return Suite(**values)


# Suites: the checks that need no installed dataset or task.

VALID = {
    "proportions": [0.01],
    "factors": [0.0],
    "seeds": [0],
    "num_samples": [4],
    "models": [{"path": "m"}],
    "corpora": [{"target": "t"}],
    "methods": [{"name": "mathneuro"}],
    "tasks": [{"name": "x"}],
}


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"proportion": [0.1]},
            "proportion: unknown key 'proportion'. Did you mean 'proportions'?",
        ),
        ({"proportions": [0.0]}, "proportions[0]: proportion must be in (0, 1], got 0.0."),
        ({"proportions": [1.5]}, "proportions[0]: proportion must be in (0, 1], got 1.5."),
        ({"proportions": []}, "proportions: is empty: the grid has no cells."),
        ({"seeds": 3}, "seeds: must be a list, e.g. seeds = [3]."),
        ({"seeds": [0, 0]}, "seeds: has duplicates: [0, 0]."),
        ({"factors": [float("nan")]}, "factors[0]: factor must be a finite number"),
        ({"methods": []}, "methods: is empty: the grid has no cells."),
        ({"models": [{"path": "m", "dtyp": "bf16"}]}, "models[0].dtyp: unknown key 'dtyp'."),
        ({"models": [{"path": "m", "dtype": "bf16"}]}, "models[0].dtype: unknown dtype 'bf16'."),
        (
            {"models": [{"path": "m", "device_map": "everywhere"}]},
            "models[0].device_map: unknown device map 'everywhere'.",
        ),
        (
            {"models": [{"path": "m", "trust_remote_code": "yes"}]},
            "models[0].trust_remote_code: must be true or false, got 'yes'.",
        ),
        (
            {"models": [{"path": "m", "revision": 3}]},
            "models[0].revision: must be a non-empty string",
        ),
        ({"tasks": [{"name": "x", "limit": 0}]}, "tasks[0].limit: must be a positive integer"),
        (
            {"tasks": [{"name": "x", "fewshot_as_multiturn": True}]},
            "tasks[0].fewshot_as_multiturn: needs apply_chat_template",
        ),
        ({"tasks": [{"name": "x", "num_fewshot": "5"}]}, "tasks[0].num_fewshot: must be an"),
        (
            {"eval_batch_size": "max"},
            "eval_batch_size: must be a positive integer or 'auto', got 'max'.",
        ),
        (
            {"methods": [{"name": "random", "match": "nothing"}]},
            "methods[0].match: unknown method label 'nothing'.",
        ),
        ({"data_dir": "no/such/folder"}, "data_dir: 'no/such/folder' is not a folder"),
        ({"with_replacement": "yes"}, "with_replacement: must be true or false, got 'yes'."),
        (
            {"tasks": [{"name": "x", "max_new_tokens": -1}]},
            "tasks[0].max_new_tokens: must be a positive integer or None, got -1.",
        ),
        (
            {"corpora": [{"controls": ["c"]}]},
            "corpora[0].target: missing: the dataset that shows the skill.",
        ),
        ({"corpora": [{"target": "t", "cotnrols": []}]}, "Did you mean 'controls'?"),
        ({"corpora": [{"target": "t", "controls": ["c", "c"]}]}, "has duplicates: ['c', 'c']."),
        ({"models": [{"dtype": "float32"}]}, "models[0].path: missing: Short name"),
        ({"tasks": [{"limit": 3}]}, "tasks[0].name: missing: an evaluation task."),
        (
            {"methods": [{"name": "mathneuro"}, {"name": "mathneuro"}]},
            "methods[1].label: 'mathneuro' is used twice",
        ),
        ({"tasks": [{"name": "x"}, {"name": "x"}]}, "tasks[1]: repeats tasks[0]."),
        ({"tasks": [{"name": "x", "factors": [0.0, 0.0]}]}, "tasks[0].factors: has duplicates"),
        (
            {"tasks": [{"name": "x", "proportions": [2]}]},
            "tasks[0].proportions[0]: proportion must be in (0, 1], got 2.",
        ),
        (
            {"methods": [{"name": "mathneuro", "controls": "c"}]},
            "methods[0].controls: must be a list, each a non-empty string or None, got 'c'.",
        ),
        (
            {"methods": [{"name": "mathneuro", "controls": ["c", "c"]}]},
            "methods[0].controls: has duplicates: ['c', 'c'].",
        ),
        ({"methods": [{"label": "m"}]}, "methods[0].name: missing: a method (see `locator"),
        ({"methods": [{"name": "mathneuro", "label": ""}]}, "methods[0].label: must be a non"),
    ],
)
def test_bad_suites_fail_with_file_key_and_choices(change, message):
    with pytest.raises(LocatorError) as error:
        parse_suite({**VALID, **change}, Path("/suites/s.toml"))
    assert str(error.value).startswith("/suites/s.toml: ")
    assert message in str(error.value)
    assert "\n" not in str(error.value)


# Planning and shards.


def test_plan_covers_the_grid_with_stable_distinct_keys():
    suite = _suite()
    plan = planning.plan(suite)
    assert (
        len(plan) == 1 * 2 * 2 * 3 * 3 * 2
    )  # models, corpora, methods, proportions, factors, seeds
    assert len({c.key for c in plan}) == len(plan)
    assert [c.key for c in planning.plan(_suite())] == [c.key for c in plan]
    # A selection is shared by the factors of one (method, proportion, ...).
    assert len({c.selection_key for c in plan}) == len(plan) // 2
    matched = [c for c in plan if c.method.match]
    assert {c.method_config for c in matched} == {'{"matched_to": "mathneuro"}'}
    # The grid's order keeps (model, num_samples, seed) groups contiguous.
    groups = [c.group for c in plan]
    assert groups == sorted(groups, key=groups.index)


def test_keys_depend_on_what_changes_results_only():
    base = {c.key for c in planning.plan(_suite())}
    assert {c.key for c in planning.plan(_suite(name="renamed", eval_batch_size=3))} == base
    truncated = _suite(calibration=CalibrationOptions(max_length=64))
    assert {c.key for c in planning.plan(truncated)}.isdisjoint(base)
    # Where a model runs changes nothing; which revision it is does.
    placed = ModelOptions(path="model", device="cpu", device_map=None, trust_remote_code=True)
    assert {c.key for c in planning.plan(_suite(models=(placed,)))} == base
    revised = ModelOptions(path="model", revision="v2")
    assert {c.key for c in planning.plan(_suite(models=(revised,)))}.isdisjoint(base)
    # A config equal to the defaults gives the same configuration.
    from locator.localizer import NoConfig

    explicit = MethodSpec(
        name="random", label="random-matched", match="mathneuro", config=NoConfig()
    )
    assert {c.key for c in planning.plan(_suite(methods=(_suite().methods[0], explicit)))} == base


PURE = """
import sys
from locator.bench import plan
assert "torch" not in sys.modules, "importing the plan imported torch"
from locator.bench.suite import load_suite
suite = load_suite(sys.argv[1])
opened = []
sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" else None)
configurations = plan.shard(plan.plan(suite), 1, 2)
plan.manifest(suite, configurations, "source")
print(len(configurations), opened)
"""


def test_planning_imports_no_torch_and_opens_no_file():
    import subprocess
    import sys

    suite = Path(__file__).resolve().parents[2] / "benchmarks" / "toy.toml"
    done = subprocess.run(
        [sys.executable, "-c", PURE, str(suite)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split(maxsplit=1)[1].strip() == "[]"  # no file opened while planning
    assert int(done.stdout.split()[0]) > 0


@pytest.mark.parametrize("count", [1, 2, 3, 7, 50])
def test_shards_partition_the_plan(count):
    plan = planning.plan(_suite())
    parts = [planning.shard(plan, index, count) for index in range(1, count + 1)]
    assert [c.key for part in parts for c in part] == [c.key for c in plan]
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0"])
def test_bad_shard_specs(text):
    with pytest.raises(LocatorError, match="--shard"):
        planning.parse_shard(text)


# The results dataset.


def _localization(seed, fraction):
    generator = torch.Generator().manual_seed(seed)
    masks = {
        f"model.layers.{layer}.{kind}.weight": torch.rand(8, 6, generator=generator) < fraction
        for layer in range(2)
        for kind in ("self_attn.q_proj", "mlp.down_proj")
    }
    return Localization.from_masks(masks, method="m", proportion=fraction, seed=seed)


def _write_synthetic(directory, **suite):
    """A results folder as the runner writes it, with made-up values and real selection files."""
    plan = planning.plan(_suite(**{"num_samples": (8, 16), **suite}))
    provenance = results.provenance()
    baseline = {("gsm8k", "exact_match"): 0.5, ("race", "acc"): 0.4, ("race", "acc_stderr"): 0.01}
    for configuration in plan:
        selection = f"_selections/{configuration.selection_key}.safetensors"
        fraction = configuration.proportion * (0.5 if configuration.method.match else 0.6)
        localization = _localization(configuration.seed, fraction)
        if not (directory / selection).exists():
            localization.save(directory / selection)
        rows = []
        for (task, metric), base in baseline.items():
            drop = 0.0 if configuration.method.match else configuration.proportion
            rows.append(
                results.Row(
                    suite="unit",
                    model="model",
                    dtype="auto",
                    method=configuration.method.name,
                    label=configuration.method.label,
                    method_config=configuration.method_config,
                    target="gsm8k",
                    controls=",".join(configuration.corpora.controls),
                    proportion=configuration.proportion,
                    factor=configuration.factor,
                    seed=configuration.seed,
                    num_samples=configuration.num_samples,
                    task=task,
                    limit=5 if task == "gsm8k" else None,
                    metric=metric,
                    value=base - drop + 0.001 * configuration.seed,
                    baseline_value=base,
                    selected_count=localization.count(),
                    selected_fraction=localization.fraction(),
                    scored_count=localization.numel(),
                    selection=selection,
                    statistics_seconds=0.1,
                    localization_seconds=0.2,
                    evaluation_seconds=0.3,
                    config_hash=configuration.key,
                    **provenance,
                    created_at=datetime.now(timezone.utc),
                    model_revision=None,
                    model_fingerprint=None,
                    higher_is_better=None,
                )
            )
        results.write_part(directory, configuration.key, rows)
    return plan


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    directory = tmp_path_factory.mktemp("results")
    return directory, _write_synthetic(directory)


def test_parts_read_back_with_the_schema_in_pyarrow_and_pandas(synthetic):
    import pandas as pd

    directory, plan = synthetic
    table = results.read_results(directory)
    assert table.schema.equals(results.SCHEMA, check_metadata=False)
    assert table.num_rows == len(plan) * 3
    assert results.finished(directory) == {c.key for c in plan}
    keys = table.select(list(results.KEY_COLUMNS)).to_pylist()
    assert len({tuple(k.values()) for k in keys}) == table.num_rows  # no duplicated row
    # The folder itself is the dataset: readers skip the `_` folders beside the parts.
    frame = pd.read_parquet(directory)
    assert len(frame) == table.num_rows
    assert str(frame["created_at"].dt.tz) == "UTC"
    assert frame["controls"].isin(["race", "mmlu"]).all()
    assert frame["seed"].dtype == "int64" and frame["value"].dtype == "float64"
    assert pq.read_schema(next(directory.glob("part-*.parquet"))).field("created_at").type == (
        pa.timestamp("us", tz="UTC")
    )


def test_parts_read_in_polars_and_duckdb_when_installed(synthetic):
    directory, plan = synthetic
    rows = len(plan) * 3
    try:
        import polars as pl
    except ImportError:
        pl = None
    if pl is not None:
        assert pl.read_parquet(str(directory / "*.parquet")).height == rows
    try:
        import duckdb
    except ImportError:
        duckdb = None
    if duckdb is not None:
        query = f"select count(*) from read_parquet('{directory}/*.parquet')"
        assert duckdb.sql(query).fetchone()[0] == rows
    if pl is None and duckdb is None:
        pytest.skip("neither polars nor duckdb is installed")


def test_write_part_is_atomic_and_checks_the_schema(tmp_path, synthetic):
    directory, _ = synthetic
    row = results.read_results(directory).slice(0, 1).to_pylist()[0]
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        results.write_part(tmp_path, "bad", [results.Row(**{**row, "seed": "one"})])
    assert list(tmp_path.iterdir()) == []  # no part, no temporary file left behind


def test_a_folder_grows_but_refuses_another_schema_or_changed_content(tmp_path):
    suite, other = _suite(), _suite(seeds=(5,))
    manifest = planning.manifest(suite, planning.plan(suite), "source")
    results.check_manifest(tmp_path, manifest)
    results.check_manifest(tmp_path, planning.manifest(other, planning.plan(other), "s"))  # grows
    assert results.read_json(tmp_path / "_suite.json")["schema"] == results.SCHEMA_VERSION
    results.write_json(tmp_path / "_suite.json", {**manifest, "schema": "locator.bench/0"})
    with pytest.raises(LocatorError, match="schema"):
        results.check_manifest(tmp_path, manifest)
    key = {"path": "m", "dtype": "auto"}
    results.check_identity(tmp_path, "model", key, {"fingerprint": "a"})
    results.check_identity(tmp_path, "model", key, {"fingerprint": "a"})
    with pytest.raises(LocatorError, match="changed since the results"):
        results.check_identity(tmp_path, "model", key, {"fingerprint": "b"})


# The report.


def test_summary_table_has_baseline_and_every_cell(synthetic):
    directory, plan = synthetic
    text = summary_table(results.read_results(directory).to_pylist())
    assert "target gsm8k, controls race" in text and "controls mmlu" in text
    assert "gsm8k:exact_match" in text and "stderr" not in text
    lines = text.splitlines()
    assert sum(line.strip().startswith("baseline") for line in lines) == 2
    # Per experiment: 2 sample counts x 2 factors x 3 proportions.
    assert sum(line.strip().startswith("random-matched") for line in lines) == 2 * 2 * 2 * 3


def test_report_writes_markdown_with_readable_plots(synthetic):
    from PIL import Image

    directory, _ = synthetic
    path = write_report(directory)
    assert path == directory / "_report" / "report.md"
    text = path.read_text()
    images = [
        line[line.rindex("(") + 1 : -1] for line in text.splitlines() if line.startswith("![")
    ]
    # Per experiment: effect and specificity plane per sample count and factor, consistency,
    # placement.
    assert len(images) == 2 * (2 * 2 * 2 + 2)
    for name in images:
        with Image.open(path.parent / name) as image:
            assert image.format == "PNG" and min(image.size) > 200
        assert (path.parent / name).with_suffix(".svg").is_file()
    assert "### Effect of editing: prune (x0), 8 calibration samples" in text
    assert "### Specificity: scale x1.1, 16 calibration samples" in text
    assert "Across seeds:" in text and "Against the largest sample count, same seed:" in text
    assert "| mathneuro | 0.1 | 8 vs 16 | 3 |" in text
    # Overlap across seeds, as computed from the selections themselves.
    fraction = 0.1 * 0.6  # what _write_synthetic drew for mathneuro at proportion 0.1
    drawn = [_localization(seed, fraction) for seed in range(3)]
    pairs = [drawn[a].jaccard(drawn[b]) for a, b in ((0, 1), (0, 2), (1, 2))]
    rows = [line for line in text.splitlines() if line.startswith("| mathneuro | 0.1 | 8 | 3 |")]
    assert len(rows) == 2  # once per experiment (the controls differ, selections not)
    mean, low, high = (float(x) for x in re.findall(r"\d\.\d+", rows[0])[1:4])
    places = len(rows[0].split("|")[5].strip()) - 2
    assert mean == pytest.approx(sum(pairs) / 3, abs=10**-places)
    assert (low, high) == pytest.approx((min(pairs), max(pairs)), abs=10**-places)
    # The report's folder starts with "_", so the results folder still reads as one dataset.
    assert len(results.read_results(directory)) > 0
    import pandas as pd

    assert len(pd.read_parquet(directory)) == len(results.read_results(directory))


@pytest.mark.parametrize("seeds", [(0,), (0, 1, 2)])
def test_every_printed_interval_holds_its_estimate(tmp_path, seeds):
    # One seed and no per-item scores: no interval can be computed, so none is printed (a NaN
    # bound once printed as 0.00).
    _write_synthetic(tmp_path, seeds=seeds, num_samples=(8,))
    text = write_report(tmp_path).read_text()
    number = r"([+-]?\d+(?:\.\d+)?)"
    found = re.findall(number + r" \[" + number + ", " + number + r"\]", text)
    for estimate, low, high in found:
        assert float(low) <= float(estimate) <= float(high), (estimate, low, high)
    if seeds == (0,):
        assert not found and "[0.00, 0.00]" not in text
    else:
        assert found


def test_matched_to_is_the_label_of_the_matched_entry():
    methods = (
        MethodSpec(name="mathneuro", label="mn"),
        MethodSpec(name="random", label="baseline", match="mn"),
    )
    matched = [c for c in planning.plan(_suite(methods=methods)) if c.method.match]
    assert {c.method_config for c in matched} == {'{"matched_to": "mn"}'}


def test_rankings_cut_each_method_once_with_the_references_first():
    suite = _suite()
    plan = planning.plan(suite)
    # The matched baseline's cells first, proportions descending: the reference still ranks
    # first (its cuts are what the baseline copies), each method at its proportions ascending.
    backwards = [c for c in reversed(plan) if c.method.match or c.proportion == 0.1]
    assert list(planning.rankings(suite, backwards).items()) == [
        ("mathneuro", [0.01, 0.05, 0.1]),
        ("random-matched", [0.01, 0.05, 0.1]),
    ]
    # A baseline's cells alone rank the method it copies too, at the baseline's proportions.
    alone = [c for c in plan if c.method.match and c.proportion == 0.05]
    assert planning.rankings(suite, alone) == {"mathneuro": [0.05], "random-matched": [0.05]}


def test_a_methods_own_controls_and_a_tasks_cells_shape_the_plan():
    own = MethodSpec(name="mathneuro", label="mathneuro-c", controls=("c",))
    matched = MethodSpec(name="random", label="random-matched", match="mathneuro-c")
    narrow = TaskSpec(name="race", proportions=(0.05,), factors=(0.0,))
    suite = _suite(methods=(own, matched), tasks=(TaskSpec(name="gsm8k"), narrow))
    plan = planning.plan(suite)
    # Both corpora entries give the same corpora to these methods: planned once, not twice.
    assert len(plan) == 2 * 3 * 2 * 3
    assert {c.corpora for c in plan} == {CorporaSpec(target="gsm8k", controls=("c",))}
    # A task restricted to some cells is evaluated (has a part file) in those cells only.
    for c in plan:
        expected = {"gsm8k", "race"} if (c.proportion, c.factor) == (0.05, 0.0) else {"gsm8k"}
        assert set(c.parts) == expected
    # Tasks name part files, not cells: adding one leaves every key (and finished part) as it was.
    alone = planning.plan(_suite(methods=(own, matched), tasks=(TaskSpec(name="gsm8k"),)))
    assert [c.key for c in alone] == [c.key for c in plan]
    assert all(c.parts["gsm8k"] == a.parts["gsm8k"] for c, a in zip(plan, alone, strict=True))


@pytest.mark.parametrize(
    "cells, named",
    [
        ({"proportions": (0.5,)}, "proportions = [0.5]"),
        ({"factors": (3.0,)}, "factors = [3.0]"),
        ({"proportions": (0.05,), "factors": (2.0,)}, "proportions = [0.05] and factors = [2.0]"),
    ],
)
def test_a_task_on_no_cell_of_the_grid_is_refused_in_one_line(cells, named):
    suite = _suite(tasks=(TaskSpec(name="gsm8k"), TaskSpec(name="race", **cells)))
    with pytest.raises(LocatorError) as error:
        planning.plan(suite)
    message = str(error.value)
    assert "\n" not in message and "tasks 'race'" in message and named in message
    assert (
        "match no cell of the grid (proportions [0.01, 0.05, 0.1], factors [0.0, 1.1])" in message
    )


@pytest.mark.parametrize(
    "change, named",
    [
        (
            {"methods": (MethodSpec(name="mathneuro", label="mathneuro", config=None),)},
            None,  # the same configuration, spelled out: grows
        ),
        (
            {"calibration": CalibrationOptions(max_length=64)},
            "calibration.max_length = null there, 64 now",
        ),
        ({"calibration": CalibrationOptions(pack=128)}, "calibration.pack = null there, 128 now"),
        ({"tasks": (TaskSpec(name="gsm8k", limit=6),)}, "task 'gsm8k' computed with limit = 5"),
        (
            {"tasks": (TaskSpec(name="gsm8k", limit=5, num_fewshot=3),)},
            "task 'gsm8k' computed with num_fewshot = null there, 3 now",
        ),
    ],
)
def test_a_label_or_task_names_one_configuration_in_a_folder(tmp_path, change, named):
    suite = _suite()
    results.check_manifest(tmp_path, planning.manifest(suite, planning.plan(suite), "s"))
    other = _suite(**change)
    manifest = planning.manifest(other, planning.plan(other), "s")
    if named is None:
        results.check_manifest(tmp_path, manifest)
        return
    with pytest.raises(LocatorError) as error:
        results.check_manifest(tmp_path, manifest)
    assert named in str(error.value) and "\n" not in str(error.value)


def test_a_changed_method_config_or_matched_reference_under_a_label_is_refused(tmp_path):
    from locator.localizer import localizer_class, make_config

    suite = _suite()
    results.check_manifest(tmp_path, planning.manifest(suite, planning.plan(suite), "s"))
    # A new label and a removed one grow the folder; the labels of both suites are kept.
    renamed = MethodSpec(name="wanda", label="wanda")
    grown = _suite(methods=(renamed,))
    results.check_manifest(tmp_path, planning.manifest(grown, planning.plan(grown), "s"))
    assert set(results.read_json(tmp_path / "_suite.json")["labels"]) == {
        "mathneuro",
        "random-matched",
        "wanda",
    }
    config = make_config(localizer_class("mathneuro"), {"mode": "published"})
    published = MethodSpec(name="mathneuro", label="mathneuro", config=config)
    changed = _suite(methods=(published, _suite().methods[1]))
    with pytest.raises(LocatorError) as error:
        results.check_manifest(tmp_path, planning.manifest(changed, planning.plan(changed), "s"))
    message = str(error.value)
    # mathneuro's own rows, or its matched baseline's (whose reference changed): either names
    # the label and the key.
    assert "config.mode" in message and "a new label" in message
    assert "rows labelled 'mathneuro'" in message or "rows labelled 'random-matched'" in message


def test_two_labels_for_one_configuration_are_refused():
    twin = MethodSpec(name="mathneuro", label="mathneuro-again")
    with pytest.raises(LocatorError, match="methods 'mathneuro' and 'mathneuro-again' compute"):
        planning.plan(_suite(methods=(*_suite().methods, twin)))
    # A baseline matched to each: refused as well (at the methods they match).
    other = MethodSpec(name="random", label="random-again", match="mathneuro-again")
    with pytest.raises(LocatorError, match="compute the same configuration"):
        planning.plan(_suite(methods=(*_suite().methods, twin, other)))


def test_a_renamed_label_for_a_configuration_already_in_the_folder_is_refused(tmp_path):
    suite = _suite()
    results.check_manifest(tmp_path, planning.manifest(suite, planning.plan(suite), "s"))
    # The same method with its own controls is another configuration: the folder grows.
    own = MethodSpec(name="mathneuro", label="mathneuro-c", controls=("c",))
    grown = _suite(methods=(own,))
    results.check_manifest(tmp_path, planning.manifest(grown, planning.plan(grown), "s"))
    # The same configuration under a new label would be skipped as finished: refused.
    renamed = _suite(methods=(MethodSpec(name="mathneuro", label="mn"),))
    with pytest.raises(LocatorError) as error:
        results.check_manifest(tmp_path, planning.manifest(renamed, planning.plan(renamed), "s"))
    assert "label 'mathneuro', the same configuration as label 'mn'" in str(error.value)
    assert "keep the label 'mathneuro'" in str(error.value)


@pytest.mark.parametrize(
    "manifest",
    [
        "[]",
        '{"schema": "locator.bench/2", "tasks": [["x"]]}',
        '{"schema": "locator.bench/2", "labels": 3}',
    ],
)
def test_a_manifest_not_written_by_locator_is_one_line(tmp_path, manifest):
    (tmp_path / "_suite.json").write_text(manifest)
    suite = _suite()
    with pytest.raises(LocatorError) as error:
        results.check_manifest(tmp_path, planning.manifest(suite, planning.plan(suite), "s"))
    assert "_suite.json" in str(error.value) and "--out" in str(error.value)
