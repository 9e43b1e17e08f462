"""Any lm-eval task as a skill: calibration texts are its documents rendered as the task
presents an answered example, from a split it does not evaluate; a task with no such split is
one line, exit 2, before the model loads. Offline, with local-JSON lm-eval tasks."""

import json

import pytest

import locator
from locator import LocatorError
from locator.corpora import corpus_kind, sample_any_corpus

DOCS = [
    {
        "question": f"what is {i} plus {i}",
        "answer": str(2 * i),
        "options": ["yes", "no"],
        "label": i % 2,
    }
    for i in range(12)
]
GENERATE = """task: toy_sums
dataset_path: json
dataset_kwargs:
  data_files:
    train: {root}/train.jsonl
    test: {root}/test.jsonl
output_type: generate_until
training_split: train
test_split: test
description: "Add the numbers.\\n\\n"
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""
CHOICE = """task: toy_choice
dataset_path: json
dataset_kwargs:
  data_files:
    {splits}
output_type: multiple_choice
{split_keys}
doc_to_text: "Q: {{{{question}}}}?\\nA:"
doc_to_target: label
doc_to_choice: options
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    """Three local-JSON lm-eval tasks: generation with a train split, multiple choice with a
    validation split, multiple choice with only the evaluated test split."""
    root = tmp_path_factory.mktemp("task")
    for split, docs in (("train", DOCS[:8]), ("validation", DOCS[:6]), ("test", DOCS[8:])):
        (root / f"{split}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "generate.yaml").write_text(GENERATE.format(root=root))
    (root / "choice.yaml").write_text(
        CHOICE.format(
            splits=f"validation: {root}/validation.jsonl\n    test: {root}/test.jsonl",
            split_keys="validation_split: validation\ntest_split: test",
        )
    )
    (root / "test_only.yaml").write_text(
        CHOICE.format(splits=f"test: {root}/test.jsonl", split_keys="test_split: test")
    )
    return root


def test_a_task_corpus_is_its_training_documents_as_the_task_presents_them(tasks):
    corpus = sample_any_corpus(f"task:{tasks}/generate.yaml", num_samples=8)
    assert corpus.split == "train" and corpus.label.startswith(f"task:{tasks}/generate.yaml:train:")
    expected = {f"Add the numbers.\n\nQ: {d['question']}\nA: {d['answer']}" for d in DOCS[:8]}
    assert set(corpus.texts) == expected  # all 8 training documents, none of the test split
    for text, (user, assistant) in zip(corpus.texts, corpus.turns, strict=True):
        assert text == f"{user} {assistant}" and user.endswith("\nA:")
    assert corpus_kind(f"task:{tasks}/generate.yaml") == "task"


def test_multiple_choice_renders_the_correct_choice_from_the_validation_split(tasks):
    corpus = sample_any_corpus(f"task:{tasks}/choice.yaml", num_samples=6)
    assert corpus.split == "validation"
    expected = {f"Q: {d['question']}?\nA: {d['options'][d['label']]}" for d in DOCS[:6]}
    assert set(corpus.texts) == expected


def test_a_task_corpus_calibrates_a_localization(tasks, llama, tokenizer):
    target = sample_any_corpus(f"task:{tasks}/generate.yaml", num_samples=4)
    control = sample_any_corpus(f"task:{tasks}/choice.yaml", num_samples=4)
    found = locator.localize(
        llama, tokenizer, method="mathneuro", target=target, controls=[control],
        proportion=0.05, progress=False,
    )  # fmt: skip
    assert found.target == target.label and found.count() > 0


def test_no_split_left_for_calibration_is_one_line(tasks):
    with pytest.raises(LocatorError, match="toy_choice' has no split left for calibration") as e:
        sample_any_corpus(f"task:{tasks}/test_only.yaml", num_samples=2)
    assert "\n" not in str(e.value) and "evaluates split 'test'" in str(e.value)
    with pytest.raises(LocatorError, match="names no task"):
        sample_any_corpus("task:", num_samples=2)
    with pytest.raises(LocatorError, match="has 8 texts for calibration; cannot draw 9"):
        sample_any_corpus(f"task:{tasks}/generate.yaml", num_samples=9)


def test_the_task_itself_evaluates_the_skill(tasks, llama, tokenizer):
    results = locator.evaluate(llama, tokenizer, f"{tasks}/choice.yaml")
    assert 0.0 <= results[f"{tasks}/choice.yaml"]["acc"] <= 1.0


def test_unknown_task_has_a_did_you_mean():
    with pytest.raises(LocatorError, match="Did you mean 'gsm8k_nll'"):
        sample_any_corpus("task:gsm8k_nl", num_samples=2)


def test_check_corpus_fails_before_any_model_loads(tasks, tmp_path):
    from locator.corpora import check_corpus

    check_corpus(f"task:{tasks}/generate.yaml")
    with pytest.raises(LocatorError, match="no split left for calibration"):
        check_corpus(f"task:{tasks}/test_only.yaml")
    with pytest.raises(LocatorError, match="Did you mean 'gsm8k'"):
        check_corpus("gsm8")
    with pytest.raises(LocatorError, match="does not exist"):
        check_corpus(str(tmp_path / "missing.jsonl"))


def test_each_corpus_names_the_task_that_measures_it():
    from locator.corpora import evaluation_task

    assert evaluation_task("task:gsm8k_cot") == "gsm8k_cot"
    assert evaluation_task("handbook-fr") == "nll:handbook-fr"
    assert evaluation_task("data/texts.jsonl") == "nll:data/texts.jsonl"
