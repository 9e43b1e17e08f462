"""Calibration texts through a chat template: dataset records as (user, assistant) turns,
rendered once the tokenizer is known (`render_chat`), from the CLI and from suites."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import locator
from locator.bench import runner
from locator.bench.suite import parse_suite
from locator.cli import cli
from locator.data import CalibrationOptions, render_chat
from locator.provenance import texts_hash
from locator.testing import tiny_tokenizer

TEMPLATE = "<s>{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }}\n{% endfor %}"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "gsm8k").mkdir()
    records = [{"question": f"the cat sees {i}", "answer": f"the dog {i}"} for i in range(4)]
    (root / "gsm8k" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


@pytest.fixture(scope="module")
def chat_tokenizer():
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = TEMPLATE
    return tokenizer


def test_records_become_user_and_assistant_turns(data_dir, chat_tokenizer):
    corpus = locator.sample_corpus("gsm8k", num_samples=2, seed=0, data_dir=data_dir)
    rendered = render_chat(chat_tokenizer, corpus)
    for plain, text in zip(corpus.texts, rendered.texts, strict=True):
        question, answer = plain.removeprefix("Question: ").split("\nAnswer: ")
        # the template's BOS is dropped: the tokenizer adds its own
        assert text == f"<user> {question}\n<assistant> {answer}\n"
    assert rendered.label == corpus.label + ":chat"
    assert render_chat(chat_tokenizer, rendered) is rendered  # rendered once only
    assert render_chat(chat_tokenizer, ["plain text"]) == ["<user> plain text\n"]


def test_a_tokenizer_without_a_template_is_refused(data_dir, tokenizer):
    corpus = locator.sample_corpus("gsm8k", num_samples=2, seed=0, data_dir=data_dir)
    with pytest.raises(locator.LocatorError, match="has no chat template"):
        render_chat(tokenizer, corpus)


def test_cli_localize_with_chat_template_needs_one(saved_model, data_dir, tmp_path):
    out = tmp_path / "m.safetensors"
    arguments = ["localize", "--model", str(saved_model), "--method", "random", "--target"]
    arguments += ["gsm8k", "--proportion", "0.1", "--num-samples", "2", "--out", str(out)]
    result = CliRunner().invoke(cli, [*arguments, "--data-dir", str(data_dir), "--chat-template"])
    assert result.exit_code == 2 and "has no chat template" in result.output
    assert not out.exists()


def test_localize_takes_the_calibration_options_as_one_object(llama, data_dir, chat_tokenizer):
    """`calibration=` equals the keywords it replaces, and adds the chat template (the texts the
    CLI's --chat-template reads)."""
    common = {"method": "wanda", "target": "gsm8k", "proportion": 0.1, "data_dir": data_dir}
    common["progress"] = False
    by_keywords = locator.localize(llama, chat_tokenizer, num_samples=2, max_length=8, **common)
    options = CalibrationOptions(num_samples=2, max_length=8)
    by_object = locator.localize(llama, chat_tokenizer, calibration=options, **common)
    assert by_object.content_hash() == by_keywords.content_hash()
    assert by_object.provenance["max_length"] == 8
    chat = CalibrationOptions(num_samples=2, chat_template=True)
    found = locator.localize(llama, chat_tokenizer, calibration=chat, **common)
    drawn = locator.sample_corpus("gsm8k", num_samples=2, seed=0, data_dir=data_dir)
    rendered = render_chat(chat_tokenizer, drawn)
    assert found.target == rendered.label
    assert found.provenance["corpora"][0]["sha256"] == texts_hash(rendered.texts)
    with pytest.raises(locator.LocatorError, match="either as calibration= or as keywords"):
        locator.localize(llama, chat_tokenizer, calibration=options, batch_size=2, **common)


def test_suite_chat_template_is_checked_and_changes_the_selection():
    from tests.unit.test_bench import VALID, _suite

    plain = runner.plan(_suite())
    chat = runner.plan(_suite(calibration=CalibrationOptions(chat_template=True)))
    assert {c.selection_key for c in plain}.isdisjoint(c.selection_key for c in chat)
    with pytest.raises(locator.LocatorError, match="chat_template: must be true or false"):
        parse_suite({**VALID, "chat_template": "yes"}, Path("/suites/s.toml"))


def test_task_prompt_options_enter_the_hash_only_when_set():
    from locator.bench.suite import TaskSpec
    from tests.unit.test_bench import _suite

    assert TaskSpec(name="race", limit=3).identity() == ["race", 3, None]
    fewshot = TaskSpec(name="race", num_fewshot=2, apply_chat_template=True)
    assert fewshot.identity() == [
        "race",
        None,
        None,
        {"num_fewshot": 2, "apply_chat_template": True},
    ]
    # The task's identity names its part files: a prompt option set makes another part.
    plain = {part for c in runner.plan(_suite()) for part in c.parts.values()}
    changed = _suite(tasks=(TaskSpec(name="gsm8k", limit=5), TaskSpec(name="race", num_fewshot=2)))
    parts = {c.parts["race"] for c in runner.plan(changed)}
    assert plain.isdisjoint(parts)
