"""Tests of the toy data generators and the grammar."""

import math
import random

import pytest

from locator.toy import data


def test_arithmetic_problems_are_complete_and_correct() -> None:
    problems = data.arithmetic_problems()
    assert len(problems) == 400 + 210 + 100
    assert len(set(problems)) == len(problems)
    for problem in problems:
        expected = eval(f"{problem.left} {problem.operator} {problem.right}")  # noqa: S307
        assert problem.answer == expected >= 0
        assert problem.text == f"{problem.prompt} {expected}"
        limit = data.MULTIPLICATION_MAX if problem.operator == "*" else data.ADDITION_MAX
        assert 0 <= problem.right <= limit and 0 <= problem.left <= limit


def test_arithmetic_sampling_is_seeded() -> None:
    assert data.arithmetic_texts(50, 3) == data.arithmetic_texts(50, 3)
    assert data.arithmetic_texts(50, 3) != data.arithmetic_texts(50, 4)
    assert data.arithmetic_texts(5, random.Random(3)) == data.arithmetic_texts(5, 3)
    for problem in data.sample_arithmetic_problems(500, 1):
        assert problem in set(data.arithmetic_problems())


def test_language_sampling_is_seeded() -> None:
    assert data.language_texts(50, 3) == data.language_texts(50, 3)
    assert data.language_texts(50, 3) != data.language_texts(50, 4)


def test_word_classes_are_disjoint() -> None:
    # A word in two classes would make the parse, and so the optimum, ambiguous.
    words = data.language_vocabulary()
    assert len(words) == len(set(words))
    shared = set(data.arithmetic_vocabulary()) & set(words)
    assert shared == {str(digit) for digit in range(2, 10)}


def test_generated_sentences_are_grammatical_and_agree() -> None:
    singular_nouns = set(data.NOUNS[data.SINGULAR])
    singular_verbs = set(data.VERBS[data.SINGULAR])
    for text in data.language_texts(2000, 0):
        words = text.split()
        for index, word in enumerate(words):
            assert word in data.grammatical_next_words(words[:index])
        assert data.grammatical_next_words(words) == {data.END}
        nouns = [w for w in words if w in data.NOUNS[data.SINGULAR] + data.NOUNS[data.PLURAL]]
        verb = next(w for w in words if w in data.VERBS[data.SINGULAR] + data.VERBS[data.PLURAL])
        determiners = [words[0], words[words.index(verb) + 1]]
        # Determiner, noun and (for the subject) verb all share one number.
        assert (nouns[0] in singular_nouns) == (verb in singular_verbs)
        for determiner, noun in zip(determiners, nouns, strict=True):
            assert (determiner in data.SINGULAR_DETERMINERS) == (noun in singular_nouns)


def test_ungrammatical_prefixes_are_rejected() -> None:
    for text in ("a cats sees a dog .", "2 cats sees a dog ."):
        with pytest.raises(ValueError):
            data.grammatical_next_words(text.split())
    assert data.END not in data.grammatical_next_words("a cat sees a dog".split())
    with pytest.raises(ValueError):
        data.grammatical_next_words(["a", "cats"])
    assert data.grammatical_next_words(["3", "big"]) == set(data.NOUNS[data.PLURAL])


def test_next_word_distribution_sums_to_one() -> None:
    for text in data.language_texts(20, 0):
        words = text.split()
        for index in range(len(words) + 1):
            assert math.isclose(sum(data.next_word_distribution(words[:index]).values()), 1.0)


def _scored_entropies(text: str) -> list[float]:
    """The grammar's entropy (nats) at each position the language loss scores: the
    predictions of words `FIRST_SCORED_WORD` onward and of `END`."""
    words = [*text.split(), data.END]
    return [
        -sum(p * math.log(p) for p in data.next_word_distribution(words[:index]).values())
        for index in range(data.FIRST_SCORED_WORD, len(words))
    ]


def test_language_optimum_matches_hand_computation_and_sampling() -> None:
    log = math.log
    object_determiner = log(2) + 0.5 * log(7) + 0.5 * log(14)
    after_determiner = log(2) + 0.5 * log(50) + 0.5 * log(100)
    # Expected entropy sum over: subject noun after adjective (half the time), verb,
    # object determiner, adjective-or-noun, noun after adjective (half), period, end.
    total = 0.5 * log(100) + log(40) + object_determiner + after_determiner + 0.5 * log(100)
    count = 0.5 + 1 + 1 + 1 + 0.5 + 1 + 1
    assert math.isclose(data.language_optimum(), total / count)
    texts = data.language_texts(5000, 1)
    entropies = [h for text in texts for h in _scored_entropies(text)]
    assert abs(sum(entropies) / len(entropies) - data.language_optimum()) < 0.02
