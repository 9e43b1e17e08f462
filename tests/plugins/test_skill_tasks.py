"""Locator's skill tasks and lm-eval's wikitext through real lm-eval on a tiny model and a tiny
data folder; NLL against a direct computation; lm-eval options; per-item scores in the bench
and the CLI."""

import json

import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

import locator
from locator import LocatorError
from locator.bench import results
from locator.cli import cli
from locator.evaluation import Evaluation, check_evaluation, evaluate_to_file, run_evaluation
from locator.testing import tiny_tokenizer
from tests.conftest import suite_toml

SENTENCES = [
    "the cat sees the dog and the dog sees the cat",
    "one plus two equals three and two times four is eight",
    "the small bird eats the red apple in the garden",
    "a big dog runs to the house and the cat sleeps",
]
PYTHON_SOURCE = '''
def add(first, second):
    """Return the sum of two numbers, checking that both are numbers first."""
    if not isinstance(first, (int, float)) or not isinstance(second, (int, float)):
        raise TypeError("add() takes two numbers")
    return first + second


def sub(first, second):
    """Return the difference of two numbers, checking that both are numbers first."""
    if not isinstance(first, (int, float)) or not isinstance(second, (int, float)):
        raise TypeError("sub() takes two numbers")
    return first - second
'''


def _jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A tiny data folder in the shared data's layout (short texts: the tiny model has 128
    positions)."""
    root = tmp_path_factory.mktemp("data")
    s = SENTENCES
    _jsonl(
        root / "gsm8k" / "test.jsonl",
        [{"question": s[i], "answer": s[(i + 1) % 4] + "\n#### 3"} for i in range(4)],
    )
    _jsonl(
        root / "math" / "test.jsonl",
        [{"problem": s[i], "solution": s[(i + 2) % 4], "type": "Algebra"} for i in range(4)],
    )
    _jsonl(
        root / "race" / "test.jsonl",
        [
            {
                "example_id": f"middle{i}.txt",
                "article": s[i],
                "question": "what ?",
                "options": ["a", "b", "c", "d"],
                "answer": "A",
            }
            for i in range(4)
        ],
    )
    _jsonl(root / "wikitext2" / "raw_train_sample.jsonl", [{"text": f" {t} \n"} for t in s])
    for name in ("tokenized_test", "tokenized_valid"):
        lines = [" = First = ", f" {s[0]} ", " = = Part = = ", f" {s[1]} "]
        lines += [" = Second = ", f" {s[2]} <unk> "]
        _jsonl(root / "wikitext2" / f"{name}.jsonl", [{"text": t} for t in lines])
    (root / "python-code").mkdir()
    for name in ("one", "two", "three"):
        (root / "python-code" / f"{name}.py").write_text(PYTHON_SOURCE.replace("first", name))
    return root


def _run(model, tokenizer, tasks, data_dir, **options):
    request = check_evaluation(tasks, data_dir=data_dir, log_samples=True, **options)
    return run_evaluation(model, tokenizer, request)


def _only(evaluation, task):
    """The part of an evaluation of several tasks that is `task`'s."""
    return Evaluation(
        metrics={task: evaluation.metrics[task]},
        higher_is_better={task: evaluation.higher_is_better[task]},
        items=tuple(item for item in evaluation.items if item.task == task),
        samples={task: evaluation.samples[task]},
    )


def _weighted_means(evaluation):
    sums = {}
    for item in evaluation.items:
        total, weight = sums.get((item.task, item.metric), (0.0, 0.0))
        sums[(item.task, item.metric)] = (total + item.value * item.weight, weight + item.weight)
    return {key: total / weight for key, (total, weight) in sums.items()}


@pytest.fixture(scope="module")
def nll(llama, tokenizer, data_dir):
    """Every NLL task scored once, in one request (3 items each)."""
    tasks = ["gsm8k_nll", "math_nll", "wikitext_nll", "race_nll", "python_nll"]
    evaluation = _run(llama, tokenizer, tasks, data_dir, limit=3)
    return {task: _only(evaluation, task) for task in tasks}


def _logprob(model, ids, scored_from):
    """Sum of log p(ids[i] | ids[:i]) for i >= scored_from, in float64."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(float(logprobs[i - 1, ids[i]]) for i in range(scored_from, len(ids)))


def test_nll_tasks_report_per_token_and_per_byte_nll(nll):
    for task, evaluation in nll.items():
        metrics = evaluation.metrics[task]
        assert set(metrics) == {"nll_per_token", "nll_per_byte"}, task
        assert 0 < metrics["nll_per_byte"] < metrics["nll_per_token"] < 10
        assert evaluation.higher_is_better[task] == {
            "nll_per_token": False,
            "nll_per_byte": False,
        }
        assert {item.item for item in evaluation.items} == {0, 1, 2}
        for (item_task, metric), mean in _weighted_means(evaluation).items():
            assert item_task == task
            assert mean == pytest.approx(metrics[metric], rel=1e-9)


def test_gsm8k_nll_is_the_solution_nll_per_token(nll, llama, tokenizer):
    """Each item's value against a direct float64 computation from the logits."""
    evaluation = nll["gsm8k_nll"]
    contexts = [r["arguments"][0][0] for r in evaluation.samples["gsm8k_nll"]]
    targets = [r["arguments"][0][1] for r in evaluation.samples["gsm8k_nll"]]
    items = [i for i in evaluation.items if i.metric == "nll_per_token"]
    for context, target, item in zip(contexts, targets, items, strict=True):
        assert context.startswith("Question: ") and context.endswith("\nAnswer:")
        assert target.startswith(" ") and target.endswith("#### 3")
        # lm-eval encodes as the tokenizer does by default (the tiny one adds a BOS token)
        context_ids = tokenizer(context)["input_ids"]
        ids = tokenizer(context + target)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id
        count = len(ids) - len(context_ids)
        assert item.weight == count
        expected = -_logprob(llama, ids, len(context_ids)) / count
        assert item.value == pytest.approx(expected, rel=1e-5)


