"""The ranking score and diagonal dominance (`locator.bench.score`) on a synthetic world with a
known true set per skill: matched random scores about 0, the oracle high, a method that
destroys every skill below 0, a half of the true set ("missing") or the true set padded with as
many random entries ("excessive") lower; areas against a brute-force integral."""

import math

import numpy as np
import pytest

from locator import LocatorError
from locator.bench.score import (
    Curve,
    Effect,
    curves,
    diagonal_dominance,
    dominance_interval,
    fraction_range,
    relative_harm,
    score,
    scores,
)

SIZE = 20_000
SKILLS = ("A", "B", "C")
TRUE = 200
PROPORTIONS = (0.0025, 0.005, 0.01, 0.02, 0.04)
SEEDS = range(5)
NOISE = 0.002


def _world():
    """Per-entry harm to each skill: each skill's true set (disjoint, 1% each) carries its
    skill; a hub set harms every skill alike; every entry harms every skill a little."""
    harm = np.full((SIZE, len(SKILLS)), 0.2 / SIZE)
    order = np.random.default_rng(0).permutation(SIZE)
    true = {s: order[i * TRUE : (i + 1) * TRUE] for i, s in enumerate(SKILLS)}
    hub = order[len(SKILLS) * TRUE : (len(SKILLS) + 1) * TRUE]
    for i, s in enumerate(SKILLS):
        harm[true[s], i] += 1 / TRUE
    harm[hub, :] += 1 / TRUE
    return harm, true, hub


HARM, TRUE_SETS, HUB = _world()


def _first(preferred, count, rng, exclude=()):
    """`count` entries: `preferred` (shuffled) first, then the rest at random; never `exclude`."""
    preferred = rng.permutation(preferred)
    banned = np.zeros(SIZE, bool)
    banned[preferred] = True
    banned[list(exclude)] = True
    rest = rng.permutation(np.flatnonzero(~banned))
    return np.concatenate([preferred, rest])[:count]


