"""The skill x skill matrix and the leaderboard (locator.bench.matrix) on synthetic rows whose
cells, dominance and scores are computed here by hand."""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from locator.bench import matrix
from locator.bench.document import Document
from locator.bench.overlap import Selections
from locator.bench.specificity import Bootstrap, ItemScores, Samples
from locator.bench.suite import SkillSpec
from locator.errors import LocatorError
from locator.localization import Localization, Selection

torch.set_num_threads(1)

SKILLS = {
    "alpha": SkillSpec(name="alpha", corpus="corpus-a", task="nll:corpus-a", metric="loss"),
    "beta": SkillSpec(name="beta", corpus="corpus-b", task="task-b", metric="acc"),
}
UNEDITED = {"alpha": 2.0, "beta": 0.5}  # loss (lower is better), accuracy (higher is better)
SEEDS = (0, 1, 2)
PROPORTIONS = {0.01: 1.0, 0.1: 2.0}  # proportion -> multiplier of every excess harm
RANDOM = {  # the random baseline's value per measured skill and seed
    "alpha": {0: 2.2, 1: 2.4, 2: 3.0},
    "beta": {0: 0.45, 1: 0.45, 2: 0.40},
}
# Excess harm (relative to the unedited value, beyond random) per (removed, measured) and seed.
SPECIFIC = {
    ("alpha", "alpha"): [0.4, 0.5, 0.7],
    ("alpha", "beta"): [0.0, 0.02, -0.02],
    ("beta", "alpha"): [0.01, 0.0, 0.0],
    ("beta", "beta"): [0.1, 0.2, 0.3],
}
BLUNT = {pair: [0.5, 0.5, 0.5] for pair in SPECIFIC}


def row(
    label: str,
    removed: str,
    measured: str,
    proportion: float,
    seed: int,
    value: float,
    **extra: Any,
) -> dict[str, Any]:
    """One results row with the columns `matrix.analyze` reads."""
    skill = SKILLS[measured]
    config = {"matched_to": extra.pop("matched_to")} if "matched_to" in extra else {}
    return {
        "model": "tiny",
        "dtype": "float32",
        "method": label.split("-")[0],
        "label": label,
        "method_config": json.dumps(config),
        "target": SKILLS[removed].corpus,
        "controls": ",".join(s.corpus for n, s in SKILLS.items() if n != removed),
        "proportion": proportion,
        "factor": 0.0,
        "seed": seed,
        "num_samples": 8,
        "task": skill.task,
        "metric": skill.metric,
        "value": value,
        "baseline_value": UNEDITED[measured],
        "higher_is_better": skill.metric == "acc",
        "selected_count": 10,
        "selected_fraction": proportion,
        "selection": f"_selections/{label}-{removed}-{proportion}-{seed}.safetensors",
        "statistics_seconds": extra.pop("statistics_seconds", 1.0),
        "localization_seconds": 0.5,
        "config_hash": f"{label}-{removed}-{proportion}-{seed}",
        **extra,
    }


def edited_value(measured: str, random_value: float, excess: float) -> float:
    """The method's value whose harm beyond `random_value` is `excess` (relative)."""
    sign = -1.0 if measured == "beta" else 1.0  # harm lowers an accuracy
    return random_value + sign * excess * UNEDITED[measured]


def rows() -> list[dict[str, Any]]:
    """A specific method, a blunt one (each with a matched random baseline over three seeds),
    a method without a baseline, and a rescaling row (factor 2) the matrix must ignore."""
    found = []
    for proportion, scale in PROPORTIONS.items():
        for removed, measured in SPECIFIC:
            for seed in SEEDS:
                base = RANDOM[measured][seed]
                for label, table in (("specific", SPECIFIC), ("blunt", BLUNT)):
                    excess = table[(removed, measured)][seed] * scale
                    found.append(
                        row(
                            label,
                            removed,
                            measured,
                            proportion,
                            seed,
                            edited_value(measured, base, excess),
                            statistics_seconds=3.0 if label == "blunt" else 1.0,
                        )
                    )
                    found.append(
                        row(
                            f"random-{label}",
                            removed,
                            measured,
                            proportion,
                            seed,
                            base,
                            matched_to=label,
                        )
                    )
                found.append(row("lonely", removed, measured, proportion, seed, 9.0))
    scaled = dict(found[0], factor=2.0, value=100.0)
    return [*found, scaled]