def test_rolling_nll_scores_every_token_after_the_prefix(nll, llama, tokenizer):
    evaluation = nll["wikitext_nll"]
    for record, item in zip(
        evaluation.samples["wikitext_nll"],
        [i for i in evaluation.items if i.metric == "nll_per_token"],
        strict=True,
    ):
        text = record["arguments"][0][0]
        ids = [tokenizer.bos_token_id] + tokenizer(text)["input_ids"]  # prefix, then BOS text
        assert item.weight == len(ids) - 1
        assert item.value == pytest.approx(-_logprob(llama, ids, 1) / (len(ids) - 1), rel=1e-5)


def test_items_come_in_a_fixed_seeded_order(llama, tokenizer, data_dir, nll):
    again = _run(llama, tokenizer, ["race_nll"], data_dir, limit=3)
    assert again.items == nll["race_nll"].items
    articles = {r["arguments"][0][0] for r in nll["race_nll"].samples["race_nll"]}
    assert len(articles) == 3 and articles <= set(SENTENCES)


def test_arithmetic_fewshot_is_five_shot_greedy_exact_match(llama, tokenizer, data_dir):
    evaluation = _run(llama, tokenizer, ["arithmetic_fewshot"], None, limit=4)
    assert set(evaluation.metrics["arithmetic_fewshot"]) >= {"exact_match"}
    assert 0 <= evaluation.metrics["arithmetic_fewshot"]["exact_match"] <= 1
    assert evaluation.higher_is_better["arithmetic_fewshot"]["exact_match"] is True
    record = evaluation.samples["arithmetic_fewshot"][0]
    prompt, generation = record["arguments"][0]
    assert prompt.count("Q: ") == 6 and prompt.endswith(" =\nA:")
    assert "\nA: " in prompt.split("\n\n")[0]
    assert generation["until"] == ["\n"] and generation["max_gen_toks"] == 8
    assert len(evaluation.items) == 4 and {i.weight for i in evaluation.items} == {1.0}
    two_shot = _run(llama, tokenizer, ["arithmetic_fewshot"], None, limit=1, num_fewshot=2)
    assert two_shot.samples["arithmetic_fewshot"][0]["arguments"][0][0].count("Q: ") == 3


def test_lm_eval_wikitext_reads_local_articles(llama, tokenizer, data_dir):
    evaluation = _run(llama, tokenizer, ["wikitext"], data_dir)
    metrics = evaluation.metrics["wikitext"]
    assert {"word_perplexity", "byte_perplexity", "bits_per_byte"} <= set(metrics)
    pages = [r["doc"]["page"] for r in evaluation.samples["wikitext"]]
    assert len(pages) == 2 and pages[0].startswith(" = First = \n") and "= = Part" in pages[0]
    (mean,) = _weighted_means(evaluation).values()  # only bits_per_byte is a weighted mean
    assert mean == pytest.approx(metrics["bits_per_byte"], rel=1e-9)
    assert metrics["byte_perplexity"] == pytest.approx(2 ** metrics["bits_per_byte"], rel=1e-9)


CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def test_chat_template_and_system_instruction_reach_the_prompt(llama, data_dir):
    chat = tiny_tokenizer()
    chat.chat_template = CHAT_TEMPLATE
    evaluation = _run(
        llama,
        chat,
        ["arithmetic_fewshot"],
        None,
        limit=1,
        apply_chat_template=True,
        fewshot_as_multiturn=True,
        system_instruction="answer with a number",
    )
    prompt = evaluation.samples["arithmetic_fewshot"][0]["arguments"][0][0]
    assert prompt.startswith("<system> answer with a number\n<user> Q: ")
    assert prompt.count("<assistant>") == 6  # five answered turns, then the generation prompt


def test_missing_datasets_plugin_is_named(llama, tokenizer, data_dir):
    from locator_plugins import datasets

    from locator.plugins import register_plugin, unregister_plugin

    unregister_plugin("datasets")
    try:
        with pytest.raises(LocatorError, match="built-in 'datasets' plugin, which is not loaded"):
            locator.evaluate(llama, tokenizer, ["gsm8k_nll"], data_dir=data_dir, limit=1)
    finally:
        register_plugin(datasets, name="datasets")