def _select(method, skill, proportion, seed):
    rng = np.random.default_rng([seed, SKILLS.index(skill), int(proportion * 1e6)])
    count = round(proportion * SIZE)
    true = TRUE_SETS[skill]
    if method == "oracle":
        return _first(true, count, rng)
    if method == "random":
        return rng.choice(SIZE, count, replace=False)
    if method == "destroyer":
        return _first(HUB, count, rng)
    if method == "missing":
        return _first(true[: TRUE // 2], count, rng, exclude=true[TRUE // 2 :])
    if method == "excessive":
        chosen = _first(true, count, rng)
        others = np.setdiff1d(np.arange(SIZE), chosen)
        return np.concatenate([chosen, rng.choice(others, count, replace=False)])
    raise AssertionError(method)


def _harm(selection, rng):
    return HARM[selection].sum(axis=0) + rng.normal(0, NOISE, len(SKILLS))


def _effects(methods):
    effects = []
    for method in methods:
        for skill in SKILLS:
            for proportion in PROPORTIONS:
                for seed in SEEDS:
                    rng = np.random.default_rng([seed, 7, SKILLS.index(skill)])
                    chosen = _select(method, skill, proportion, seed)
                    matched = rng.choice(SIZE, len(chosen), replace=False)  # same size
                    excess = _harm(chosen, rng) - _harm(matched, rng)
                    for evaluated, value in zip(SKILLS, excess, strict=True):
                        effects.append(
                            Effect(
                                method=method, removed=skill, evaluated=evaluated,
                                proportion=proportion, seed=seed,
                                fraction=len(chosen) / SIZE, excess=float(value),
                            )
                        )  # fmt: skip
    return effects


@pytest.fixture(scope="module")
def ranked():
    effects = _effects(["oracle", "random", "destroyer", "missing", "excessive"])
    return effects, scores(effects, replicates=200)


def test_matched_random_scores_about_zero_and_the_oracle_high(ranked):
    _, found = ranked
    assert found["oracle"].value > 0.5
    assert abs(found["random"].value) < 0.02 * found["oracle"].value
    assert found["random"].low < 0 < found["random"].high
    assert found["oracle"].low > found["random"].high
    assert list(found)[0] == "oracle"  # best first


def test_destroying_every_skill_does_not_score_well(ranked):
    effects, found = ranked
    assert found["destroyer"].value < 0
    # it removes its own skill far beyond random: only the penalty keeps it down
    (own,) = {e.excess for e in effects if (e.method, e.removed, e.evaluated, e.proportion, e.seed)
              == ("destroyer", "A", "A", 0.01, 0)}  # fmt: skip
    assert own > 0.5


def test_missing_half_or_padding_with_random_entries_lowers_the_score(ranked):
    _, found = ranked
    assert found["missing"].value < found["oracle"].value - 0.1
    assert found["excessive"].value < found["oracle"].value - 0.05
    assert found["missing"].value > found["random"].value
    assert found["excessive"].value > found["random"].value


def test_the_score_uses_the_real_fraction_edited(ranked):
    effects, _ = ranked
    low, high = fraction_range(effects)
    assert (low, high) == (0.0025, 0.08)  # the padded sets edit twice the proportion
    padded = curves(effects, "excessive")["A"]
    assert padded.fractions == tuple(2 * p for p in PROPORTIONS)


def _brute_area(curve, low, high, steps=200_000):
    """The mean of the curve (0 below its first fraction, linear in log f between points,
    constant after the last) at the midpoints of a fine grid over [log low, log high]."""
    logs = np.log(curve.fractions)
    u = np.log(low) + (np.arange(steps) + 0.5) * (np.log(high) - np.log(low)) / steps
    heights = np.interp(u, logs, curve.heights)
    heights[u < logs[0]] = 0.0
    return float(heights.mean())


@pytest.mark.parametrize(
    "fractions, heights, low, high",
    [
        ((0.01, 0.02, 0.04), (1.0, 2.0, -1.0), 0.01, 0.04),
        ((0.01, 0.02, 0.04), (1.0, 2.0, -1.0), 0.001, 0.1),
        ((0.005, 0.05), (0.3, 0.7), 0.01, 0.02),
        ((0.05,), (0.5,), 0.01, 0.1),
        ((0.2,), (0.5,), 0.01, 0.1),
    ],
)
def test_the_area_is_the_mean_height_on_a_log_axis(fractions, heights, low, high):
    curve = Curve(fractions=fractions, heights=heights)
    assert curve.area(low, high) == pytest.approx(_brute_area(curve, low, high), abs=1e-4)


def test_one_curve_point_and_the_height_formula():
    effects = [
        Effect(method="m", removed="A", evaluated=e, proportion=0.1, seed=s, fraction=0.05,
               excess=x + s * 0.1)
        for s in (0, 1)
        for e, x in (("A", 1.0), ("B", 0.2), ("C", 0.4))
    ]  # fmt: skip
    (curve,) = curves(effects, "m").values()
    own, others = 1.05, (0.25 + 0.45) / 2  # means over the seeds
    assert curve.heights == pytest.approx((own - 2 * others,))
    assert score(effects, "m", 0.05, 0.05) == pytest.approx(own - 2 * others)
    alone = [e for e in effects if e.evaluated == "A"]
    assert score(alone, "m", 0.05, 0.05) == pytest.approx(own)  # no other skill evaluated


def test_bad_inputs_are_one_line():
    only_others = [Effect(method="m", removed="A", evaluated="B", proportion=0.1, seed=0,
                          fraction=0.1, excess=0.0)]  # fmt: skip
    with pytest.raises(LocatorError, match="its own skill was not evaluated"):
        score(only_others, "m", 0.1, 0.1)
    with pytest.raises(LocatorError, match="no effects of method 'x'"):
        score(only_others, "x", 0.1, 0.1)
    with pytest.raises(LocatorError, match="0 < low <= high"):
        score(only_others, "m", 0.2, 0.1)
    with pytest.raises(LocatorError, match="N x N matrix with N >= 2"):
        diagonal_dominance([[1.0]])
    with pytest.raises(LocatorError, match="nonzero reference"):
        relative_harm(1.0, 0.0, False)


def test_relative_harm_points_towards_damage():
    assert relative_harm(2.2, 2.0, higher_is_better=False) == pytest.approx(0.1)
    assert relative_harm(0.4, 0.5, higher_is_better=True) == pytest.approx(0.2)


def _dominance_reference(matrix):
    n = len(matrix)
    diagonal = [matrix[i][i] for i in range(n)]
    off = [matrix[i][j] for i in range(n) for j in range(n) if i != j]
    return sum(diagonal) / n - sum(off) / len(off)


def test_diagonal_dominance_against_a_loop():
    rng = np.random.default_rng(1)
    for n in (2, 3, 7):
        matrix = rng.normal(size=(n, n))
        assert diagonal_dominance(matrix) == pytest.approx(_dominance_reference(matrix.tolist()))
    assert diagonal_dominance(np.eye(4)) == 1.0
    assert diagonal_dominance(np.ones((4, 4))) == 0.0


def test_dominance_interval_over_seeds_or_given_replicates():
    rng = np.random.default_rng(2)
    per_seed = np.eye(3) + rng.normal(0, 0.1, size=(6, 3, 3))
    found = dominance_interval(per_seed, replicates=500)
    assert found.value == pytest.approx(diagonal_dominance(per_seed.mean(axis=0)))
    assert found.low < found.value < found.high and 0.8 < found.value < 1.2
    assert found.high - found.low < 0.3
    one = dominance_interval(per_seed[:1])
    assert math.isnan(one.low) and math.isnan(one.high)
    given = dominance_interval(per_seed, bootstrap=np.stack([np.eye(3) * k for k in (0.9, 1.1)]))
    assert given.low == pytest.approx(0.905) and given.high == pytest.approx(1.095)


def test_one_wild_random_draw_does_not_dominate():
    """Matched random draws of one size can differ 5-10x (Gemma 3 270M): the excess of each
    cell is the median over seeds."""
    calm = [
        Effect(method="m", removed="A", evaluated=e, proportion=0.1, seed=s, fraction=0.05,
               excess=(0.5 if e == "A" else 0.0) + 0.01 * s)
        for s in range(5)
        for e in ("A", "B")
    ]  # fmt: skip
    wild = [  # seed 4's random draw cost every skill 10 times more: the method's excess drops
        Effect(**{**e.__dict__, "excess": e.excess - (5.0 if e.seed == 4 else 0.0)}) for e in calm
    ]
    assert score(calm, "m", 0.05, 0.05) == pytest.approx(0.52 - 2 * 0.02)
    assert score(wild, "m", 0.05, 0.05) == pytest.approx(0.51 - 2 * 0.01)  # by the mean: 1.48


def test_given_bootstrap_replicates_set_the_interval(ranked):
    effects, _ = ranked
    oracle = [e for e in effects if e.method == "oracle"]
    shifted = [[Effect(**{**e.__dict__, "excess": e.excess + k}) for e in oracle] for k in (-1, 1)]
    (found,) = scores(oracle, bootstrap=shifted).values()
    low, high = fraction_range(oracle)
    both = [score(replicate, "oracle", low, high) for replicate in shifted]
    assert (found.low, found.high) == pytest.approx(tuple(np.percentile(both, [2.5, 97.5])))
    assert found.low < found.value < found.high
