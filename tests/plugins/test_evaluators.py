"""Evaluation: lm-eval on the in-memory tiny model, from local files, offline, edits visible."""

import socket
import textwrap
from typing import ClassVar

import pytest
import torch

import locator
from locator import LocatorError
from locator.evaluation import EvaluationRequest, Evaluator, UnknownTaskError, evaluators
from tests.conftest import SHARED_DATA

needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason="the shared local dataset copies are absent"
)


class _NoNetwork:
    """Any attempt to open a connection raises (and is recorded)."""

    def __enter__(self):
        self.attempts = []
        self.saved = socket.socket.connect, socket.socket.connect_ex

        def refuse(sock, address, *args):
            self.attempts.append(address)
            raise OSError("network access attempted in a test")

        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        return self

    def __exit__(self, *exc):
        socket.socket.connect, socket.socket.connect_ex = self.saved


@pytest.fixture(scope="module")
def standard(llama, tokenizer):
    """gsm8k, mmlu and race from the shared local copies, with no network allowed."""
    if not SHARED_DATA.is_dir():
        pytest.skip("the shared local dataset copies are absent")
    from locator.evaluation import check_evaluation, run_evaluation

    with _NoNetwork() as guard:
        request = check_evaluation(
            ["gsm8k", "mmlu", "race"],
            limit=2,
            data_dir=SHARED_DATA,
            batch_size=8,
            max_new_tokens=4,
            log_samples=True,
        )
        evaluation = run_evaluation(llama, tokenizer, request)
    return evaluation, guard.attempts


def test_standard_tasks_return_numbers_offline(standard):
    evaluation, attempts = standard
    results = evaluation.metrics
    assert attempts == []
    assert list(results) == ["gsm8k", "mmlu", "race"]
    assert 0.0 <= results["gsm8k"]["exact_match,strict-match"] <= 1.0
    assert 0.0 <= results["gsm8k"]["exact_match,flexible-extract"] <= 1.0
    for task in ("mmlu", "race"):
        assert 0.0 <= results[task]["acc"] <= 1.0
        assert results[task]["acc_stderr"] >= 0.0
    for metrics in results.values():
        assert all(isinstance(value, float) for value in metrics.values())


LOGLIKELIHOOD_TASK = """
task: tiny_continuations
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: loglikelihood
test_split: test
doc_to_text: "{{{{context}}}}"
doc_to_target: "{{{{continuation}}}}"
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
"""


@pytest.fixture(scope="module")
def custom_task(tmp_path_factory):
    """An lm-eval YAML task on a local JSON Lines file, with a continuous metric."""
    folder = tmp_path_factory.mktemp("task")
    data = folder / "continuations.jsonl"
    data.write_text(
        '{"context": "one plus two equals", "continuation": " three"}\n'
        '{"context": "the cat sees the", "continuation": " dog"}\n'
        '{"context": "two times four is", "continuation": " eight"}\n'
    )
    path = folder / "tiny.yaml"
    path.write_text(textwrap.dedent(LOGLIKELIHOOD_TASK.format(data=data)))
    return str(path)


def test_evaluation_inside_intervene_sees_the_edited_weights(llama, tokenizer, custom_task):
    masks = {
        name: torch.rand(parameter.shape, generator=torch.Generator().manual_seed(0)) < 0.5
        for name, parameter in llama.named_parameters()
        if "mlp" in name
    }
    found = locator.Localization.from_masks(masks, method="test", proportion=0.5)
    llama.train()
    before = locator.evaluate(llama, tokenizer, [custom_task])[custom_task]
    assert llama.training  # the evaluator restores the mode it found
    llama.eval()
    with locator.intervene(llama, found, 0.0):
        pruned = locator.evaluate(llama, tokenizer, custom_task)[custom_task]
    after = locator.evaluate(llama, tokenizer, [custom_task])[custom_task]
    assert pruned["perplexity"] != before["perplexity"]
    assert after == before  # restored weights, deterministic evaluation


class _TinyEvaluator(Evaluator):
    """A fixed-list evaluator registered in process, as a plugin's would be."""

    name = "tiny"
    tasks = ("tiny-one", "tiny-two")
    calls: ClassVar[list] = []

    def evaluate(self, model, tokenizer, request):
        self.calls.append(request)
        return {task: {"score": float(len(task))} for task in request.tasks}


class _TinyPlugin:
    @locator.hookimpl
    def register_evaluators(self, register):
        register(_TinyEvaluator())


