"""Loading a causal language model and its tokenizer from a local folder or a hub id."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from locator.errors import LocatorError

DTYPES = ("auto", "float32", "float16", "bfloat16", "float64")


def load_model(
    name_or_path: str, *, dtype: str = "auto", device_map: str | None = None
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a local HF folder or a hub id, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise LocatorError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}.")
    local = Path(name_or_path).exists()
    if not local and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise LocatorError(
            f"model {name_or_path!r} is not a local folder and HF_HUB_OFFLINE=1 forbids the hub; "
            "pass the path of a folder with config.json and weights."
        )
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    if local:
        check_model_folder(Path(name_or_path))
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path, dtype=torch_dtype, device_map=device_map
        )
    except LocatorError:
        raise
    except Exception as error:  # a broken model is the user's input: one line, no traceback
        raise load_error(name_or_path, error) from None
    model.eval()
    return model, tokenizer


def check_model_folder(folder: Path) -> None:
    """Raise a one-line `LocatorError` for a local model folder that cannot hold a model (empty,
    no ``config.json``, a config without ``model_type``), before transformers tries to load it."""
    import json

    if not folder.is_dir():
        return
    if not any(folder.iterdir()):
        raise LocatorError(
            f"model folder {str(folder)!r} is empty; pass a folder with config.json, weights "
            "and tokenizer files (as save_pretrained writes them)."
        )
    config = folder / "config.json"
    if not config.is_file():
        return  # transformers (or a GGUF loader) says what is missing
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise LocatorError(
            f"{str(config)!r} is not valid JSON ({error}); fix or re-save it."
        ) from None
    if not isinstance(data, dict) or not data.get("model_type"):
        raise LocatorError(
            f"{str(config)!r} has no 'model_type' key, so the architecture is unknown; add it "
            '(for example "model_type": "llama") or re-save the model with save_pretrained.'
        )


def load_error(name: str, error: BaseException) -> LocatorError:
    """The one-line `LocatorError` for a model or tokenizer that failed to load."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    if "mismatched_sizes" in text or "size mismatch" in text:
        return LocatorError(
            f"cannot load model {name!r}: the shapes of its weights do not match its "
            "config.json; use the config the weights were saved with."
        )
    if type(error).__name__ == "SafetensorError":
        return LocatorError(f"cannot load model {name!r}: a weights file is corrupt ({first}).")
    if "backend tokenizer" in text:
        return LocatorError(
            f"cannot load the tokenizer of {name!r}: no usable tokenizer files (tokenizer.json "
            "or tokenizer.model); copy them from the model the weights came from."
        )
    return LocatorError(f"cannot load model {name!r}: {first}")