def test_bench_writes_per_item_scores_whose_weighted_mean_is_the_metric(
    saved_model, data_dir, tmp_path
):
    suite = tmp_path / "skills.toml"
    text = suite_toml(
        saved_model, target="gsm8k", controls=["race"], data_dir=data_dir, proportions=[0.2],
        factors=[0.0], seeds=[0], num_samples=[4],
        with_replacement=True,  # the one-split local gsm8k calibrates on what nll:gsm8k leaves
        max_length=48, eval_batch_size="auto", matched_baseline=False,
        methods=[{"name": "mathneuro"}],
        tasks=[
            {"name": "gsm8k_nll", "limit": 3},
            {"name": "arithmetic_fewshot", "limit": 2, "num_fewshot": 1},
        ],
    )  # fmt: skip
    suite.write_text(text)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["bench", str(suite), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = results.read_results(out).to_pylist()
    assert {(r["task"], r["metric"], r["higher_is_better"]) for r in rows} == {
        ("gsm8k_nll", "nll_per_token", False),
        ("gsm8k_nll", "nll_per_byte", False),
        ("arithmetic_fewshot", "exact_match", True),
        ("arithmetic_fewshot", "exact_match_stderr", None),
    }
    (config_hash,) = {r["config_hash"] for r in rows}
    baselines = sorted((out / "_samples").glob("baseline-*.parquet"))
    edited = sorted((out / "_samples").glob(f"{config_hash}-*.parquet"))  # one per task
    assert len(baselines) == 2 and len(edited) == 2
    for path, column in [(path, "value") for path in edited] + [
        (path, "baseline_value") for path in baselines
    ]:
        table = pq.read_table(path)
        assert table.schema.names == results.SAMPLES_SCHEMA.names
        assert table.schema.types == results.SAMPLES_SCHEMA.types
        samples = table.to_pylist()
        expected = "baseline" if column == "baseline_value" else config_hash
        assert {s["config_hash"] for s in samples} == {expected}
        for row in rows:
            mine = [s for s in samples if (s["task"], s["metric"]) == (row["task"], row["metric"])]
            if not mine:
                continue
            mean = sum(s["value"] * s["weight"] for s in mine) / sum(s["weight"] for s in mine)
            assert mean == pytest.approx(row[column], rel=1e-9)
            assert len(mine) == {"gsm8k_nll": 3, "arithmetic_fewshot": 2}[row["task"]]


def test_cli_writes_metrics_and_per_item_records(saved_model, data_dir, tmp_path):
    output = tmp_path / "metrics.json"
    arguments = ["evaluate", "--model", str(saved_model), "--task", "gsm8k_nll"]
    arguments += ["--data-dir", str(data_dir), "--limit", "2", "--batch-size", "auto"]
    result = CliRunner().invoke(cli, [*arguments, "--log-samples", "--output", str(output)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(output.read_text())
    assert set(metrics["gsm8k_nll"]) == {"nll_per_token", "nll_per_byte"}
    records = [json.loads(line) for line in (tmp_path / "metrics.samples.jsonl").open()]
    assert [r["doc_id"] for r in records] == [0, 1] and records[0]["task"] == "gsm8k_nll"
    tokens = sum(r["nll_per_token"][1] for r in records)
    total = sum(r["nll_per_token"][0] for r in records)
    assert total / tokens == pytest.approx(metrics["gsm8k_nll"]["nll_per_token"], rel=1e-9)
    again = CliRunner().invoke(cli, [*arguments, "--output", str(output)])
    assert again.exit_code == 2 and "exists" in again.output
    # The CLI only prints what the library call writes: the same files from Python.
    options = dict(data_dir=data_dir, limit=2, batch_size="auto", log_samples=True)
    mine = tmp_path / "python" / "metrics.json"
    mine.parent.mkdir()
    evaluation, found, paths = evaluate_to_file(
        locator.ModelOptions(path=str(saved_model)), check_evaluation("gsm8k_nll", **options), mine
    )
    assert found is None and paths == [mine, mine.with_name("metrics.samples.jsonl")]
    assert evaluation.metrics == metrics
    for path, theirs in zip(paths, [output, tmp_path / "metrics.samples.jsonl"], strict=True):
        assert path.read_bytes() == theirs.read_bytes()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--log-samples"], "give --output PATH too"),
        (["--apply-chat-template"], "has no chat template"),
        (["--batch-size", "many"], "batch_size must be a positive integer or 'auto'"),
        (["--fewshot-as-multiturn"], "needs apply_chat_template"),
    ],
)
def test_cli_bad_evaluation_options_fail_in_one_line(saved_model, data_dir, extra, message):
    arguments = ["evaluate", "--model", str(saved_model), "--task", "gsm8k_nll"]
    result = CliRunner().invoke(cli, [*arguments, "--data-dir", str(data_dir), *extra])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0]  # (a loaded model's progress bar aside)
