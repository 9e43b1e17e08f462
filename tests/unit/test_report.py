"""The report on a synthetic results folder with a known answer: per-item scores under `_samples/`,
one method built to be specific (it breaks skill items and leaves the control alone), one built
not to be (it breaks the skill and the control), and the matched random baselines of both."""

import json
import math
import re
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from locator.bench import metrics, results
from locator.bench.overlap import expected_jaccard
from locator.bench.report import write_report
from locator.bench.specificity import Bootstrap, Samples, changes, read_samples, skill_task
from locator.errors import LocatorError
from locator.localization import Localization, selections_jaccard

SKILL, CONTROL = "toy-arithmetic", "toy-language"
ITEMS = 80
SEEDS = (0, 1, 2)
PROPORTIONS = (0.02, 0.2)
SAMPLES = (8, 32)
METHODS = {  # label -> (matched_to, share of correct skill items broken, control loss added)
    "specific": (None, 0.7, 0.0),
    "blunt": (None, 0.7, 0.4),
    "random-matched-specific": ("specific", 0.03, 0.0),
    "random-matched-blunt": ("blunt", 0.03, 0.0),
}
SAMPLE_SCHEMA = pa.schema(
    [
        ("config_hash", pa.string()),
        ("model", pa.string()),
        ("dtype", pa.string()),
        ("task", pa.string()),
        ("metric", pa.string()),
        ("item", pa.int64()),
        ("value", pa.float64()),
        ("weight", pa.float64()),
    ]
)


def _write_samples(path, config, scores):
    rows = [
        {
            "config_hash": config,
            "model": "org/tiny-model",
            "dtype": "float32",
            "task": task,
            "metric": metric,
            "item": item,
            "value": float(value),
            "weight": float(weight),
        }
        for (task, metric), (values, weights) in scores.items()
        for item, (value, weight) in enumerate(zip(values, weights, strict=True))
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA), path)


def _weighted(values, weights):
    return float(np.sum(values * weights) / np.sum(weights))


def _selection(label, proportion, seed, num_samples):
    """A deliberate method's selection is the same for every seed and sample count; a random
    one's positions follow its seed alone, as the runner's random baselines do."""
    random_like = label.startswith("random")
    generator = torch.Generator().manual_seed(seed if random_like else 7)
    masks = {}
    for layer in range(3):
        for kind in ("self_attn.q_proj", "mlp.down_proj"):
            scores = torch.rand(16, 12, generator=generator)
            masks[f"model.layers.{layer}.{kind}.weight"] = scores < proportion
    return Localization.from_masks(masks, method=label, proportion=proportion, seed=seed)


