"""Corpora: named datasets (from dataset plugins) and text files turned into calibration texts.

A dataset plugin registers `Dataset` objects through the ``register_datasets`` hook. A dataset
knows its splits and its usual calibration split, where its records come from, how one record
becomes a calibration text, and the evaluation task that measures its skill. `HubDataset` is
the base for datasets that live on the Hugging Face hub and, on machines without the hub, in
local files laid out as ``<data_dir>/<folder>/<split>.jsonl`` (or ``.parquet``, ``.csv``).
Local records are converted to the hub's layout, so one `format` serves both sources.

`sample_corpus` draws ``num_samples`` formatted texts under a seed, without replacement by
default (``replace=True`` is the MathNeuro paper's draw).
`read_texts` reads a JSON Lines file of texts as given.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any, ClassVar, overload

from locator.errors import LocatorError, UnknownNameError
from locator.io import read_text
from locator.options import OptionError, Options, option
from locator.plugins import Registry, registry

LOCAL_SUFFIXES = (".jsonl", ".parquet", ".csv")
OFFLINE_VARIABLES = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")

Record = Mapping[str, Any]


class Dataset:
    """A named dataset whose records become calibration texts; register an instance.

    Class attributes: `name` (unique), `description` (one line), `splits` (the splits it
    has), `calibration_split` (taken when no split is named) and `task` (the evaluation task
    that measures the skill, or None). Subclasses implement `records` and `format`.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ()
    calibration_split: ClassVar[str] = "train"
    task: ClassVar[str | None] = None

    def source(self) -> str:
        """Where the records come from, in words (for ``locator datasets``)."""
        return ""

    def resolve_split(self, split: str | None, data_dir: Path | None) -> str:
        """The split to read: `split` if given, else the usual calibration split."""
        return self.calibration_split if split is None else split

    def records(self, split: str, data_dir: Path | None) -> Sequence[Record]:
        """All records of `split`, in a stable order."""
        raise NotImplementedError(f"{type(self).__name__} does not implement records()")

    def format(self, record: Record) -> str:
        """The calibration text of one record."""
        raise NotImplementedError(f"{type(self).__name__} does not implement format()")

    def turns(self, record: Record) -> tuple[str, str]:
        """The record as a chat exchange ``(user, assistant)``, for calibration through a chat
        template (`render_chat`). The default is the whole text as the user's message and no
        answer; datasets of questions and answers split them."""
        return self.format(record), ""