@pytest.fixture
def tiny_plugin():
    from locator.plugins import register_plugin, unregister_plugin

    register_plugin(_TinyPlugin(), name="tiny-evaluator")
    yield
    unregister_plugin("tiny-evaluator")


def test_tasks_are_routed_to_the_evaluator_that_serves_them(llama, tokenizer, tiny_plugin):
    assert {"tiny", "lm-eval"} <= set(evaluators().names())
    results = locator.evaluate(
        llama, tokenizer, ["tiny-two", "tiny-one"], limit=3, batch_size=2, max_new_tokens=5
    )
    assert results == {"tiny-two": {"score": 8.0}, "tiny-one": {"score": 8.0}}
    assert _TinyEvaluator.calls[-1] == EvaluationRequest(
        tasks=("tiny-two", "tiny-one"), limit=3, batch_size=2, max_new_tokens=5
    )


@pytest.mark.parametrize(
    "tasks, options, message",
    [
        (["gsm8k"], {}, "HF_DATASETS_OFFLINE=1 forbids"),
        (["chain_of_thought"], {}, "is an lm-eval tag naming 3 tasks"),
        (["race", "race"], {}, "given more than once"),
        (["race"], {"limit": 0}, "limit must be a positive integer"),
        (["race"], {"data_dir": "/no/such/folder"}, "does not exist"),
        (["race"], {"batch_size": "big"}, "batch_size must be a positive integer or 'auto'"),
        (["race"], {"num_fewshot": -1}, "num_fewshot must be an integer >= 0"),
        (["race"], {"fewshot_as_multiturn": True}, "needs apply_chat_template"),
        (["race"], {"system_instruction": " "}, "system_instruction must be a non-empty"),
        (["gsm8k_nll"], {"apply_chat_template": True}, "has no chat template"),
    ],
)
def test_bad_evaluations_fail_in_one_line(llama, tokenizer, tasks, options, message):
    with _NoNetwork() as guard, pytest.raises(LocatorError) as error:
        locator.evaluate(llama, tokenizer, tasks, **options)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert guard.attempts == []


def test_offline_hub_task_says_how_to_pass_local_files(llama, tokenizer):
    with pytest.raises(LocatorError) as error:
        locator.evaluate(llama, tokenizer, ["mmlu"], limit=1)
    assert "data_dir=" in str(error.value) and "--data-dir" in str(error.value)


def test_unknown_task_message_suggests_and_stays_short():
    error = UnknownTaskError("gsm8k_cott", [f"task{i}" for i in range(100)] + ["gsm8k_cot"])
    message = str(error)
    assert "Did you mean 'gsm8k_cot'?" in message and "101 in all" in message
    assert "task57" not in message and "\n" not in message


@pytest.mark.slow
def test_unknown_and_unsafe_tasks_against_all_of_lm_eval(llama, tokenizer):
    """Indexes every lm-eval task (about 12 s), hence slow."""
    with pytest.raises(UnknownTaskError, match="Did you mean 'gsm8k_cot'"):
        locator.evaluate(llama, tokenizer, ["gsm8k_cott"])
    with pytest.raises(LocatorError, match="executes model output as code"):
        locator.evaluate(llama, tokenizer, ["humaneval"])


@needs_shared_data
def test_math_tasks_run_on_the_local_copies(llama, tokenizer):
    results = locator.evaluate(
        llama,
        tokenizer,
        ["hendrycks_math500", "gsm8k_cot"],
        limit=1,
        data_dir=SHARED_DATA,
        max_new_tokens=2,
    )
    assert 0.0 <= results["hendrycks_math500"]["exact_match"] <= 1.0
    assert 0.0 <= results["gsm8k_cot"]["exact_match,strict-match"] <= 1.0


def test_group_items_are_its_subtasks_items(standard):
    """mmlu's accuracy is the mean over every subject's items; each item names its subject."""
    evaluation, _ = standard
    items = [i for i in evaluation.items if i.metric == "acc" and i.task.startswith("mmlu_")]
    assert len(items) == 57 * 2 and len({i.task for i in items}) == 57
    mean = sum(i.value for i in items) / len(items)
    assert mean == pytest.approx(evaluation.metrics["mmlu"]["acc"], rel=1e-9)
    assert evaluation.higher_is_better["mmlu"]["acc"] is True
    strict = [i for i in evaluation.items if i.metric == "exact_match,strict-match"]
    assert len(strict) == 2 and {i.task for i in strict} == {"gsm8k"}