def analyzed(**kwargs: Any) -> matrix.MatrixResults:
    return matrix.analyze(
        rows(), SKILLS, Samples({}), bootstrap=Bootstrap(replicates=300), **kwargs
    )


def test_cells_are_the_median_excess_over_seeds_with_intervals_over_seeds() -> None:
    found = {(m.label, m.proportion): m for m in analyzed().matrices}
    assert set(found) == {
        (label, p) for label in ("specific", "blunt", "lonely") for p in PROPORTIONS
    }
    for proportion, scale in PROPORTIONS.items():
        cells = found[("specific", proportion)].cells
        for pair, excesses in SPECIFIC.items():
            per_seed = [e * scale for e in excesses]
            cell = cells[pair]
            assert cell.value == pytest.approx(statistics.median(per_seed))
            # the median of a resampling of the seeds lies within them
            assert min(per_seed) - 1e-12 <= cell.low <= cell.value <= cell.high
            assert cell.high <= max(per_seed) + 1e-12
        assert found[("blunt", proportion)].cells[("alpha", "beta")].value == pytest.approx(
            0.5 * scale
        )
        specific = found[("specific", proportion)]
        assert specific.matched == "random-specific" and specific.draws == 3
        assert specific.fraction == pytest.approx(proportion)
        assert not specific.items


def test_dominance_by_hand() -> None:
    found = {(m.label, m.proportion): m for m in analyzed().matrices}
    diagonal = (0.5 + 0.2) / 2
    off = (0.0 + 0.0) / 2
    dominance = found[("specific", 0.01)].dominance
    assert dominance is not None and dominance.value == pytest.approx(diagonal - off)
    assert dominance.low <= dominance.value <= dominance.high
    blunt = found[("blunt", 0.1)].dominance
    assert blunt is not None and blunt.value == pytest.approx(0.0)


def test_scores_by_hand_and_ranking() -> None:
    standings = {s.label: s for s in analyzed().standings}
    # G = own - 2 x mean(others) at fractions 0.01 and 0.1 (x2): over [0.01, 0.1] on a log axis
    # the mean height of a line is the mean of its ends.
    g = {"alpha": 0.5 - 2 * 0.0, "beta": 0.2 - 2 * 0.0}
    expected = statistics.fmean((v + 2 * v) / 2 for v in g.values())
    specific = standings["specific"].score
    assert specific is not None and specific.value == pytest.approx(expected)
    assert specific.low <= specific.value <= specific.high
    blunt = standings["blunt"].score
    assert blunt is not None and blunt.value == pytest.approx((-0.5 - 1.0) / 2)
    assert [s.label for s in analyzed().standings] == ["specific", "blunt", "lonely"]
    assert standings["specific"].low_fraction == 0.01
    assert standings["specific"].high_fraction == pytest.approx(0.1)
    assert standings["blunt"].statistics_seconds == 3.0
    assert standings["specific"].localization_seconds == 0.5
    assert standings["specific"].note == ""


def test_a_method_without_baseline_is_listed_as_such() -> None:
    results = analyzed()
    lonely = [m for m in results.matrices if m.label == "lonely"]
    assert lonely and all(m.matched is None and not m.cells and m.dominance is None for m in lonely)
    standing = next(s for s in results.standings if s.label == "lonely")
    assert standing.score is None and standing.note == "no matched random baseline"
    records = matrix.leaderboard_records(results)
    assert records[-1]["method"] == "lonely" and records[-1]["score"] == ""
    assert records[-1]["rank"] == ""
    # the random baselines themselves are not ranked
    assert {r["method"] for r in records} == {"specific", "blunt", "lonely"}


def test_few_draws_get_a_note_and_one_draw_no_interval() -> None:
    one = [r for r in rows() if r["seed"] == 0]
    results = matrix.analyze(one, SKILLS, Samples({}), bootstrap=Bootstrap(replicates=50))
    standing = next(s for s in results.standings if s.label == "specific")
    assert standing.draws == 1 and standing.note == "baseline has 1 draw (< 3)"
    assert standing.score is not None and math.isnan(standing.score.low)
    cell = next(m for m in results.matrices if m.label == "specific").cells[("alpha", "alpha")]
    assert cell.value == pytest.approx(0.4) and math.isnan(cell.low) and math.isnan(cell.high)
    assert matrix.interval(cell) == "+40.00%"  # no made-up interval


