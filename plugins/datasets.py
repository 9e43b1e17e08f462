"""The built-in datasets: GSM8K, MATH, MATH-500, MMLU, RACE, WikiText-2, Python source code and
prose in 12 languages (``handbook-en``, ``handbook-fr``, ...).

Each turns a record into one calibration text in the MathNeuro paper's spirit: a math problem
with its worked solution, a multiple-choice question with its options and answer (RACE with its
article), a WikiText paragraph, a chunk of Python source. Records come from the hub by default
and from local copies in a data directory (``<data_dir>/gsm8k/train.jsonl`` and so on, as in
the project's shared data folder); local records are converted to the hub's layout first.
"""

from __future__ import annotations

import functools
import json
import os
import sysconfig
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import locator

LETTERS = "ABCD"


def _options(options: Sequence[str]) -> str:
    return "\n".join(f"{letter}. {option}" for letter, option in zip(LETTERS, options, strict=True))


def _string_list(value: Any) -> list[str]:
    """The four options as a list of strings; CSV files hold lists as JSON text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"expected a list of options, got {value[:40]!r}") from None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of option strings, got {value!r}")
    if len(value) != len(LETTERS):
        raise ValueError(f"expected {len(LETTERS)} options, got {len(value)}")
    return list(value)


def _answer_index(value: Any) -> int:
    """An answer given as a letter A-D or an index 0-3."""
    if isinstance(value, str) and value.strip().upper() in LETTERS:
        return LETTERS.index(value.strip().upper())
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and 0 <= value < len(LETTERS):
        return value
    raise ValueError(f"answer must be a letter A-D or an index 0-3, got {value!r}")


class _TwoFieldDataset(locator.HubDataset):
    """A dataset whose text is its two `turns` (by default its first two `fields`: what is asked
    and the answer), each under its `labels` entry: ``{label}: {asked}\\n{label}: {answer}``."""

    labels: ClassVar[tuple[str, str]]

    def format(self, record: locator.Record) -> str:
        """Each field under its label."""
        (asked, answer), (first, second) = self.turns(record), self.labels
        return f"{first}: {asked}\n{second}: {answer}"

    def turns(self, record: locator.Record) -> tuple[str, str]:
        """The first field asks, the second answers."""
        return str(record[self.fields[0]]), str(record[self.fields[1]])


class Gsm8kDataset(_TwoFieldDataset):
    """``Question: {question}\\nAnswer: {answer}``, the answer being the full worked solution
    (calculator annotations and the final ``#### N`` line included, as in the dataset)."""

    name = "gsm8k"
    description = "Grade-school math word problems with worked solutions (GSM8K)."
    splits = ("train", "test")
    task = "gsm8k_cot"
    hub_id = "openai/gsm8k"
    hub_config = "main"
    fields = ("question", "answer")
    labels = ("Question", "Answer")


MATH_SUBJECTS = {
    "algebra": "Algebra",
    "counting_and_probability": "Counting & Probability",
    "geometry": "Geometry",
    "intermediate_algebra": "Intermediate Algebra",
    "number_theory": "Number Theory",
    "prealgebra": "Prealgebra",
    "precalculus": "Precalculus",
}
"""The hub's MATH configs (EleutherAI/hendrycks_math) and the `type` each record carries."""


class MathDataset(_TwoFieldDataset):
    """``Problem: {problem}\\nSolution: {solution}`` (the solution ends in ``\\boxed{...}``).

    The hub keeps MATH as one config per subject; they are read in the order of
    `MATH_SUBJECTS`. The shared local copy has only the test split (5,000 problems), so
    without a named split a data directory calibrates on it."""

    name = "math"
    description = "Competition math problems with worked solutions (MATH, all 7 subjects)."
    splits = ("train", "test")
    task = "hendrycks_math"
    hub_id = "EleutherAI/hendrycks_math"
    fields = ("problem", "solution")
    labels = ("Problem", "Solution")

    def source(self) -> str:
        """The hub id (all subject configs) and the local folder."""
        return f"hub {self.hub_id} (7 subject configs); local <data_dir>/{self.name}/"

    def hub_records(self, split: str) -> list[locator.Record]:
        """The split of every subject config, concatenated."""
        records: list[locator.Record] = []
        for config in MATH_SUBJECTS:
            records += locator.load_hub_split(self.name, self.hub_id, config, split)
        return records


class Math500Dataset(_TwoFieldDataset):
    """MATH-500, the 500-problem test subset of MATH used by "Let's Verify Step by Step";
    formatted like `math`."""

    name = "math500"
    description = "MATH-500: a 500-problem subset of the MATH test split."
    splits = ("test",)
    calibration_split = "test"
    task = "hendrycks_math500"
    hub_id = "HuggingFaceH4/MATH-500"
    fields = ("problem", "solution")
    labels = ("Problem", "Solution")


class MmluDataset(_TwoFieldDataset):
    """``Question: {question}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer: {letter}``.

    Calibration uses the validation split (1,531 questions over all 57 subjects), keeping the
    test split for evaluation. Local files name it ``val``; their ``answer`` is a letter, the
    hub's an index (both are read)."""

    name = "mmlu"
    labels = ("Question", "Answer")
    description = "Multiple-choice questions over 57 subjects (MMLU)."
    splits = ("test", "validation", "dev", "auxiliary_train")
    calibration_split = "validation"
    task = "mmlu"
    hub_id = "cais/mmlu"
    hub_config = "all"
    local_files = {"validation": "val"}
    fields = ("question", "choices", "answer")

    def from_local(self, record: locator.Record) -> locator.Record:
        """Options as a list, the answer as an index."""
        answer = record["answer_index"] if "answer_index" in record else record["answer"]
        return {
            "question": record["question"],
            "subject": record.get("subject", ""),
            "choices": _string_list(record["choices"]),
            "answer": _answer_index(answer),
        }

    def turns(self, record: locator.Record) -> tuple[str, str]:
        """Question and options ask, the letter answers."""
        return f"{record['question']}\n{_options(record['choices'])}", LETTERS[record["answer"]]


class RaceDataset(_TwoFieldDataset):
    """``Article: {article}\\nQuestion: {question}\\nA. ..\\nD. ..\\nAnswer: {letter}``.

    One text per question, from ehovy/race (all levels). The shared local copy
    (``race/race_1000.jsonl``, 500 middle- and 500 high-school questions) is a curated subset,
    not an official split; a data directory calibrates on it unless a split is named."""

    name = "race"
    labels = ("Article", "Answer")
    description = "Reading comprehension: an article and a multiple-choice question (RACE)."
    splits = ("train", "validation", "test")
    task = "race"
    hub_id = "ehovy/race"
    hub_config = "all"
    fields = ("article", "question", "options", "answer")

    def from_local(self, record: locator.Record) -> locator.Record:
        """Options as a list, the answer as a letter."""
        return {
            "example_id": record.get("example_id", ""),
            "article": record["article"],
            "question": record["question"],
            "options": _string_list(record["options"]),
            "answer": LETTERS[_answer_index(record["answer"])],
        }

    def turns(self, record: locator.Record) -> tuple[str, str]:
        """Article, question and options ask, the letter answers."""
        asked = (
            f"{record['article']}\nQuestion: {record['question']}\n{_options(record['options'])}"
        )
        return asked, str(record["answer"])


def _is_heading(text: str) -> bool:
    stripped = text.strip()
    return stripped.startswith("= ") and stripped.endswith(" =")


class WikitextDataset(locator.HubDataset):
    """One non-blank, non-heading line (a paragraph) of WikiText-2, stripped.

    The hub's ``wikitext-2-raw-v1``; locally ``wikitext2/raw_train_sample.jsonl`` is the train
    split (a 4,444-paragraph sample of it). The local ``tokenized_valid``/``tokenized_test``
    files (with ``<unk>``) are readable by those split names."""

    name = "wikitext"
    description = "Wikipedia paragraphs (WikiText-2, raw)."
    splits = ("train", "validation", "test")
    task = "wikitext"
    hub_id = "Salesforce/wikitext"
    hub_config = "wikitext-2-raw-v1"
    folder = "wikitext2"
    local_files = {"train": "raw_train_sample"}
    fields = ("text",)

    def keep(self, record: locator.Record) -> bool:
        """Paragraphs only: no blank lines, no ``= Heading =`` lines."""
        return bool(record["text"].strip()) and not _is_heading(record["text"])

    def format(self, record: locator.Record) -> str:
        """The paragraph."""
        return str(record["text"]).strip()


MAX_CHUNK_CHARS = 2000
MIN_CHUNK_CHARS = 200
STDLIB_SKIP = frozenset({"site-packages", "dist-packages", "__pycache__", "test", "tests"})
"""Folders of the standard library that are not its own source (installed packages, the
CPython test suite with its deliberately odd files)."""


def chunk_source(text: str) -> list[str]:
    """Cut a Python file into texts of at most about `MAX_CHUNK_CHARS` characters.

    Cuts fall between top-level statements (an unindented line after a blank line), so a
    chunk holds whole functions and classes where they fit; longer ones are cut between
    lines. Chunks shorter than `MIN_CHUNK_CHARS` (after stripping) are dropped.
    """
    blocks: list[list[str]] = [[]]
    previous_blank = True
    for line in text.splitlines(keepends=True):
        blank = not line.strip()
        if previous_blank and not blank and not line[0].isspace() and blocks[-1]:
            blocks.append([])
        blocks[-1].append(line)
        previous_blank = blank
    chunks: list[str] = []
    current = ""
    for block in blocks:
        if current and len(current) + sum(map(len, block)) > MAX_CHUNK_CHARS:
            chunks.append(current)  # the next block does not fit: cut before it
            current = ""
        for line in block:
            if current and len(current) + len(line) > MAX_CHUNK_CHARS:
                chunks.append(current)  # the block alone is too long: cut between lines
                current = ""
            current += line
    chunks.append(current)
    return [chunk.strip("\n") for chunk in chunks if len(chunk.strip()) >= MIN_CHUNK_CHARS]


@functools.lru_cache(maxsize=4)
def _python_chunks(root: str, skip: frozenset[str]) -> tuple[locator.Record, ...]:
    """Chunks of every ``.py`` file under `root`, files in sorted path order."""
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d not in skip and not d.startswith("."))
        files += [Path(folder, name) for name in names if name.endswith(".py")]
    records: list[locator.Record] = []
    for path in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # not UTF-8 source: not a sample of the skill
        relative = path.relative_to(root).as_posix()
        records += [{"path": relative, "text": chunk} for chunk in chunk_source(text)]
    return tuple(records)


