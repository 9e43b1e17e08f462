"""Languages and held-out NLL: the ``handbook-<lang>`` datasets read the shared handbook files,
``nll:<corpus>`` scores the held-out texts of a dataset or a JSON Lines file (never a text
calibration may draw), through the Python API and the CLI; bad corpora fail in one line."""

import json
from collections import Counter

import pytest
import torch
from click.testing import CliRunner

import locator
from locator import LocatorError
from locator.cli import cli
from locator.data import get_dataset, read_records, sample_corpus
from locator.evaluation import check_evaluation, run_evaluation
from locator.heldout import (
    HeldOutPart,
    calibration_texts,
    held_out_part,
    held_out_texts,
    is_held_out,
)
from tests.conftest import SHARED_DATA

needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason="the shared local dataset copies are absent"
)
LAPE_LANGUAGES = ("en", "zh", "fr", "es", "vi", "id", "ja")
SENTENCES = [f"the cat number {i} sees the dog and the bird in the garden" for i in range(40)]


def _jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def texts_file(tmp_path_factory):
    return _jsonl(
        tmp_path_factory.mktemp("texts") / "texts.jsonl", [{"text": s} for s in SENTENCES]
    )


def test_every_language_is_a_dataset_with_an_nll_task():
    for code in (*LAPE_LANGUAGES, "de", "it", "pt", "ru", "ar"):
        dataset = get_dataset(f"handbook-{code}")
        assert dataset.splits == ("train", "test") and dataset.calibration_split == "train"
        assert dataset.task == f"nll:handbook-{code}"
        assert "openlanguagedata/flores_plus" in dataset.source()
    assert get_dataset("handbook-zh").hub_config == "cmn_Hans"


def test_the_hub_is_flores_plus_and_offline_says_how_to_read_local_files():
    with pytest.raises(LocatorError, match="flores_plus from the hub.*data_dir") as error:
        sample_corpus("handbook-fr", num_samples=2)
    assert "\n" not in str(error.value)


@needs_shared_data
def test_a_language_calibrates_on_train_paragraphs():
    corpus = sample_corpus("handbook-ja", num_samples=5, data_dir=SHARED_DATA)
    train = {r["text"].strip() for r in read_records(SHARED_DATA / "handbook/ja/train.jsonl")}
    assert corpus.label == "handbook-ja:train:n=5:seed=0"
    assert set(corpus.texts) <= train


@needs_shared_data
def test_a_dataset_is_held_out_by_its_test_split_and_one_split_by_hash():
    assert held_out_part(get_dataset("handbook-fr"), SHARED_DATA) == HeldOutPart(
        split="test", hashed=False
    )
    assert held_out_part(get_dataset("gsm8k"), None) == HeldOutPart(split="test", hashed=False)
    assert held_out_part(get_dataset("mmlu"), None) == HeldOutPart(split="test", hashed=False)
    # the shared MATH-500 has one split: calibration and evaluation share it, by a hash
    math500 = get_dataset("math500")
    assert held_out_part(math500, SHARED_DATA) == HeldOutPart(split="test", hashed=True)
    held_out = held_out_texts("math500", SHARED_DATA)
    texts = [math500.format(r) for r in math500.records("test", SHARED_DATA)]
    calibration = [text for text in texts if not is_held_out(text)]
    assert len(held_out) + len(calibration) == 500
    assert not set(held_out) & set(calibration)
    assert 0.15 < len(held_out) / 500 < 0.25


@needs_shared_data
def test_the_hash_holds_out_about_a_fifth_whatever_the_language():
    for code in LAPE_LANGUAGES:
        texts = [r["text"] for r in read_records(SHARED_DATA / f"handbook/{code}/train.jsonl")]
        share = sum(map(is_held_out, texts)) / len(texts)
        assert 0.15 < share < 0.25, code


def test_a_file_splits_into_calibration_and_held_out_texts(texts_file):
    held_out = held_out_texts(str(texts_file))
    calibration = calibration_texts(texts_file)
    assert sorted(held_out + calibration) == sorted(SENTENCES)
    assert held_out and not set(held_out) & set(calibration)
    assert held_out == [s for s in SENTENCES if is_held_out(s)]  # file order, by text alone
    reordered = _jsonl(
        texts_file.with_name("reordered.jsonl"), [{"text": s} for s in SENTENCES[::-1]]
    )
    assert held_out_texts(str(reordered)) == held_out[::-1]


