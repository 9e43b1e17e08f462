"""Seeded data generators for the toy two-skill testbed.

Two skills share one small vocabulary:

* **Arithmetic**: ``a + b``, ``a - b`` (operands 0-19, ``a >= b``) and ``a * b``
  (operands 0-9) written as space-separated words, e.g. ``"12 + 7 = 19"``.
  Every number is a single word (token), not a run of digits: every prompt is then
  exactly five tokens long (``<bos> a op b =``) and every answer one token, so
  batched greedy evaluation needs no padding, and the model learns a fact table of
  710 problems instead of a carry algorithm, which a 320k-parameter model trained
  for minutes cannot be relied on to learn.
* **Language**: sentences ``DET [ADJ] NOUN VERB DET [ADJ] NOUN .`` from a grammar
  with number agreement (determiner -> noun -> verb for the subject; determiner ->
  noun for the object). The digits ``2`` to ``9`` are plural determiners, so the
  two skills share tokens. Every choice is uniform within its word class, so the
  grammar's next-word distribution given any prefix is known exactly, and so is
  the best achievable next-token loss (:func:`language_optimum`).

The grammar is a small state machine: each state lists options (probability, a
word class chosen uniformly, next state); sampling, the next-word distribution,
parsing and the exact optimum are all computed from that one table.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

END = "<eos>"
"""The word that ends a sentence in the grammar; it is the tokenizer's eos token."""

FIRST_SCORED_WORD = 2
"""Index of the first sentence word whose prediction the language loss scores.

The first two words are not scored: a text that starts with ``2`` or ``3`` may be a
sentence or a sum, so with both skills mixed in training no model can predict them
with the grammar's distribution. From the third word on, the prefix always shows
which skill the text belongs to (operators are not sentence words).
"""

OPERATORS = ("+", "-", "*")
ADDITION_MAX = 19
MULTIPLICATION_MAX = 9
ADJECTIVE_PROBABILITY = 0.5
"""Chance that a noun phrase has an adjective between determiner and noun."""

SINGULAR = "singular"
PLURAL = "plural"
NUMBERS = (SINGULAR, PLURAL)

SeedLike = int | str | random.Random


def _rng(seed: SeedLike) -> random.Random:
    """Return ``seed`` itself if it is a generator, else a new one seeded with it."""
    return seed if isinstance(seed, random.Random) else random.Random(seed)


# --------------------------------------------------------------------------- arithmetic


@dataclass(frozen=True)
class ArithmeticProblem:
    """One arithmetic problem, e.g. ``ArithmeticProblem(12, "+", 7)``."""

    left: int
    operator: str
    right: int

    @property
    def answer(self) -> int:
        """The exact result (never negative: minus problems have ``left >= right``)."""
        if self.operator == "+":
            return self.left + self.right
        if self.operator == "-":
            return self.left - self.right
        if self.operator == "*":
            return self.left * self.right
        raise ValueError(f"unknown operator {self.operator!r}")

    @property
    def prompt(self) -> str:
        """The text the model continues, e.g. ``"12 + 7 ="``."""
        return f"{self.left} {self.operator} {self.right} ="

    @property
    def text(self) -> str:
        """Prompt and answer, e.g. ``"12 + 7 = 19"``."""
        return f"{self.prompt} {self.answer}"


def _operand_pairs(operator: str) -> list[tuple[int, int]]:
    """All operand pairs allowed for ``operator``."""
    if operator == "+":
        return [(a, b) for a in range(ADDITION_MAX + 1) for b in range(ADDITION_MAX + 1)]
    if operator == "-":
        return [(a, b) for a in range(ADDITION_MAX + 1) for b in range(a + 1)]
    if operator == "*":
        return [
            (a, b) for a in range(MULTIPLICATION_MAX + 1) for b in range(MULTIPLICATION_MAX + 1)
        ]
    raise ValueError(f"unknown operator {operator!r}")


def arithmetic_problems() -> list[ArithmeticProblem]:
    """Every problem of the skill (710), in a fixed order: all sums, differences, products."""
    return [
        ArithmeticProblem(a, operator, b)
        for operator in OPERATORS
        for a, b in _operand_pairs(operator)
    ]