class PythonCodeDataset(locator.Dataset):
    """Chunks of real Python source (at most about 2,000 characters, whole top-level
    definitions where they fit), as written.

    By default the running Python's own standard library (``sysconfig.get_paths()["stdlib"]``,
    without installed packages and the CPython test suite); with a data directory that has a
    ``python-code/`` folder, every ``.py`` file under it. The one split is ``all``."""

    name = "python-code"
    description = "Python source code, by default this Python's standard library."
    splits = ("all",)
    calibration_split = "all"

    def source(self) -> str:
        """The standard library, or the local folder."""
        return "this Python's standard library; local <data_dir>/python-code/**/*.py"

    def records(self, split: str, data_dir: Path | None) -> Sequence[locator.Record]:
        """The chunks of the local folder's files, or of the standard library's."""
        if split != "all":
            raise locator.LocatorError(
                f"dataset {self.name!r} has one split, 'all'; got {split!r}."
            )
        local = None if data_dir is None else data_dir / self.name
        if local is not None and local.is_dir():
            return _python_chunks(str(local), frozenset({"__pycache__"}))
        return _python_chunks(sysconfig.get_paths()["stdlib"], STDLIB_SKIP)

    def format(self, record: locator.Record) -> str:
        """The source text."""
        return str(record["text"])


