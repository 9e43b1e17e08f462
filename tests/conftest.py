"""Test set-up: offline, a private HF cache, one torch thread, tiny models shared per session;
`suite_toml` writes the text of a benchmark suite."""

import json
import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="locator-hf-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def corpus_texts(name, **options):
    """The texts of `locator.sample_corpus` (same arguments), as a list."""
    from locator.data import sample_corpus

    return list(sample_corpus(name, **options).texts)


@pytest.fixture(scope="session")
def tokenizer():
    from locator.testing import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture(scope="session")
def llama(tokenizer):
    from locator.testing import tiny_model

    return tiny_model("llama", vocab_size=len(tokenizer))


@pytest.fixture(scope="session")
def gpt2(tokenizer):
    from locator.testing import tiny_model

    return tiny_model("gpt2", vocab_size=len(tokenizer))


@pytest.fixture(params=["llama", "gpt2"])
def model(request):
    """Each tiny model family in turn (session-shared instances: do not edit them)."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def saved_model(tmp_path_factory, llama, tokenizer):
    """The tiny Llama saved as a normal HF folder."""
    path = tmp_path_factory.mktemp("model")
    llama.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def suite_toml(model, *, target=None, controls=(), methods=(), tasks=(), **settings):
    """The text of a benchmark suite: the top-level `settings` (in order), the model at path
    `model`, the corpus `target` against `controls` (if any), then a table for each of `methods`
    and `tasks` (dicts of keys), so a test writes only what its suite is about."""
    lines = [f"{key} = {_toml(value)}" for key, value in settings.items()]
    lines += ["[[models]]", f"path = {_toml(model)}"]
    if target is not None:
        lines += ["[[corpora]]", f"target = {_toml(target)}"]
        lines += [f"controls = {_toml(controls)}"] if controls else []
    for kind, tables in (("methods", methods), ("tasks", tasks)):
        for table in tables:
            lines += [f"[[{kind}]]", *(f"{key} = {_toml(value)}" for key, value in table.items())]
    return "\n".join(lines) + "\n"


def _toml(value):
    """One TOML value: a string (or path), a boolean, a number, a list or an inline table."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {_toml(v)}" for key, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, (int, float)) else json.dumps(str(value))