def sample_arithmetic_problems(num: int, seed: SeedLike = 0) -> list[ArithmeticProblem]:
    """Sample ``num`` problems with replacement: operator uniform, then operands uniform.

    Choosing the operator first gives the 100 products as much weight as the 400
    sums, so every fact is seen often enough in training.
    """
    rng = _rng(seed)
    pairs = {operator: _operand_pairs(operator) for operator in OPERATORS}
    problems = []
    for _ in range(num):
        operator = rng.choice(OPERATORS)
        a, b = rng.choice(pairs[operator])
        problems.append(ArithmeticProblem(a, operator, b))
    return problems


def arithmetic_texts(num: int, seed: SeedLike = 0) -> list[str]:
    """``num`` sampled problems with their answers, e.g. ``"3 * 4 = 12"``."""
    return [problem.text for problem in sample_arithmetic_problems(num, seed)]


def arithmetic_vocabulary() -> list[str]:
    """Every word of the arithmetic texts: the numbers that occur (ascending), operators, ``=``."""
    numbers: set[int] = set()
    for problem in arithmetic_problems():
        numbers.update((problem.left, problem.right, problem.answer))
    return [str(number) for number in sorted(numbers)] + [*OPERATORS, "="]


# --------------------------------------------------------------------------- language word lists

SINGULAR_DETERMINERS = ("a", "one", "this", "that", "every", "each", "another")
PLURAL_DETERMINERS = ("these", "those", "some", "many", "few", "several") + tuple(
    str(digit) for digit in range(2, 10)
)

# (singular, plural) pairs; 100 nouns.
NOUN_FORMS = (
    ("cat", "cats"), ("dog", "dogs"), ("bird", "birds"), ("horse", "horses"),
    ("cow", "cows"), ("mouse", "mice"), ("child", "children"), ("man", "men"),
    ("woman", "women"), ("teacher", "teachers"), ("student", "students"),
    ("farmer", "farmers"), ("doctor", "doctors"), ("king", "kings"),
    ("queen", "queens"), ("baker", "bakers"), ("sailor", "sailors"),
    ("pilot", "pilots"), ("painter", "painters"), ("singer", "singers"),
    ("dancer", "dancers"), ("writer", "writers"), ("lawyer", "lawyers"),
    ("nurse", "nurses"), ("soldier", "soldiers"), ("wolf", "wolves"),
    ("fox", "foxes"), ("bear", "bears"), ("lion", "lions"), ("tiger", "tigers"),
    ("rabbit", "rabbits"), ("goat", "goats"), ("duck", "ducks"), ("frog", "frogs"),
    ("snake", "snakes"), ("monkey", "monkeys"), ("owl", "owls"), ("eagle", "eagles"),
    ("whale", "whales"), ("shark", "sharks"), ("spider", "spiders"), ("bee", "bees"),
    ("ant", "ants"), ("goose", "geese"), ("ox", "oxen"), ("apple", "apples"),
    ("book", "books"), ("chair", "chairs"), ("table", "tables"), ("house", "houses"),
    ("car", "cars"), ("boat", "boats"), ("box", "boxes"), ("cup", "cups"),
    ("bottle", "bottles"), ("window", "windows"), ("door", "doors"),
    ("garden", "gardens"), ("river", "rivers"), ("mountain", "mountains"),
    ("tree", "trees"), ("flower", "flowers"), ("stone", "stones"), ("coin", "coins"),
    ("key", "keys"), ("letter", "letters"), ("lamp", "lamps"), ("bell", "bells"),
    ("basket", "baskets"), ("candle", "candles"), ("clock", "clocks"),
    ("shoe", "shoes"), ("hat", "hats"), ("coat", "coats"), ("ring", "rings"),
    ("knife", "knives"), ("leaf", "leaves"), ("city", "cities"), ("baby", "babies"),
    ("lady", "ladies"), ("puppy", "puppies"), ("kitten", "kittens"),
    ("robot", "robots"), ("wizard", "wizards"), ("prince", "princes"),
    ("princess", "princesses"), ("knight", "knights"), ("dragon", "dragons"),
    ("giant", "giants"), ("tourist", "tourists"), ("neighbor", "neighbors"),
    ("friend", "friends"), ("cousin", "cousins"), ("uncle", "uncles"),
    ("aunt", "aunts"), ("guest", "guests"), ("chef", "chefs"), ("poet", "poets"),
    ("artist", "artists"), ("pirate", "pirates"),
)  # fmt: skip

