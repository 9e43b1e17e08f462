"""Named datasets: formatted calibration texts from the shared local copies, offline, seeded."""

import json
import re
import socket
from pathlib import Path

import pytest

import locator
from locator import LocatorError, UnknownNameError
from locator.data import sample_split
from tests.conftest import SHARED_DATA, corpus_texts

needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason="the shared local dataset copies are absent"
)

# What every text of each dataset looks like (the MathNeuro-style formats in docs/datasets.md).
FORMATS = {
    "gsm8k": r"Question: .+\nAnswer: .+\n#### .+",
    "math": r"Problem: .+\nSolution: .*\\boxed.*",
    "math500": r"Problem: .+\nSolution: .*\\boxed.*",
    "mmlu": r"Question: .+\nA\. .*\nB\. .*\nC\. .*\nD\. .*\nAnswer: [ABCD]",
    "race": r"Article: .+\nQuestion: .+\nA\. .*\nB\. .*\nC\. .*\nD\. .*\nAnswer: [ABCD]",
    "wikitext": r"\S.*\S",
    "python-code": r".*\S.*",  # a cut inside a long block may start indented
}


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def _records(path):
    return [json.loads(line) for line in path.read_text().split("\n") if line.strip()]


def test_the_builtin_datasets_are_installed():
    assert set(FORMATS) <= set(locator.list_datasets())


@needs_shared_data
@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_dataset_yields_formatted_texts_reproducibly(name, no_network):
    texts = corpus_texts(name, num_samples=12, seed=3, data_dir=SHARED_DATA)
    assert len(texts) == 12
    for text in texts:
        assert isinstance(text, str) and re.fullmatch(FORMATS[name], text, flags=re.S), text
    again = corpus_texts(name, num_samples=12, seed=3, data_dir=SHARED_DATA)
    other = corpus_texts(name, num_samples=12, seed=4, data_dir=SHARED_DATA)
    assert again == texts
    assert other != texts
    assert len(set(texts)) == len(texts)  # without replacement by default


@needs_shared_data
def test_formats_are_built_from_the_right_fields():
    gsm8k = _records(SHARED_DATA / "gsm8k" / "train.jsonl")
    mmlu = _records(SHARED_DATA / "mmlu" / "val.jsonl")
    race = _records(SHARED_DATA / "race" / "race_1000.jsonl")
    all_gsm8k = corpus_texts("gsm8k", num_samples=len(gsm8k), seed=0, data_dir=SHARED_DATA)
    first = gsm8k[0]
    assert f"Question: {first['question']}\nAnswer: {first['answer']}" in all_gsm8k
    texts = set(corpus_texts("mmlu", num_samples=len(mmlu), seed=0, data_dir=SHARED_DATA))
    record = mmlu[7]
    options = "\n".join(
        f"{letter}. {choice}" for letter, choice in zip("ABCD", record["choices"], strict=True)
    )
    assert f"Question: {record['question']}\n{options}\nAnswer: {record['answer']}" in texts
    # The whole split (a one-split dataset's calibration holds out a fifth for nll:race).
    texts = set(sample_split("race", split=None, num_samples=len(race), data_dir=SHARED_DATA).texts)
    record = race[5]
    options = "\n".join(
        f"{letter}. {option}" for letter, option in zip("ABCD", record["options"], strict=True)
    )
    expected = (
        f"Article: {record['article']}\nQuestion: {record['question']}\n{options}\n"
        f"Answer: {record['answer']}"
    )
    assert expected in texts


@needs_shared_data
def test_default_splits_follow_the_local_copies():
    def split(name):
        return sample_split(name, split=None, num_samples=1, data_dir=SHARED_DATA).split

    assert split("gsm8k") == "train"
    assert split("mmlu") == "validation"  # val.jsonl
    assert split("math") == "test"  # the only split of the local MATH copy
    assert split("race") == "race_1000"
    assert split("wikitext") == "train"  # raw_train_sample.jsonl
    corpus = locator.sample_corpus("gsm8k", num_samples=5, seed=2, data_dir=SHARED_DATA)
    assert corpus.label == "gsm8k:train:n=5:seed=2"
    # A local copy with one split calibrates on the four fifths nll:<dataset> does not hold out.
    math = locator.sample_corpus("math", num_samples=1, data_dir=SHARED_DATA)
    assert math.split == "test-calibration"


@needs_shared_data
def test_sampling_with_and_without_replacement():
    with pytest.raises(LocatorError, match="has 500 records; cannot draw 501 without replacement"):
        sample_split("math500", split=None, num_samples=501, data_dir=SHARED_DATA)
    drawn = corpus_texts("math500", num_samples=600, replace=True, data_dir=SHARED_DATA)
    assert len(drawn) == 600 and len(set(drawn)) < 600
    assert drawn == corpus_texts("math500", num_samples=600, replace=True, data_dir=SHARED_DATA)


@needs_shared_data
def test_a_missing_local_split_names_the_file():
    with pytest.raises(LocatorError) as error:
        corpus_texts("math", split="train", num_samples=5, data_dir=SHARED_DATA)
    message = str(error.value)
    assert "\n" not in message
    assert str(SHARED_DATA / "math" / "train") in message and "holds test.jsonl" in message


def test_a_missing_field_names_the_file_and_field(tmp_path):
    (tmp_path / "gsm8k").mkdir()
    path = tmp_path / "gsm8k" / "train.jsonl"
    path.write_text(json.dumps({"question": "two plus two", "solution": "four"}) + "\n")
    with pytest.raises(LocatorError) as error:
        corpus_texts("gsm8k", num_samples=1, data_dir=tmp_path)
    assert str(path) in str(error.value) and "'answer'" in str(error.value)