def _write_folder(directory):
    rng = np.random.default_rng(0)
    skill_base = (rng.random(ITEMS) < 0.8).astype(float)
    control_base = 2.7 + 0.3 * rng.standard_normal(ITEMS)
    tokens = rng.integers(5, 30, ITEMS).astype(float)
    ones = np.ones(ITEMS)
    baseline = {
        (SKILL, "exact_match"): (skill_base, ones),
        (CONTROL, "loss"): (control_base, tokens),
    }
    _write_samples(directory / "_samples" / "baseline-b0.parquet", "baseline", baseline)
    values = {}
    for num_samples in SAMPLES:
        for seed in SEEDS:
            for label, (matched_to, broken, harm) in METHODS.items():
                config = {"seed_or_so": 1} | ({"matched_to": matched_to} if matched_to else {})
                for proportion in PROPORTIONS:
                    key = f"{label}-{num_samples}-{seed}-{proportion}"
                    draw = np.random.default_rng(int(results.stable_hash(key, 8), 16))
                    strength = broken * (1 if proportion == 0.2 else 0.5)
                    skill = skill_base * (draw.random(ITEMS) >= strength)
                    control = control_base + harm + 0.002 * draw.standard_normal(ITEMS)
                    scores = {
                        (SKILL, "exact_match"): (skill, ones),
                        (CONTROL, "loss"): (control, tokens),
                    }
                    config_hash = results.stable_hash(key)
                    _write_samples(
                        directory / "_samples" / f"{config_hash}.parquet", config_hash, scores
                    )
                    name = results.stable_hash([label, proportion, seed, num_samples])
                    selection = f"_selections/{name}.safetensors"
                    localization = _selection(label, proportion, seed, num_samples)
                    localization.save(directory / selection)
                    rows = []
                    for (task, metric), (item_values, weights) in scores.items():
                        base_values, base_weights = baseline[(task, metric)]
                        rows.append(
                            {
                                "suite": "known-answer",
                                "model": "org/tiny-model",
                                "dtype": "float32",
                                "method": "random" if matched_to else label,
                                "label": label,
                                "method_config": json.dumps(config, sort_keys=True),
                                "target": SKILL,
                                "controls": CONTROL,
                                "proportion": proportion,
                                "factor": 0.0,
                                "seed": seed,
                                "num_samples": num_samples,
                                "task": task,
                                "limit": ITEMS,
                                "metric": metric,
                                "value": _weighted(item_values, weights),
                                "baseline_value": _weighted(base_values, base_weights),
                                "higher_is_better": metric == "exact_match",
                                "selected_count": localization.count(),
                                "selected_fraction": localization.fraction(),
                                "scored_count": localization.numel(),
                                "selection": selection,
                                "statistics_seconds": 0.0,
                                "localization_seconds": 0.0,
                                "evaluation_seconds": 0.0,
                                "config_hash": config_hash,
                                **results.provenance(),
                                "created_at": datetime.now(timezone.utc),
                            }
                        )
                        values[(label, num_samples, seed, proportion, task)] = rows[-1]["value"]
                    unknown = {"model_revision": None, "model_fingerprint": None}
                    parts = [results.Row(**row, **unknown) for row in rows]
                    results.write_part(directory, config_hash, parts)
    return values


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    directory = tmp_path_factory.mktemp("known-answer")
    _write_folder(directory)
    return directory


@pytest.fixture(scope="module")
def report(folder):
    return write_report(folder)


def _verdicts(text):
    """(method, K) -> (removes beyond matched random, specific), per (samples) section in order."""
    found = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 6 and cells[2].startswith("random-matched"):
            found.append((cells[0], cells[1], cells[3], cells[5]))
    return found


def test_the_report_classifies_the_specific_and_the_blunt_method(report):
    verdicts = _verdicts(report.read_text())
    assert len(verdicts) == len(SAMPLES) * 2 * len(PROPORTIONS)  # per sample count, method, K
    for label, _, removes, specific in verdicts:
        assert removes == "yes", (label, removes)
        assert specific == ("yes" if label == "specific" else "no (harms a control)")


def test_changes_agree_with_the_parquet_rows(folder):
    rows = [r for r in results.read_results(folder).to_pylist() if r["num_samples"] == 32]
    raw = pq.read_table(
        folder,
        columns=["label", "num_samples", "seed", "proportion", "task", "value", "baseline_value"],
    ).to_pylist()
    found = changes(rows, read_samples(folder), SKILL, Bootstrap(replicates=400))
    for change in found:
        mine = [
            r
            for r in raw
            if (r["label"], r["num_samples"], r["proportion"], r["task"])
            == (change.label, 32, change.proportion, change.task)
        ]
        assert len(mine) == len(SEEDS)
        expected = sum(r["value"] - r["baseline_value"] for r in mine) / len(SEEDS)
        assert change.unedited.mean == pytest.approx(expected, abs=1e-12)
        assert change.unedited.low <= change.unedited.mean <= change.unedited.high
        assert change.unedited.items == ITEMS and change.unedited.seeds == len(SEEDS)
        if change.matched is not None:
            theirs = {
                r["seed"]: r["value"]
                for r in raw
                if (r["label"], r["num_samples"], r["proportion"], r["task"])
                == (change.matched_label, 32, change.proportion, change.task)
            }
            expected = sum(r["value"] - theirs[r["seed"]] for r in mine) / len(SEEDS)
            assert change.matched.mean == pytest.approx(expected, abs=1e-12)
        assert change.role == ("skill" if change.task == SKILL else "control")
        assert change.higher is (change.task == SKILL)