# (singular, plural) agreement forms of transitive verbs; 40 verbs.
VERB_FORMS = (
    ("sees", "see"), ("likes", "like"), ("finds", "find"), ("helps", "help"),
    ("follows", "follow"), ("chases", "chase"), ("visits", "visit"),
    ("paints", "paint"), ("carries", "carry"), ("watches", "watch"),
    ("hears", "hear"), ("knows", "know"), ("loves", "love"), ("hates", "hate"),
    ("meets", "meet"), ("calls", "call"), ("pushes", "push"), ("pulls", "pull"),
    ("holds", "hold"), ("takes", "take"), ("brings", "bring"), ("buys", "buy"),
    ("sells", "sell"), ("wants", "want"), ("needs", "need"), ("keeps", "keep"),
    ("moves", "move"), ("lifts", "lift"), ("washes", "wash"), ("cleans", "clean"),
    ("fixes", "fix"), ("breaks", "break"), ("catches", "catch"), ("draws", "draw"),
    ("remembers", "remember"), ("admires", "admire"), ("greets", "greet"),
    ("teaches", "teach"), ("feeds", "feed"), ("protects", "protect"),
)  # fmt: skip

ADJECTIVES = (
    "big", "small", "old", "young", "happy", "sad", "red", "blue", "green",
    "yellow", "tall", "short", "quiet", "loud", "brave", "clever", "lazy", "busy",
    "gentle", "angry", "tiny", "huge", "strange", "famous", "lucky", "hungry",
    "sleepy", "friendly", "shy", "proud", "kind", "wild", "calm", "bright", "dark",
    "heavy", "soft", "rich", "poor", "fast", "slow", "funny", "silly", "wise",
    "curious", "noisy", "golden", "silver", "purple", "ancient",
)  # fmt: skip

PERIOD = "."

DETERMINERS = {SINGULAR: SINGULAR_DETERMINERS, PLURAL: PLURAL_DETERMINERS}
NOUNS = {
    SINGULAR: tuple(singular for singular, _ in NOUN_FORMS),
    PLURAL: tuple(plural for _, plural in NOUN_FORMS),
}
VERBS = {
    SINGULAR: tuple(singular for singular, _ in VERB_FORMS),
    PLURAL: tuple(plural for _, plural in VERB_FORMS),
}


def language_vocabulary() -> list[str]:
    """Every word a sentence can contain (without :data:`END`), in a fixed order."""
    words = [*SINGULAR_DETERMINERS, *PLURAL_DETERMINERS]
    words += [form for pair in NOUN_FORMS for form in pair]
    words += [form for pair in VERB_FORMS for form in pair]
    return words + [*ADJECTIVES, PERIOD]


def vocabulary() -> list[str]:
    """Every word of both skills, without duplicates (the digit determiners are shared)."""
    return list(dict.fromkeys(arithmetic_vocabulary() + language_vocabulary()))


# --------------------------------------------------------------------------- grammar


@dataclass(frozen=True)
class _State:
    """Where a sentence is: the slot to fill next and the number agreed on so far."""

    slot: str
    number: str | None = None


@dataclass(frozen=True)
class _Option:
    """One way to fill a slot: pick a word of ``words`` uniformly, then go to ``next_state``."""

    probability: float
    words: tuple[str, ...]
    next_state: _State | None  # None: the sentence is complete


_START = _State("subject_determiner")