class HubDataset(Dataset):
    """A dataset on the Hugging Face hub (`hub_id`, `hub_config`) with local copies.

    With a data directory, split ``s`` is read from ``<data_dir>/<folder>/<stem>.<suffix>``,
    where `folder` defaults to the name and `local_files` maps a split to its file stem where
    the two differ. A data directory that is a file is read as the split itself. `fields` are
    the fields every record must have after `from_local`, which converts a local record to
    the hub's layout. `keep` drops records (blank lines, say) from either source.
    """

    hub_id: ClassVar[str]
    hub_config: ClassVar[str | None] = None
    folder: ClassVar[str | None] = None
    local_files: ClassVar[Mapping[str, str]] = {}
    fields: ClassVar[tuple[str, ...]] = ()

    def source(self) -> str:
        """The hub id and the local folder."""
        config = f" ({self.hub_config})" if self.hub_config else ""
        return f"hub {self.hub_id}{config}; local <data_dir>/{self.folder or self.name}/"

    def from_local(self, record: Record) -> Record:
        """A record of a local file in the hub's layout (identity unless overridden)."""
        return record

    def keep(self, record: Record) -> bool:
        """Whether a record (in the hub's layout) belongs to the corpus."""
        return True

    def hub_records(self, split: str) -> list[Record]:
        """The records of `split` from the hub (or the local Hugging Face cache)."""
        return load_hub_split(self.name, self.hub_id, self.hub_config, split)

    def local_splits(self, data_dir: Path) -> list[str]:
        """The splits that have a file in the local folder."""
        folder = data_dir / (self.folder or self.name)
        if not folder.is_dir():
            return []
        split_of = {stem: split for split, stem in self.local_files.items()}
        stems = sorted({p.stem for p in folder.iterdir() if p.suffix in LOCAL_SUFFIXES})
        return [split_of.get(stem, stem) for stem in stems]

    def resolve_split(self, split: str | None, data_dir: Path | None) -> str:
        """The named split; else the calibration split, or the only split a local folder has
        (the shared copies hold just MATH's test split and a RACE subset)."""
        if split is not None:
            return split
        if data_dir is None:
            return self.calibration_split
        if data_dir.is_file():
            return data_dir.stem
        available = self.local_splits(data_dir)
        if self.calibration_split not in available and len(available) == 1:
            return available[0]
        return self.calibration_split

    def local_path(self, split: str, data_dir: Path) -> Path:
        """The local file holding `split`."""
        if data_dir.is_file():
            return data_dir
        folder = data_dir / (self.folder or self.name)
        stem = self.local_files.get(split, split)
        for suffix in LOCAL_SUFFIXES:
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
        if not folder.is_dir():
            found = f"{folder} does not exist"
        else:
            names = sorted(p.name for p in folder.iterdir() if p.suffix in LOCAL_SUFFIXES)
            found = f"{folder} holds {', '.join(names) if names else 'no data files'}"
        raise LocatorError(
            f"dataset {self.name!r}: no local file for split {split!r}: expected "
            f"{folder / stem}.jsonl (or .parquet, .csv); {found}."
        )

    def records(self, split: str, data_dir: Path | None) -> list[Record]:
        """The split's records in the hub's layout, from the data directory or the hub."""
        if data_dir is None:
            records, where = self.hub_records(split), f"{self.hub_id} split {split!r}"
        else:
            path = self.local_path(split, data_dir)
            records, where = [], str(path)
            for number, raw in enumerate(read_records(path), start=1):
                try:
                    records.append(self.from_local(raw))
                except (KeyError, ValueError) as error:
                    detail = f"no field {error.args[0]!r}" if isinstance(error, KeyError) else error
                    raise LocatorError(f"{path}: record {number}: {detail}.") from None
        for number, record in enumerate(records, start=1):
            missing = [field for field in self.fields if field not in record]
            if missing:
                raise LocatorError(
                    f"{where}: record {number} has no field {missing[0]!r} "
                    f"(dataset {self.name!r} needs {', '.join(self.fields)})."
                )
        return [record for record in records if self.keep(record)]


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON Lines, Parquet or CSV file, in file order."""
    path = Path(path)
    if not path.is_file():
        raise LocatorError(f"data file {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        records = []
        with StringIO(read_text(path, "data file")) as handle:  # not UTF-8: one line
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise LocatorError(f"{path}:{number}: not valid JSON ({error.msg}).") from None
                if not isinstance(record, dict):
                    raise LocatorError(f"{path}:{number}: expected a JSON object per line.")
                records.append(record)
        return records
    if suffix == ".parquet":
        import pyarrow.parquet

        return list(pyarrow.parquet.read_table(path).to_pylist())
    if suffix == ".csv":
        with StringIO(read_text(path, "data file"), newline="") as handle:
            return [dict(row) for row in csv.DictReader(handle)]
    raise LocatorError(f"{path}: unsupported data file type; use .jsonl, .parquet or .csv.")


def offline_variable() -> str | None:
    """The environment variable that forbids the hub, if one is set."""
    for variable in OFFLINE_VARIABLES:
        if os.environ.get(variable, "").upper() in {"1", "ON", "YES", "TRUE"}:
            return variable
    return None


def load_hub_split(dataset: str, hub_id: str, config: str | None, split: str) -> list[Record]:
    """One split of a hub dataset as a list of records.

    Offline (``HF_DATASETS_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``), `datasets` reads only its
    local cache and never connects; a dataset missing from the cache is an error saying how
    to pass a data directory instead.
    """
    import datasets

    try:
        loaded = datasets.load_dataset(hub_id, config, split=split)
    except ConnectionError as error:
        variable = offline_variable()
        if variable is None:
            raise LocatorError(f"dataset {dataset!r}: cannot reach {hub_id}: {error}") from None
        raise LocatorError(
            f"dataset {dataset!r} needs {hub_id} from the hub, which {variable}=1 forbids, "
            "and it is not in the local cache; pass a folder of local copies: data_dir=... "
            "in Python, --data-dir in the CLI."
        ) from None
    except Exception as error:  # any failure of the hub or the cache becomes one line
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LocatorError(
            f"dataset {dataset!r}: cannot load {hub_id} split {split!r}: {first}"
        ) from None
    return list(loaded)


# The registry and the one-call API.


def datasets() -> Registry[Dataset]:
    """The registry of installed datasets (`Dataset` instances), by name; `source(name)` is the
    plugin that registered one."""
    return registry("register_datasets")


def list_datasets() -> list[str]:
    """Names of the installed datasets."""
    return datasets().names()


def get_dataset(name: str) -> Dataset:
    """The registered dataset called `name` (unknown names get a did-you-mean)."""
    return datasets().get(name)


@dataclass(frozen=True, kw_only=True)
class Corpus:
    """Calibration texts drawn from a named dataset, with where they came from."""

    dataset: str
    split: str
    num_samples: int
    seed: int
    replace: bool
    texts: tuple[str, ...]
    turns: tuple[tuple[str, str], ...] = ()
    """Each text as ``(user, assistant)`` (`Dataset.turns`), for `render_chat`."""
    chat: bool = False
    """Whether `texts` are rendered through a chat template."""

    @property
    def label(self) -> str:
        """A short provenance string, recorded in localizations: ``gsm8k:train:n=500:seed=0``."""
        draw = ":replace" if self.replace else ""
        chat = ":chat" if self.chat else ""
        return f"{self.dataset}:{self.split}:n={self.num_samples}:seed={self.seed}{draw}{chat}"


@dataclass(frozen=True, kw_only=True)
class CalibrationOptions(Options):
    """How calibration texts are drawn from a named dataset and read by a statistics pass: the
    CLI's ``localize`` options, a suite's top-level keys and `locator.localize`'s arguments.
    Each corpus is read one row per text (`max_length` truncates), or with `pack` = N as one
    token stream cut into rows of N tokens (LAPE's original input; `locator.rows.token_rows`).
    """

    batch_size: int = option(8, help="Texts per batch of a statistics pass.", minimum=1)
    max_length: int | None = option(None, help="Truncate texts to this many tokens.", minimum=1)
    pack: int | None = option(
        None,
        help="Read each corpus as one token stream cut into rows of this many tokens, the tail "
        "dropped (LAPE's original input), instead of one row per text; not with max_length.",
        minimum=1,
    )
    num_samples: int = option(500, help="Texts drawn from a named dataset.", minimum=1)
    with_replacement: bool = option(
        False, help="Draw dataset texts with replacement (the paper).", flag="--replace"
    )
    chat_template: bool = option(
        False,
        help="Render calibration texts through the tokenizer's chat template (instruct models).",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pack is not None and self.max_length is not None:
            both = (
                f"give either max_length ({self.max_length}) or pack ({self.pack}), not both: "
                "packed rows are cut to the pack length."
            )
            raise OptionError("pack", both, both)

    def identity(self) -> dict[str, Any]:
        """What changes a selection besides the number of texts (a suite's grid axis; the batch
        size never keyed one): the draw, the truncation, and the chat template and pack when
        set (left out when not, so that suites from before them keep their hashes)."""
        return {
            "with_replacement": self.with_replacement,
            "max_length": self.max_length,
            **({"chat_template": True} if self.chat_template else {}),
            **({"pack": self.pack} if self.pack is not None else {}),
        }


def sample_corpus(
    name: str,
    *,
    split: str | None = None,
    num_samples: int,
    seed: int = 0,
    replace: bool = False,
    data_dir: str | Path | None = None,
) -> Corpus:
    """Draw `num_samples` calibration texts of corpus `name` under `seed`.

    `name` is a dataset name, a JSON Lines file of texts or ``task:<evaluation task>``
    (`locator.corpora`); with `split=None` the texts never include one that ``nll:<name>``
    (or the task) evaluates (`locator.corpora.sample_any_corpus`). A `split` draws from that
    split of a dataset as it is, holding nothing out (`sample_split`). Without replacement (the
    default) every record appears at most once; ``replace=True`` draws with replacement, as
    the MathNeuro paper did (500 samples). The same arguments give the same texts.
    """
    CalibrationOptions(num_samples=num_samples, with_replacement=replace)  # before any reading
    if split is None:
        from locator.corpora import sample_any_corpus

        return sample_any_corpus(
            name, num_samples=num_samples, seed=seed, replace=replace, data_dir=data_dir
        )
    return sample_split(
        name, split=split, num_samples=num_samples, seed=seed, replace=replace, data_dir=data_dir
    )


def sample_split(
    name: str,
    *,
    split: str | None,
    num_samples: int,
    seed: int = 0,
    replace: bool = False,
    data_dir: str | Path | None = None,
) -> Corpus:
    """Draw `num_samples` formatted texts of `split` (None: its usual calibration split) of
    dataset `name` under `seed`, from every record of the split (see `sample_corpus`)."""
    dataset = get_dataset(name)
    directory = None if data_dir is None else Path(data_dir)
    if directory is not None and not directory.exists():
        raise LocatorError(f"data directory {str(directory)!r} does not exist.")
    if split is not None and dataset.splits and split not in dataset.splits:
        raise UnknownNameError(f"split of dataset {name!r}", split, dataset.splits)
    resolved = dataset.resolve_split(split, directory)
    return draw_texts(
        dataset.records(resolved, directory), f"dataset {name!r} split {resolved!r}", "records",
        dataset.format, dataset.turns, dataset=name, split=resolved, num_samples=num_samples,
        seed=seed, replace=replace,
    )  # fmt: skip


def draw_texts(
    items: Sequence[Any],
    where: str,
    what: str,
    text: Callable[[Any], str],
    turns: Callable[[Any], tuple[str, str]] | None,
    *,
    num_samples: int,
    seed: int,
    replace: bool,
    **corpus: Any,
) -> Corpus:
    """A `Corpus` (`corpus`: its `dataset` and `split`) of `num_samples` of `items` drawn under
    `seed`, with replacement if `replace`, made texts by `text` and turns by `turns`; `where`
    has the items, as `what` (for the one-line errors)."""
    if not items:
        raise LocatorError(f"{where} has no {what}.")
    if not replace and num_samples > len(items):
        raise LocatorError(
            f"{where} has {len(items)} {what}; cannot draw {num_samples} without replacement "
            "(draw fewer, or use replace=True / --replace)."
        )
    rng, positions = random.Random(seed), range(len(items))
    chosen = (
        rng.choices(positions, k=num_samples) if replace else rng.sample(positions, num_samples)
    )
    return Corpus(
        num_samples=num_samples,
        seed=seed,
        replace=replace,
        texts=tuple(text(items[i]) for i in chosen),
        turns=() if turns is None else tuple(turns(items[i]) for i in chosen),
        **corpus,
    )


def require_chat_template(tokenizer: Any, option: str, instead: str) -> None:
    """Raise a one-line `LocatorError` naming `option` (what asked for the template) and what
    to do `instead` unless `tokenizer` has a chat template."""
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise LocatorError(
            f"{option}: the tokenizer {name!r} has no chat template (a base model's); "
            f"{instead} or use an instruct model's tokenizer."
        )


@overload
def render_chat(tokenizer: Any, corpus: Corpus) -> Corpus: ...
@overload
def render_chat(tokenizer: Any, corpus: Sequence[str]) -> list[str]: ...
def render_chat(tokenizer: Any, corpus: Corpus | Sequence[str]) -> Corpus | list[str]:
    """Calibration texts rendered through the tokenizer's chat template: each text's
    ``(user, assistant)`` turns (`Dataset.turns`; a plain text is the user's message) as the
    template writes the conversation. The one place calibration texts become chat; the CLI's
    ``localize --chat-template`` and suites' ``chat_template = true`` call it once the
    tokenizer is loaded. A BOS token the template writes is dropped when the tokenizer adds
    its own, so no text starts with two.
    """
    require_chat_template(tokenizer, "chat_template", "calibrate on plain texts")
    bos = str(getattr(tokenizer, "bos_token", None) or "")
    adds_bos = bool(bos) and tokenizer("a")["input_ids"][:1] == [tokenizer.bos_token_id]

    def render(user: str, assistant: str) -> str:
        messages = [{"role": "user", "content": user}]
        if assistant:
            messages.append({"role": "assistant", "content": assistant})
        text = str(tokenizer.apply_chat_template(messages, tokenize=False))
        return text[len(bos) :] if adds_bos and text.startswith(bos) else text

    if isinstance(corpus, Corpus):
        if corpus.chat:
            return corpus
        turns = corpus.turns or tuple((text, "") for text in corpus.texts)
        texts = tuple(render(user, assistant) for user, assistant in turns)
        return dataclasses.replace(corpus, texts=texts, chat=True)
    return [render(text, "") for text in corpus]


def draw_corpus(
    value: str, calibration: CalibrationOptions, *, seed: int, data_dir: str | Path | None
) -> Corpus:
    """`sample_corpus` of the corpus value `value` as `calibration` says: its `num_samples`,
    with replacement when `with_replacement`."""
    return sample_corpus(
        value,
        num_samples=calibration.num_samples,
        seed=seed,
        replace=calibration.with_replacement,
        data_dir=data_dir,
    )


def resolve_corpus(
    value: str | Corpus | Sequence[str],
    role: str,
    calibration: CalibrationOptions,
    *,
    seed: int,
    data_dir: str | Path | None,
    tokenizer: Any,
) -> tuple[str, Sequence[str]]:
    """``(label, texts)`` of a corpus given as a corpus value (a dataset name, a JSON Lines
    file or ``task:<task>``: `sample_corpus` draws `calibration`'s `num_samples` under `seed`),
    a `Corpus` or a list of texts (labelled `role`); through `tokenizer`'s chat template
    (`render_chat`) when `calibration` asks for it."""
    if isinstance(value, str):
        value = draw_corpus(value, calibration, seed=seed, data_dir=data_dir)
    if calibration.chat_template:
        value = render_chat(tokenizer, value)
    if isinstance(value, Corpus):
        return value.label, value.texts
    return role, value


def read_texts(path: str | Path) -> list[str]:
    """Every record's ``text`` field in a JSON Lines (or Parquet, CSV) file, in file order."""
    records = read_records(path)
    if not records:
        raise LocatorError(f"{str(path)!r} holds no texts: the corpus is empty.")
    for number, record in enumerate(records, start=1):
        if not isinstance(record.get("text"), str):
            raise LocatorError(f"{path}: record {number} has no string 'text' field.")
    return [record["text"] for record in records]