def _logprob(model, ids):
    """Sum of log p(ids[i] | ids[:i]) for i >= 1, in float64."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(float(logprobs[i - 1, ids[i]]) for i in range(1, len(ids)))


def test_nll_of_a_file_scores_its_held_out_texts(llama, tokenizer, texts_file):
    task = f"nll:{texts_file}"
    evaluation = run_evaluation(llama, tokenizer, check_evaluation([task], log_samples=True))
    scored = [record["arguments"][0][0] for record in evaluation.samples[task]]
    assert sorted(scored) == sorted(held_out_texts(str(texts_file)))
    assert evaluation.higher_is_better[task] == {"nll_per_token": False, "nll_per_byte": False}
    nll = tokens = 0.0
    for text in scored:
        ids = [tokenizer.bos_token_id] + tokenizer(text)["input_ids"]  # rolling: BOS prefix
        nll, tokens = nll - _logprob(llama, ids), tokens + len(ids) - 1
    assert evaluation.metrics[task]["nll_per_token"] == pytest.approx(nll / tokens, rel=1e-5)
    total_bytes = sum(len(text.encode("utf-8")) for text in scored)
    assert evaluation.metrics[task]["nll_per_byte"] == pytest.approx(nll / total_bytes, rel=1e-5)


@needs_shared_data
def test_nll_of_a_language_scores_test_paragraphs(llama, tokenizer):
    evaluation = run_evaluation(
        llama,
        tokenizer,
        check_evaluation(["nll:handbook-vi"], data_dir=SHARED_DATA, limit=3, log_samples=True),
    )
    scored = [record["arguments"][0][0] for record in evaluation.samples["nll:handbook-vi"]]
    test = {r["text"].strip() for r in read_records(SHARED_DATA / "handbook/vi/test.jsonl")}
    train = {r["text"].strip() for r in read_records(SHARED_DATA / "handbook/vi/train.jsonl")}
    assert len(scored) == 3 and set(scored) <= test and not set(scored) & train
    metrics = evaluation.metrics["nll:handbook-vi"]
    assert 0 < metrics["nll_per_byte"] < metrics["nll_per_token"]
    same = locator.evaluate(llama, tokenizer, "nll:handbook-vi", data_dir=SHARED_DATA, limit=3)
    assert same["nll:handbook-vi"] == metrics


def test_the_cli_measures_the_nll_of_a_jsonl_file(saved_model, texts_file):
    argv = ["evaluate", "--model", str(saved_model), "--task", f"nll:{texts_file}", "--json"]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 0, result.output
    results = json.loads(result.output[result.output.index("{") :])
    assert set(results[f"nll:{texts_file}"]) == {"nll_per_token", "nll_per_byte"}


def test_nll_task_names_are_listed_for_did_you_mean():
    assert "nll:handbook-fr" in locator.list_tasks()
    with pytest.raises(LocatorError, match="Did you mean 'handbook-fr'"):
        check_evaluation(["nll:handbok-fr"])


@pytest.mark.parametrize(
    "corpus, message",
    [
        ("", "names no corpus: write nll:<dataset> or nll:<file.jsonl>"),
        ("/no/such/texts.jsonl", "does not exist"),
        ("TINY", "has no held-out texts"),
    ],
)
def test_a_corpus_without_held_out_texts_fails_in_one_line_before_the_model(
    tmp_path, corpus, message
):
    if corpus == "TINY":
        kept = [s for s in SENTENCES if not is_held_out(s)][:3]
        corpus = str(_jsonl(tmp_path / "tiny.jsonl", [{"text": s} for s in kept]))
    argv = ["evaluate", "--model", str(tmp_path / "no-model"), "--task", f"nll:{corpus}"]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.strip().count("\n") == 0


def test_the_share_of_held_out_texts_is_a_fifth_of_any_texts():
    counts = Counter(is_held_out(f"text number {i}") for i in range(5000))
    assert 900 < counts[True] < 1100


def test_any_corpus_calibrates_apart_from_its_held_out_texts(texts_file):
    from locator.corpora import corpus_kind, sample_any_corpus

    assert corpus_kind(str(texts_file)) == "file" and corpus_kind("gsm8k") == "dataset"
    every = calibration_texts(texts_file)
    drawn = sample_any_corpus(str(texts_file), num_samples=len(every))
    assert sorted(drawn.texts) == sorted(every) and drawn.split == "calibration"


@needs_shared_data
def test_a_one_split_dataset_calibrates_on_the_other_four_fifths():
    from locator.corpora import sample_any_corpus

    math500 = get_dataset("math500")
    corpus = sample_any_corpus("math500", num_samples=380, data_dir=SHARED_DATA)
    assert corpus.label == "math500:test-calibration:n=380:seed=0"
    assert not set(corpus.texts) & set(held_out_texts("math500", SHARED_DATA))
    assert set(corpus.texts) <= {math500.format(r) for r in math500.records("test", SHARED_DATA)}
    with pytest.raises(LocatorError, match="less its held-out fifth\\) has \\d+ texts"):
        sample_any_corpus("math500", num_samples=450, data_dir=SHARED_DATA)
    same = sample_any_corpus("handbook-fr", num_samples=3, data_dir=SHARED_DATA)
    assert same == sample_corpus("handbook-fr", num_samples=3, data_dir=SHARED_DATA)