@functools.cache
def _options(state: _State) -> tuple[_Option, ...]:
    """The grammar table: the options of every state."""
    role, _, part = state.slot.partition("_")
    if part == "determiner":
        # Number is chosen first (fair coin), then a determiner of that number.
        return tuple(
            _Option(0.5, DETERMINERS[number], _State(f"{role}_modifier", number))
            for number in NUMBERS
        )
    if part == "modifier":
        adjective = _Option(ADJECTIVE_PROBABILITY, ADJECTIVES, _State(f"{role}_noun", state.number))
        (noun,) = _options(_State(f"{role}_noun", state.number))
        return adjective, _Option(1 - ADJECTIVE_PROBABILITY, noun.words, noun.next_state)
    if part == "noun":
        assert state.number is not None
        # The subject's number carries on to the verb; the object ends the clause.
        after = _State("verb", state.number) if role == "subject" else _State("period")
        return (_Option(1.0, NOUNS[state.number], after),)
    if state.slot == "verb":
        assert state.number is not None
        return (_Option(1.0, VERBS[state.number], _State("object_determiner")),)
    if state.slot == "period":
        return (_Option(1.0, (PERIOD,), _State("end")),)
    if state.slot == "end":
        return (_Option(1.0, (END,), None),)
    raise ValueError(f"unknown grammar state {state}")


def _distribution(state: _State) -> dict[str, float]:
    """Probability of every next word in ``state`` (word classes of one state are disjoint)."""
    distribution: dict[str, float] = {}
    for option in _options(state):
        for word in option.words:
            distribution[word] = distribution.get(word, 0.0) + option.probability / len(
                option.words
            )
    return distribution


def _entropy(state: _State) -> float:
    """Entropy in nats of the next word in ``state``."""
    return -sum(p * math.log(p) for p in _distribution(state).values())


def _step(state: _State | None, word: str) -> _State | None:
    """The state after reading ``word`` in ``state``; ValueError if it is not allowed."""
    if state is not None:
        for option in _options(state):
            if word in option.words:
                return option.next_state
    raise ValueError(f"{word!r} is not grammatical here")


def next_word_distribution(prefix: Sequence[str]) -> dict[str, float]:
    """The grammar's exact next-word probabilities after ``prefix`` (a list of words).

    The end of the sentence is the word :data:`END`. Raises ValueError if the
    prefix is not grammatical or already ends with :data:`END`.
    """
    state: _State | None = _START
    for word in prefix:
        state = _step(state, word)
    if state is None:
        raise ValueError("the prefix already ends the sentence")
    return _distribution(state)


def grammatical_next_words(prefix: Sequence[str]) -> frozenset[str]:
    """The words (possibly :data:`END`) the grammar allows right after ``prefix``."""
    return frozenset(next_word_distribution(prefix))


def sample_sentence(seed: SeedLike = 0) -> list[str]:
    """One sentence as a list of words ending with ``"."`` (without :data:`END`)."""
    rng = _rng(seed)
    words: list[str] = []
    state = _START
    while state.slot != "end":
        options = _options(state)
        option = rng.choices(options, weights=[o.probability for o in options])[0]
        words.append(rng.choice(option.words))
        assert option.next_state is not None
        state = option.next_state
    return words


def language_texts(num: int, seed: SeedLike = 0) -> list[str]:
    """``num`` sampled sentences as texts, e.g. ``"3 tiny cats see a dog ."``."""
    rng = _rng(seed)
    return [" ".join(sample_sentence(rng)) for _ in range(num)]


def language_optimum() -> float:
    """The best achievable mean next-token loss (nats) on the scored positions.

    It is the expected sum of next-word entropies over the scored positions of a
    sentence divided by their expected count, i.e. the limit of the pooled mean over
    many sentences, which is how the evaluator averages the loss. Computed exactly
    by walking every branch of the grammar table.
    """

    def walk(state: _State | None, index: int) -> tuple[float, float]:
        """Expected (entropy sum, scored count) from ``state`` at word ``index`` on."""
        if state is None:
            return 0.0, 0.0
        scored = index >= FIRST_SCORED_WORD
        total, count = (_entropy(state), 1.0) if scored else (0.0, 0.0)
        for option in _options(state):
            rest_total, rest_count = walk(option.next_state, index + 1)
            total += option.probability * rest_total
            count += option.probability * rest_count
        return total, count

    total, count = walk(_START, 0)
    return total / count