def test_parquet_csv_and_single_file_sources(tmp_path):
    import pyarrow
    import pyarrow.parquet

    (tmp_path / "gsm8k").mkdir()
    rows = [{"question": f"q{i}", "answer": f"a{i}\n#### {i}"} for i in range(4)]
    pyarrow.parquet.write_table(
        pyarrow.Table.from_pylist(rows), tmp_path / "gsm8k" / "train.parquet"
    )
    texts = corpus_texts("gsm8k", num_samples=4, data_dir=tmp_path)
    assert sorted(texts) == [f"Question: q{i}\nAnswer: a{i}\n#### {i}" for i in range(4)]

    (tmp_path / "mmlu").mkdir()
    (tmp_path / "mmlu" / "val.csv").write_text(
        'question,choices,answer\n"Which?","[""w"", ""x"", ""y"", ""z""]",C\n'
    )
    assert corpus_texts("mmlu", num_samples=1, data_dir=tmp_path) == [
        "Question: Which?\nA. w\nB. x\nC. y\nD. z\nAnswer: C"
    ]
    single = tmp_path / "my_race.jsonl"
    record = {"article": "Art.", "question": "Q?", "options": ["a", "b", "c", "d"], "answer": 1}
    single.write_text(json.dumps(record) + "\n")
    corpus = locator.sample_corpus("race", num_samples=1, data_dir=single)
    assert corpus.split == "my_race-calibration"  # the file is every split
    assert corpus.texts == ("Article: Art.\nQuestion: Q?\nA. a\nB. b\nC. c\nD. d\nAnswer: B",)


def test_offline_without_data_dir_says_how_to_pass_one(no_network):
    with pytest.raises(LocatorError) as error:
        corpus_texts("gsm8k", num_samples=5)
    message = str(error.value)
    assert "HF_DATASETS_OFFLINE=1" in message and "data_dir=" in message
    assert "--data-dir" in message and "\n" not in message


def test_unknown_dataset_and_bad_sample_counts():
    with pytest.raises(UnknownNameError, match="Did you mean 'gsm8k'"):
        corpus_texts("gsm8", num_samples=5)
    with pytest.raises(LocatorError, match="num_samples must be a positive integer"):
        corpus_texts("python-code", num_samples=0)


def test_python_code_chunks_real_source(tmp_path):
    from locator_plugins.datasets import MAX_CHUNK_CHARS, MIN_CHUNK_CHARS, chunk_source

    import locator.data

    source = Path(locator.data.__file__).read_text()  # real Python, about 13,000 characters
    chunks = chunk_source(source)
    assert len(chunks) > 3
    assert all(MIN_CHUNK_CHARS <= len(c) <= MAX_CHUNK_CHARS and c in source for c in chunks)
    assert chunks[1].startswith(("import", "from", "class", "def", "@", "LOCAL"))
    # A data directory with a python-code folder replaces the standard library.
    (tmp_path / "python-code" / "pkg").mkdir(parents=True)
    (tmp_path / "python-code" / "pkg" / "mod.py").write_text(source)
    local = sample_split("python-code", split=None, num_samples=len(chunks), data_dir=tmp_path)
    assert sorted(local.texts) == sorted(chunks)
    stdlib = corpus_texts("python-code", num_samples=3, seed=1)
    assert all(text not in chunks for text in stdlib)


@needs_shared_data
def test_localize_takes_dataset_names(llama, tokenizer):
    from locator.localization import Localization

    options = {"method": "mathneuro", "proportion": 0.05, "progress": False, "max_length": 32}
    by_name = locator.localize(
        llama, tokenizer, target="gsm8k", controls=["race"], num_samples=4, seed=1,
        data_dir=SHARED_DATA, **options,
    )  # fmt: skip
    texts = [
        corpus_texts(name, num_samples=4, seed=1, data_dir=SHARED_DATA)
        for name in ("gsm8k", "race")
    ]
    by_texts = locator.localize(
        llama, tokenizer, target=texts[0], controls=[texts[1]], seed=1, **options
    )
    assert isinstance(by_name, Localization) and by_name.count() > 0
    assert by_name.jaccard(by_texts) == 1.0
    assert by_name.target == "gsm8k:train:n=4:seed=1"
    assert by_name.controls == ("race:race_1000-calibration:n=4:seed=1",)
    assert by_texts.target == "target"


def test_hub_records_format_like_local_ones(monkeypatch, tmp_path):
    """The hub path (the network replaced by in-memory hub-layout datasets) gives the same
    texts as local files in their own layout."""
    import datasets

    calls = []
    hub = {
        ("cais/mmlu", "all"): [
            {"question": "Which?", "subject": "x", "choices": ["w", "x", "y", "z"], "answer": 2}
        ],
    }

    def load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        rows = hub.get((path, name)) or [{"problem": f"{name}?", "solution": "\\boxed{1}"}]
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    (tmp_path / "mmlu").mkdir()
    local = {"question": "Which?", "subject": "x", "choices": ["w", "x", "y", "z"], "answer": "C"}
    (tmp_path / "mmlu" / "val.jsonl").write_text(json.dumps(local) + "\n")
    from_hub = corpus_texts("mmlu", num_samples=1)
    assert from_hub == corpus_texts("mmlu", num_samples=1, data_dir=tmp_path)
    assert calls == [("cais/mmlu", "all", "validation")]
    texts = corpus_texts("math", split="test", num_samples=7)
    assert len(calls) == 8 and {call[0] for call in calls[1:]} == {"EleutherAI/hendrycks_math"}
    assert sorted(texts)[0] == "Problem: algebra?\nSolution: \\boxed{1}"