LANGUAGES = {
    "en": ("English", "eng_Latn"),
    "zh": ("Chinese", "cmn_Hans"),
    "fr": ("French", "fra_Latn"),
    "es": ("Spanish", "spa_Latn"),
    "vi": ("Vietnamese", "vie_Latn"),
    "id": ("Indonesian", "ind_Latn"),
    "ja": ("Japanese", "jpn_Jpan"),
    "de": ("German", "deu_Latn"),
    "it": ("Italian", "ita_Latn"),
    "pt": ("Portuguese", "por_Latn"),
    "ru": ("Russian", "rus_Cyrl"),
    "ar": ("Arabic", "arb_Arab"),
}
"""The languages of the ``handbook-<code>`` datasets: ISO 639-1 code -> (name, FLORES+ config).
The first seven are the LAPE paper's languages."""


class LanguageDataset(locator.HubDataset):
    """Prose in one language, one paragraph or sentence per text, as written (stripped).

    Locally ``<data_dir>/handbook/<code>/{train,test}.jsonl``: paragraphs of the Debian
    Administrator's Handbook, the same book in every language, split by paragraph id (rows with
    equal ids are translations). On the hub, FLORES+ (``openlanguagedata/flores_plus``, one
    config per language, gated: accept its terms on the hub first): its ``dev`` split is
    ``train`` here, ``devtest`` is ``test``; sentences of Wikinews, Wikijunior and Wikivoyage,
    translated from English. The evaluation task ``nll:handbook-<code>`` scores the ``test``
    split (see `locator.heldout`)."""

    splits = ("train", "test")
    hub_id = "openlanguagedata/flores_plus"
    fields = ("text",)
    code: ClassVar[str]
    HUB_SPLITS: ClassVar[Mapping[str, str]] = {"train": "dev", "test": "devtest"}

    def hub_records(self, split: str) -> list[locator.Record]:
        """FLORES+'s ``dev`` as ``train``, ``devtest`` as ``test``."""
        return locator.load_hub_split(
            self.name, self.hub_id, self.hub_config, self.HUB_SPLITS[split]
        )

    def keep(self, record: locator.Record) -> bool:
        """No blank texts."""
        return bool(str(record["text"]).strip())

    def format(self, record: locator.Record) -> str:
        """The paragraph."""
        return str(record["text"]).strip()


def language_dataset(code: str) -> LanguageDataset:
    """The ``handbook-<code>`` dataset of one of `LANGUAGES`."""
    language, config = LANGUAGES[code]
    attributes = {
        "name": f"handbook-{code}",
        "description": f"{language} prose (local: the Debian Handbook; hub: FLORES+).",
        "task": f"nll:handbook-{code}",
        "hub_config": config,
        "folder": f"handbook/{code}",
        "code": code,
    }
    return type(f"LanguageDataset_{code}", (LanguageDataset,), attributes)()


@locator.hookimpl
def register_datasets(register: Any) -> None:
    """Register the built-in datasets."""
    for dataset in (
        Gsm8kDataset(),
        MathDataset(),
        Math500Dataset(),
        MmluDataset(),
        RaceDataset(),
        WikitextDataset(),
        PythonCodeDataset(),
        *(language_dataset(code) for code in LANGUAGES),
    ):
        register(dataset)