def item_samples(found: list[dict[str, Any]], items: int, seed: int = 7) -> Samples:
    """Per-item scores for every row whose weighted mean is the row's value."""
    generator = np.random.default_rng(seed)
    scores = {}
    for r in found:
        noise = generator.normal(0, 0.3, items)
        values = r["value"] + noise - noise.mean()
        scores[(r["config_hash"], r["task"], r["metric"])] = ItemScores(
            items=np.arange(items), values=values, weights=np.ones(items)
        )
    return Samples(scores)


def test_items_give_the_paired_bootstrap_of_specificity() -> None:
    """With one seed and per-item scores, a cell's interval is specificity's paired bootstrap
    interval of (method - random), in relative harm."""
    one = [
        r
        for r in rows()
        if r["seed"] == 0
        and r["proportion"] == 0.01
        and r["factor"] == 0
        and r["label"] in ("specific", "random-specific")
    ]
    samples = item_samples(one, items=40)
    results = matrix.analyze(one, SKILLS, samples, bootstrap=Bootstrap(replicates=400))
    (found,) = results.matrices
    assert found.items
    reference = Bootstrap(replicates=400)
    for (removed, measured), cell in found.cells.items():

        def side(label: str, removed: str = removed, measured: str = measured) -> Any:
            (r,) = [
                r
                for r in one
                if r["label"] == label
                and r["target"] == SKILLS[removed].corpus
                and r["task"] == SKILLS[measured].task
            ]
            return {0: (r["value"], samples.get((r["config_hash"],), r["task"], r["metric"]))}

        change = reference.change(side("specific"), side("random-specific"))
        assert change.items == 40
        scale = UNEDITED[measured]
        low, high = (
            (-change.high / scale, -change.low / scale)
            if measured == "beta"
            else (change.low / scale, change.high / scale)
        )
        assert cell.low == pytest.approx(low, rel=1e-9, abs=1e-12)
        assert cell.high == pytest.approx(high, rel=1e-9, abs=1e-12)
        assert cell.low < cell.value < cell.high


def test_items_and_seeds_together() -> None:
    found = [r for r in rows() if r["factor"] == 0]
    results = matrix.analyze(
        found, SKILLS, item_samples(found, items=30), bootstrap=Bootstrap(replicates=300)
    )
    specific = next(m for m in results.matrices if m.label == "specific")
    assert specific.items
    for pair, excesses in SPECIFIC.items():
        cell = specific.cells[pair]
        assert cell.value == pytest.approx(statistics.median(excesses))
        assert cell.low <= cell.value <= cell.high
        assert cell.high - cell.low > 0
    score = next(s for s in results.standings if s.label == "specific").score
    assert score is not None and score.low <= score.value <= score.high


def save_selections(directory: Path) -> None:
    """Selection files: per seed, alpha's set is entries 0-3, beta's 2-5 (Jaccard 2/6)."""
    for r in rows():
        path = directory / r["selection"]
        if path.exists():
            continue
        start = 0 if r["target"] == "corpus-a" else 2
        selection = Selection.from_indices(torch.arange(start, start + 4), (4, 4))
        Localization(
            selections={"w": selection}, method=r["method"], proportion=r["proportion"]
        ).save(path)


def test_jaccard_overlap_of_the_skills_sets(tmp_path: Path) -> None:
    (tmp_path / "_selections").mkdir()
    save_selections(tmp_path)
    results = analyzed(load=Selections(tmp_path))
    found = next(m for m in results.matrices if m.label == "specific")
    assert found.jaccard[("alpha", "alpha")] == 1.0
    assert found.jaccard[("alpha", "beta")] == pytest.approx(2 / 6)
    assert found.jaccard[("beta", "alpha")] == pytest.approx(2 / 6)


def test_csvs_read_back(tmp_path: Path) -> None:
    results = analyzed()
    board, cells = matrix.write_csvs(tmp_path, results)
    with board.open() as handle:
        read = list(csv.DictReader(handle))
    assert [r["method"] for r in read] == ["specific", "blunt", "lonely"]
    assert [r["rank"] for r in read] == ["1", "2", ""]
    assert float(read[0]["score"]) == pytest.approx(results.standings[0].score.value)  # type: ignore[union-attr]
    assert read[2]["note"] == "no matched random baseline"
    with cells.open() as handle:
        read = list(csv.DictReader(handle))
    assert len(read) == 3 * 2 * 4  # methods x proportions x cells
    first = next(
        r
        for r in read
        if r["method"] == "specific"
        and r["proportion"] == "0.01"
        and r["removed_skill"] == "alpha"
        and r["measured_skill"] == "alpha"
    )
    assert float(first["value"]) == pytest.approx(0.5)
    assert float(first["low"]) <= 0.5 <= float(first["high"])
    assert all(r["value"] == "" for r in read if r["method"] == "lonely")


