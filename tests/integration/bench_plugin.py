"""A small plugin for the benchmark tests: three word datasets, a next-token loss evaluator, and
`suite`, the text of a suite on them.

Both are real plugins (registered through the hooks any package uses; the evaluator runs the
model as currently edited), only much faster than lm-eval tasks and independent of downloaded
data, so the tests can run whole grids, kill them and resume them in seconds.
``LOSS_EVALUATOR_DELAY`` (seconds per evaluation call) slows the evaluator so a test can kill a
run reliably in the middle.

Run as a script, it registers itself and runs the ``locator`` CLI with the given arguments.
"""

import os
import sys
import time

import torch

import locator
from locator.data import Dataset
from locator.evaluation import Evaluator
from locator.testing import sample_texts

TASKS = {"loss-short": 1, "loss-long": 2}
"""Task name -> seed of its fixed texts."""


class WordsDataset(Dataset):
    """200 seeded texts from `locator.testing`'s small vocabulary (the tiny tokenizer's)."""

    splits = ("train",)

    def __init__(self, name, seed):
        self.name, self.seed = name, seed

    def records(self, split, data_dir):
        return [{"text": text} for text in sample_texts(200, seed=self.seed, max_words=40)]

    def format(self, record):
        return record["text"]


class LossEvaluator(Evaluator):
    """Mean next-token loss (and its exponential) over 32 fixed texts per task."""

    name = "test-loss"
    tasks = tuple(TASKS)

    def evaluate(self, model, tokenizer, request):
        time.sleep(float(os.environ.get("LOSS_EVALUATOR_DELAY", "0")))
        results = {}
        for task in request.tasks:
            texts = sample_texts(32, seed=TASKS[task])[: request.limit]
            total = count = 0.0
            with torch.no_grad():
                for text in texts:
                    ids = tokenizer(text, return_tensors="pt")["input_ids"]
                    tokens = ids.shape[1] - 1
                    total += float(model(input_ids=ids, labels=ids).loss) * tokens
                    count += tokens
            loss = total / count
            results[task] = {"loss": loss, "perplexity": float(torch.tensor(loss).exp())}
        return results


def suite(model, tables, proportions=(0.1,), factors=(0.0,), seeds=(0,), samples=6):
    """The text of a suite on `model` calibrated on words-a against words-b, then `tables`
    (its [[methods]] and [[tasks]] tables, no matched baseline but those it lists); the grid is
    one cell unless told otherwise."""
    from tests.conftest import suite_toml  # here: run as a script, this module needs no tests

    grid = {"proportions": list(proportions), "factors": list(factors), "seeds": list(seeds)}
    text = suite_toml(
        model, target="words-a", controls=["words-b"], **grid, num_samples=[samples],
        max_length=32, matched_baseline=False,
    )  # fmt: skip
    return text + tables


@locator.hookimpl
def register_datasets(register):
    """Register the three word datasets."""
    register(WordsDataset("words-a", seed=10))
    register(WordsDataset("words-b", seed=20))
    register(WordsDataset("words-c", seed=30))


@locator.hookimpl
def register_evaluators(register):
    """Register the loss evaluator."""
    register(LossEvaluator())


if __name__ == "__main__":
    torch.set_num_threads(1)
    locator.register_plugin(sys.modules[__name__], name="bench-plugin")
    from locator.cli import main

    main()
