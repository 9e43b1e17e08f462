"""Held-out texts: which texts of a corpus calibration never sees, so they can measure its skill.

Every corpus a localization can calibrate on - a dataset name or a JSON Lines file of texts -
is also an evaluation task, ``nll:<corpus>`` (``nll:handbook-fr``, ``nll:gsm8k``,
``nll:data/my_texts.jsonl``), scoring the held-out texts' negative log-likelihood (nats per
token and per byte, the skill tasks' NLL metrics). A corpus value names a file by the rule of
the CLI's calibration corpora (`is_file_corpus`): it is a file, ends in ``.jsonl`` or has a
``/``.

What is held out (`held_out_part`):

- a dataset with a split apart from the one calibration reads (its ``test`` split, else its
  ``validation`` split; with a data directory, one that has a local file): that split, whole.
  Calibration draws from its own split, so the two never share a record;
- otherwise (one split only: ``python-code``, ``math500``, the shared RACE subset), the texts of
  the calibration split whose SHA-256 falls in the held-out fifth (`is_held_out`), which
  calibration never draws;
- a JSON Lines file of texts (``text`` field): its held-out fifth by the same hash;
  `calibration_texts` are the other four fifths.

The hash split depends on the text alone, so it is the same on every machine, in every order of
the records, and a text repeated in a corpus falls on one side only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from locator.data import Dataset, get_dataset, read_texts
from locator.errors import LocatorError

NLL_PREFIX = "nll:"
"""Evaluation tasks ``nll:<corpus>`` score the held-out texts of a corpus."""
HELD_OUT_SHARE = 5
"""One text in this many is held out where a corpus has no split for evaluation."""
EVALUATION_SPLITS = ("test", "validation")
"""The splits a dataset is evaluated on, in order of preference, when calibration reads another."""


def is_held_out(text: str) -> bool:
    """Whether `text` is in the held-out fifth: the first 8 bytes of its UTF-8 SHA-256, as an
    integer, are divisible by `HELD_OUT_SHARE`."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % HELD_OUT_SHARE == 0


def is_file_corpus(value: str) -> bool:
    """Whether a corpus value names a file of texts rather than a dataset: it is a file, ends
    in ``.jsonl`` or has a ``/`` (the CLI's rule for calibration corpora)."""
    return Path(value).is_file() or value.endswith(".jsonl") or "/" in value


def corpus_of_task(task: str) -> str | None:
    """The corpus of an ``nll:<corpus>`` task, else None."""
    if not task.startswith(NLL_PREFIX):
        return None
    corpus = task[len(NLL_PREFIX) :]
    if not corpus.strip():
        raise LocatorError(
            f"evaluation task {task!r} names no corpus: write nll:<dataset> or nll:<file.jsonl>."
        )
    return corpus


@dataclass(frozen=True, kw_only=True)
class HeldOutPart:
    """Where a dataset's held-out texts are: `split`, whole or (`hashed`) its held-out fifth."""

    split: str
    hashed: bool


def held_out_part(dataset: Dataset, data_dir: Path | None) -> HeldOutPart:
    """The held-out part of `dataset` (see the module docs)."""
    calibration = dataset.resolve_split(None, data_dir)
    if data_dir is not None and data_dir.is_file():  # the file is every split
        return HeldOutPart(split=calibration, hashed=True)
    available: Sequence[str] = dataset.splits
    local_splits = getattr(dataset, "local_splits", None)
    if data_dir is not None and local_splits is not None:
        available = [split for split in local_splits(data_dir) if split in dataset.splits]
    for split in EVALUATION_SPLITS:
        if split != calibration and split in available:
            return HeldOutPart(split=split, hashed=False)
    return HeldOutPart(split=calibration, hashed=True)


def held_out_texts(corpus: str, data_dir: str | Path | None = None) -> list[str]:
    """The held-out texts of `corpus` (a dataset name or a JSON Lines file), in corpus order;
    an error when there are none."""
    if is_file_corpus(corpus):
        texts = [text for text in read_texts(corpus) if is_held_out(text)]
        where = f"file {corpus!r}"
    else:
        dataset = get_dataset(corpus)
        directory = None if data_dir is None else Path(data_dir)
        part = held_out_part(dataset, directory)
        texts = [dataset.format(r) for r in dataset.records(part.split, directory)]
        texts = [text for text in texts if is_held_out(text)] if part.hashed else texts
        where = f"dataset {corpus!r} split {part.split!r}" + (
            " (held-out fifth)" if part.hashed else ""
        )
    if not texts:
        raise LocatorError(
            f"nll:{corpus}: {where} has no held-out texts (one text in {HELD_OUT_SHARE} is held "
            "out by a hash of its text); give a corpus with more texts."
        )
    return texts


def calibration_texts(path: str | Path) -> list[str]:
    """The texts of a JSON Lines (or Parquet, CSV) file that calibration may use: those not
    held out for ``nll:<path>``, in file order."""
    texts = [text for text in read_texts(path) if not is_held_out(text)]
    if not texts:
        raise LocatorError(
            f"{str(path)!r}: every text is held out for evaluation (nll:{path}); "
            "give a corpus with more texts."
        )
    return texts