def test_sections_print_intervals_around_their_estimates(tmp_path: Path) -> None:
    document = Document(tmp_path)
    results = analyzed()
    matrix.leaderboard_section(document, results)
    matrix.matrix_section(document, results)
    text = document.markdown()
    assert text.index("## Leaderboard") < text.index("## Skill x skill matrix")
    assert "no matched random baseline" in text.split("## Skill x skill matrix")[0]
    assert "so without a matrix there: `lonely`." in text
    assert "### lonely" not in text  # nothing to show: no matrix, no selection files
    number = r"([+-]\d+\.\d+)(%?)"
    printed = re.findall(rf"{number} \[{number}, {number}\]", text)
    assert len(printed) > 10
    for value, _, low, _, high, _ in printed:
        assert float(low) <= float(value) <= float(high)
    assert len(list(tmp_path.glob("matrix-*.png"))) == 2 * 2
    assert "<h2>Leaderboard</h2>" in document.html("report")


def test_a_set_whose_own_skill_was_not_measured_gets_no_score() -> None:
    """Without the diagonal there is neither a score nor a dominance, and the report says so."""
    found = [
        r
        for r in rows()
        if not (r["label"] == "specific" and r["task"] == "task-b" and r["target"] == "corpus-b")
    ]
    results = matrix.analyze(found, SKILLS, Samples({}), bootstrap=Bootstrap(replicates=50))
    standing = next(s for s in results.standings if s.label == "specific")
    assert standing.score is None
    assert standing.note == "a set's own skill was not measured: no score"
    specific = next(m for m in results.matrices if m.label == "specific")
    assert specific.dominance is None and ("beta", "beta") not in specific.cells
    assert specific.cells[("beta", "alpha")].value == 0.0  # median of 0.01, 0, 0


@pytest.mark.parametrize(
    ("skills", "message"),
    [
        ({"alpha": SKILLS["alpha"]}, "at least two skills"),
        ({"alpha": SKILLS["alpha"], "gamma": SKILLS["alpha"]}, "share one corpus"),
        (
            {
                "alpha": SkillSpec(name="alpha", corpus="other", task="nll:other", metric="loss"),
                "beta": SkillSpec(name="beta", corpus="corpus-b", task="task-b", metric="f1"),
            },
            "no pruning rows of these results belong to the matrix",
        ),
    ],
)
def test_bad_skills(skills: dict[str, SkillSpec], message: str) -> None:
    with pytest.raises(LocatorError, match=message):
        matrix.analyze(rows(), skills, Samples({}))


def test_matched_random_against_random_scores_about_zero() -> None:
    """A "method" that is itself a random draw: its excess is a difference of two random draws,
    so its score is about 0 and its interval holds 0."""
    generator = np.random.default_rng(3)
    found, scores = [], {}
    for label in ("draw", "random-draw"):
        for proportion in PROPORTIONS:
            for seed in range(4):
                for removed in SKILLS:
                    for measured in SKILLS:
                        extra = {"matched_to": "draw"} if label == "random-draw" else {}
                        values = generator.normal(0.45 if measured == "beta" else 2.5, 0.2, 30)
                        r = row(label, removed, measured, proportion, seed, values.mean(), **extra)
                        r["config_hash"] += f"-{measured}"
                        scores[(r["config_hash"], r["task"], r["metric"])] = ItemScores(
                            items=np.arange(30), values=values, weights=np.ones(30)
                        )
                        found.append(r)
    results = matrix.analyze(found, SKILLS, Samples(scores), bootstrap=Bootstrap(replicates=300))
    (standing,) = results.standings
    assert standing.score is not None
    assert standing.score.low < 0 < standing.score.high
    assert abs(standing.score.value) < 0.1


def test_a_seed_without_a_value_is_no_draw() -> None:
    found = rows()
    for r in found:
        if (r["label"], r["seed"], r["target"], r["task"]) == (
            "random-specific",
            2,
            "corpus-a",
            "nll:corpus-a",
        ):
            r["value"] = None
    results = matrix.analyze(found, SKILLS, Samples({}), bootstrap=Bootstrap(replicates=50))
    specific = next(m for m in results.matrices if m.label == "specific")
    assert specific.cells[("alpha", "alpha")].value == pytest.approx((0.4 + 0.5) / 2)
    assert specific.draws == 2  # the fewest draws of any cell