def test_the_paired_bootstrap_interval_has_the_width_the_items_give(folder):
    """Against a plain computation: the seed-averaged per-item difference's standard error."""
    rows = [r for r in results.read_results(folder).to_pylist() if r["num_samples"] == 8]
    samples = read_samples(folder)
    found = changes(rows, samples, SKILL, Bootstrap())
    chosen = next(c for c in found if (c.label, c.proportion, c.task) == ("specific", 0.2, SKILL))
    hashes = {
        r["seed"]: r["config_hash"]
        for r in rows
        if (r["label"], r["proportion"], r["task"]) == ("specific", 0.2, SKILL)
    }
    base = samples.get(("baseline", "org/tiny-model", "float32"), SKILL, "exact_match").values
    per_item = np.mean(
        [samples.get((h,), SKILL, "exact_match").values - base for h in hashes.values()], axis=0
    )
    half = 1.96 * per_item.std(ddof=1) / math.sqrt(ITEMS)
    width = (chosen.unedited.high - chosen.unedited.low) / 2
    assert 0.7 * half < width < 2.0 * half


def test_tables_show_the_rows_numbers_with_common_decimals(report, folder):
    text = report.read_text()
    # The skill table of 32 samples: the mean change of `specific` at K = 0.2, as in the rows.
    rows = results.read_results(folder).to_pylist()
    mine = [
        r
        for r in rows
        if (r["label"], r["num_samples"], r["proportion"], r["task"])
        == ("specific", 32, 0.2, SKILL)
    ]
    change = sum(r["value"] - r["baseline_value"] for r in mine) / len(mine)
    lines = [line for line in text.splitlines() if line.startswith("| specific | 0.2 |")]
    numbers = [re.findall(r"[-+]?\d+\.\d+", line) for line in lines]
    assert any(f"{change:+.3f}" in found or f"{change:.3f}" in found for found in numbers)
    assert "e-0" not in text and "e+0" not in text
    # specificity.csv holds the same numbers at full precision.
    import csv

    with open(report.parent / "specificity.csv", newline="") as handle:
        records = list(csv.DictReader(handle))
    record = next(
        r
        for r in records
        if (r["label"], r["num_samples"], r["proportion"], r["task"])
        == ("specific", "32", "0.2", SKILL)
    )
    assert float(record["change"]) == pytest.approx(change, abs=1e-12)
    assert record["beyond_matched"] == "yes" and record["items"] == str(ITEMS)


def test_consistency_sits_next_to_the_random_expectation(report, folder):
    text = report.read_text()
    first = _selection("random-matched-specific", 0.2, 0, 8)
    second = _selection("random-matched-specific", 0.2, 1, 8)
    # Independently: per matrix a * b / n expected in common.
    common = sum(
        first.selections[n].count * second.selections[n].count / first.selections[n].numel
        for n in first.selections
    )
    expected = common / (first.count() + second.count() - common)
    assert expected_jaccard(first, second) == pytest.approx(expected)
    assert "random expectation" in text and "no more than chance" in text
    assert "positions follow the seed" in text  # across sample counts, for the random ones


def test_variants_of_one_method_are_compared_pair_by_pair(report):
    """The two matched random baselines are variants of method "random" (their labels differ);
    at one seed their positions are the same draw, so every pair overlaps fully."""
    text = report.read_text()
    section = text.split("Overlap between variants of one method")[1].split("###")[0]
    pairs = [
        line
        for line in section.splitlines()
        if "random-matched-blunt / random-matched-specific" in line
    ]
    assert len(pairs) == len(PROPORTIONS) * len(SAMPLES)
    assert all("| 1.0" in line or "| 1 " in line for line in pairs), pairs
    assert all(f"| {len(SEEDS)} |" in line for line in pairs)


def test_jaccard_counts_a_parameter_only_one_side_scores_as_empty_in_the_other():
    shared = torch.tensor([[True, False], [True, True]])
    head = torch.tensor([[True, True], [False, False]])
    faithful = Localization.from_masks({"a.weight": shared}, method="m", proportion=0.5)
    published = Localization.from_masks(
        {"a.weight": shared & torch.tensor([[True, True], [False, True]]), "head.weight": head},
        method="m",
        proportion=0.5,
    )
    jaccard = selections_jaccard
    assert jaccard(faithful.selections, published.selections) == pytest.approx(2 / (3 + 2))
    assert jaccard(published.selections, faithful.selections) == pytest.approx(2 / (3 + 2))


