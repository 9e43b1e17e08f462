"""Local-file sources of lm-eval tasks: locator's local dataset copies reach lm-eval's own task
definitions in the layout of the hub datasets they read."""

import pytest

from locator import LocatorError
from tests.conftest import SHARED_DATA

needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason="the shared local dataset copies are absent"
)


def test_a_dataset_without_local_files_names_the_expected_file(tmp_path):
    from locator_plugins.local_sources import LocalData

    with pytest.raises(
        LocatorError, match=r"no local files for dataset 'gsm8k': expected .*gsm8k/"
    ):
        LocalData(tmp_path).splits("gsm8k")


@needs_shared_data
def test_local_records_reach_lm_eval_in_the_hub_layout():
    """lm-eval's own prompt and target functions read the converted local records right."""
    import ast
    import json

    from locator_plugins.evaluators import LmEvalEvaluator, _manager
    from locator_plugins.local_sources import LocalData

    local, evaluator, manager = LocalData(SHARED_DATA), LmEvalEvaluator(), _manager(True)
    lines = (SHARED_DATA / "mmlu" / "test.jsonl").read_text().split("\n")
    anatomy = [json.loads(x) for x in lines if x.strip() and '"subject": "anatomy"' in x]
    task = evaluator._load(manager, "mmlu_anatomy", local)
    doc = task.test_docs()[0]
    assert task.doc_to_text(doc).startswith(anatomy[0]["question"].strip() + "\nA. ")
    assert task.doc_to_target(doc) == "ABCD".index(anatomy[0]["answer"])
    assert len(task.test_docs()) == len(anatomy)

    lines = (SHARED_DATA / "race" / "race_1000.jsonl").read_text().split("\n")
    high = [json.loads(x) for x in lines if x.strip() and '"level": "high"' in x]
    task = evaluator._load(manager, "race", local)
    doc = task.test_docs()[0]
    first_article = [r for r in high if r["article"] == high[0]["article"]]
    assert task.doc_to_text(doc).startswith("Article: " + high[0]["article"])
    assert task.doc_to_target(doc) == "ABCD".index(first_article[-1]["answer"])
    assert task.doc_to_choice(doc) == first_article[-1]["options"]
    assert sum(len(ast.literal_eval(d["problems"])) for d in task.test_docs()) == len(high)