def test_figures_are_png_and_svg_and_the_html_is_self_contained(report):
    from PIL import Image

    out = report.parent
    pngs = sorted(out.glob("*.png"))
    names = {p.name.split("-")[0] for p in pngs}
    assert names == {"effect", "plane", "consistency", "placement"}
    for png in pngs:
        assert png.with_suffix(".svg").read_text().lstrip().startswith("<?xml")
        with Image.open(png) as image:
            assert image.format == "PNG" and min(image.size) > 300
    page = (out / "report.html").read_text()
    assert page.count("<img") == len(pngs)
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "href=" not in page and "<script" not in page


def test_skill_task_inference_and_explicit_choice():
    assert skill_task("toy-arithmetic", ["toy-language", "toy-arithmetic"]) == "toy-arithmetic"
    assert skill_task("gsm8k", ["gsm8k_cot", "race"]) == "gsm8k_cot"  # the dataset's task
    assert skill_task("no-such-dataset", ["a", "b"]) is None
    assert skill_task("x", ["a", "b"], "b") == "b"
    with pytest.raises(LocatorError, match="not a task of these results; choose one of: a, b"):
        skill_task("x", ["a", "b"], "c")


def test_labels_directions_and_columns():
    higher = metrics.higher_is_better("nll_per_token")
    assert metrics.measure_label("gsm8k_nll", "nll_per_token", higher) == (
        "GSM8K solution NLL (nats/token, lower is better)"
    )
    assert metrics.higher_is_better("exact_match,strict-match") is True
    assert metrics.higher_is_better("word_perplexity") is False
    assert metrics.higher_is_better("custom", declared=False) is False
    assert metrics.higher_is_better("custom") is None
    assert metrics.model_label("meta-llama/Llama-3.2-1B-Instruct") == "Llama-3.2-1B-Instruct"
    assert metrics.model_label("../locator/toy/checkpoint") == "toy"
    assert metrics.column([2.7208, 2.7215, 2.9]) == ["2.7208", "2.7215", "2.9000"]
    assert metrics.column([0.00001, 0.5]) == ["0.00", "0.50"]  # no e-notation
    assert metrics.column([-0.0001, 0.25], sign=True)[1] == "+0.25"


def test_without_per_item_scores_the_interval_is_a_t_interval_over_seeds(folder):
    """Older folders keep no `_samples`: intervals come from the seeds alone."""
    import statistics

    rows = [r for r in results.read_results(folder).to_pylist() if r["num_samples"] == 8]
    found = changes(rows, Samples({}), SKILL, Bootstrap())
    chosen = next(c for c in found if (c.label, c.proportion, c.task) == ("blunt", 0.02, CONTROL))
    differences = [
        r["value"] - r["baseline_value"]
        for r in rows
        if (r["label"], r["proportion"], r["task"]) == ("blunt", 0.02, CONTROL)
    ]
    half = 4.303 * statistics.stdev(differences) / math.sqrt(3)  # t(0.975, 2 df)
    assert chosen.unedited.items == 0 and chosen.unedited.seeds == 3
    assert chosen.unedited.low == pytest.approx(statistics.fmean(differences) - half)
    assert chosen.unedited.high == pytest.approx(statistics.fmean(differences) + half)
    assert chosen.beyond_matched() == "yes"  # 0.4 nats more than random: clear from 3 seeds


def test_a_group_row_joins_the_items_of_its_subtasks():
    """lm-eval keeps a group's items (mmlu) under its subtasks; their doc ids repeat."""
    from locator.bench.specificity import ItemScores

    def scores(values):
        return ItemScores(
            items=np.arange(len(values)), values=np.array(values, float), weights=np.ones(3)
        )

    samples = Samples(
        {
            ("c", "mmlu_anatomy", "acc"): scores([1, 0, 1]),
            ("c", "mmlu_law", "acc"): scores([0, 0, 1]),
            ("c", "race", "acc"): scores([1, 1, 1]),
        }
    )
    joined = samples.get(("c",), "mmlu", "acc")
    assert len(set(joined.items.tolist())) == 6 and joined.mean() == pytest.approx(0.5)
    assert samples.get(("c",), "race", "acc").mean() == 1.0
    assert samples.get(("c",), "mmlu", "acc_norm") is None
    assert samples.get(("other",), "mmlu", "acc") is None
