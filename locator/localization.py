"""Localization: which entries of which parameters carry a skill. Data, not behaviour.

A `Localization` maps parameter names (as in `named_parameters()`) to selected entries, plus
how they were found (method, config, proportion, corpora, seed). Each parameter's selection is
held compactly: sorted int32 flat indices when few entries are selected, a packed bit mask
(one bit per entry) otherwise, whichever is smaller. Boolean masks are materialized only on
access, one parameter at a time. Files are safetensors with JSON metadata; never pickle.

A neuron-level localization (``level="neuron"``) also keeps the selected MLP neurons per layer,
keyed by the down projection's parameter name. Its selections are exactly those neurons' columns
of the down projection (scaling neuron j's activation is scaling input channel j there), so the
intervention engine, counts and set algebra treat both levels alike.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from locator.architecture import ScoredParameter, layer_and_kind
from locator.errors import LocatorError, LocatorWarning
from locator.io import atomic_write

FORMAT = "locator.localization/1"


class Selection:
    """The selected entries of one parameter, stored as indices or bits, whichever is smaller."""

    __slots__ = ("shape", "count", "_indices", "_bits")

    def __init__(
        self,
        shape: tuple[int, ...],
        indices: Tensor | None,
        bits: Tensor | None,
        count: int | None = None,
    ) -> None:
        self.shape = tuple(int(s) for s in shape)
        self._indices, self._bits = indices, bits
        if indices is not None:
            self.count = int(indices.numel())
        elif count is not None:
            self.count = count
        else:
            assert bits is not None
            self.count = int(np.unpackbits(bits.numpy(), count=self.numel).sum())

    @property
    def numel(self) -> int:
        """Number of entries of the parameter."""
        return math.prod(self.shape)

    @classmethod
    def from_indices(cls, indices: Tensor, shape: tuple[int, ...]) -> Selection:
        """A selection of the given flat indices (any order, no duplicates expected)."""
        numel = math.prod(shape)
        indices = torch.unique(indices.flatten().to("cpu", torch.int64))  # sorted
        if indices.numel() and (indices[0] < 0 or indices[-1] >= numel):
            raise LocatorError(f"selected index out of range for a parameter of shape {shape}.")
        if indices.numel() * 32 <= numel or numel >= 2**31:
            dtype = torch.int32 if numel < 2**31 else torch.int64
            return cls(shape, indices.to(dtype), None)
        mask = torch.zeros(numel, dtype=torch.bool)
        mask[indices] = True
        return cls.from_mask(mask.view(shape))

    @classmethod
    def from_mask(cls, mask: Tensor) -> Selection:
        """A selection of the True entries of a boolean mask."""
        mask = mask.detach().to("cpu", torch.bool)
        shape = tuple(mask.shape)
        count = int(mask.sum())
        if count * 32 <= mask.numel():
            return cls(shape, mask.flatten().nonzero()[:, 0].to(torch.int32), None)
        bits = torch.from_numpy(np.packbits(mask.flatten().numpy()))
        return cls(shape, None, bits, count)

    def indices(self) -> Tensor:
        """Sorted flat int64 indices of the selected entries."""
        if self._indices is not None:
            return self._indices.to(torch.int64)
        return self.mask().flatten().nonzero()[:, 0]

    def mask(self) -> Tensor:
        """The boolean mask, of the parameter's shape."""
        if self._bits is not None:
            flat = np.unpackbits(self._bits.numpy(), count=self.numel).astype(bool)
            return torch.from_numpy(flat).view(self.shape)
        mask = torch.zeros(self.numel, dtype=torch.bool)
        mask[self._indices.to(torch.int64)] = True  # type: ignore[union-attr]
        return mask.view(self.shape)

    def stored(self) -> tuple[str, Tensor]:
        """``("indices" | "bits", tensor)``: the compact form, for saving."""
        if self._indices is not None:
            return "indices", self._indices
        assert self._bits is not None
        return "bits", self._bits

    @property
    def nbytes(self) -> int:
        """Bytes held by the compact form."""
        return int(self.stored()[1].nbytes)


class Neurons(dict[str, Tensor]):
    """What a neuron-level method returns for one proportion: each MLP's down-projection
    parameter name -> the indices of its selected neurons (an MLP left out selects none). The
    core turns it into a neuron-level `Localization` (`Localization.from_neurons`)."""


def selections_jaccard(first: Mapping[str, Selection], second: Mapping[str, Selection]) -> float:
    """|A & B| / |A | B| of two sets of selections over the union of their parameter names; a
    parameter only one side has is empty in the other (1.0 when both are empty)."""
    both = either = 0
    for name in dict.fromkeys([*first, *second]):
        if name not in first or name not in second:
            either += (first[name] if name in first else second[name]).count
            continue
        a, b = first[name].indices(), second[name].indices()
        common = int(torch.isin(a, b, assume_unique=True).sum())
        both += common
        either += a.numel() + b.numel() - common
    return both / either if either else 1.0


def is_localization_file(path: Path) -> bool:
    """Whether `path` is a file written by `Localization.save` (read from its header only)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return "locator" in (handle.metadata() or {})
    except (SafetensorError, OSError):
        return False


def _check_indices(indices: Tensor, numel: int, name: str) -> None:
    """Raise `ValueError` unless `indices` are sorted, unique flat indices in ``[0, numel)``."""
    if indices.dtype not in (torch.int32, torch.int64) or indices.dim() != 1:
        raise ValueError(f"indices of {name!r} are not a 1-D integer tensor")
    if indices.numel() and (
        int(indices[0]) < 0 or int(indices[-1]) >= numel or bool((indices.diff() <= 0).any())
    ):
        raise ValueError(f"indices of {name!r} are out of range or unsorted")


class _Masks(Mapping[str, Tensor]):
    """A read-only mapping that materializes each boolean mask when it is looked up."""

    def __init__(self, selections: Mapping[str, Selection]) -> None:
        self._selections = selections

    def __getitem__(self, name: str) -> Tensor:
        return self._selections[name].mask()

    def __iter__(self) -> Iterator[str]:
        return iter(self._selections)

    def __len__(self) -> int:
        return len(self._selections)


@dataclass(frozen=True, eq=False)
class Localization:
    """Selected entries per parameter, with how they were found.

    `selections` holds every scored parameter, selected or not, so that fractions are taken
    over all scored entries. `proportion` is None for results of set algebra across proportions.
    `neurons` (neuron level only) maps each MLP's down-projection parameter name to the sorted
    int64 indices of its selected neurons; build such a localization with `from_neurons`.
    `matched_to` names what a matched baseline copied its counts from (a suite's label for the
    reference's method entry, or the reference's method name); None for every other method.
    `provenance` records what it was made from (`locator.localizer.localize` fills it):
    ``model`` (`locator.provenance.model_identity`), ``versions``, how corpora became rows
    (``max_length``, ``pack``, ``batch_size``, ``positions``), ``corpora`` (label, text count
    and content hash of each; a file's name too) and a matched baseline's ``reference``
    (`locator.provenance.with_provenance`).
    """

    selections: Mapping[str, Selection]
    method: str
    proportion: float | None
    config: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    target: str = ""
    controls: tuple[str, ...] = ()
    level: str = "parameter"
    neurons: Mapping[str, Tensor] = field(default_factory=dict)
    matched_to: str | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.level not in ("parameter", "neuron"):
            raise LocatorError(f"level must be 'parameter' or 'neuron', got {self.level!r}.")
        if (self.level == "neuron") != bool(self.neurons):
            raise LocatorError("a localization has neurons exactly when its level is 'neuron'.")

    @classmethod
    def from_neurons(
        cls,
        neurons: Mapping[str, Tensor],
        parameters: Mapping[str, ScoredParameter],
        *,
        method: str,
        proportion: float | None,
        **metadata: Any,
    ) -> Localization:
        """A neuron-level localization: `neurons` maps each MLP's down-projection parameter name
        to neuron indices; the selections are those columns of the down projection (rows of a
        transposed `Conv1D`), over every parameter in `parameters` (the scored ones)."""
        selections, kept = {}, {}
        for name, parameter in parameters.items():
            mask = torch.zeros(parameter.shape, dtype=torch.bool)
            if name in neurons:
                indices = torch.unique(neurons[name].to("cpu", torch.int64))  # sorted
                if indices.numel() and (indices[0] < 0 or indices[-1] >= parameter.d_in):
                    raise LocatorError(
                        f"neuron index out of range for {name!r}, which has {parameter.d_in}."
                    )
                kept[name] = indices
                if parameter.transposed:
                    mask[indices, :] = True
                else:
                    mask[:, indices] = True
            selections[name] = Selection.from_mask(mask)
        missing = set(neurons) - set(kept)
        if missing:
            raise LocatorError(f"neurons given for parameters not scored: {sorted(missing)}.")
        return cls(
            selections=selections,
            method=method,
            proportion=proportion,
            level="neuron",
            neurons=kept,
            **metadata,
        )

    @classmethod
    def from_masks(
        cls, masks: Mapping[str, Tensor], *, method: str, proportion: float | None, **metadata: Any
    ) -> Localization:
        """Build a localization from boolean masks of each parameter's shape."""
        selections = {name: Selection.from_mask(mask) for name, mask in masks.items()}
        return cls(selections=selections, method=method, proportion=proportion, **metadata)

    @property
    def masks(self) -> Mapping[str, Tensor]:
        """Parameter name -> boolean mask of that parameter's shape, built on access."""
        return _Masks(self.selections)

    def count(self) -> int:
        """Number of selected entries over all parameters."""
        return sum(s.count for s in self.selections.values())

    def numel(self) -> int:
        """Number of scored entries over all parameters."""
        return sum(s.numel for s in self.selections.values())

    def fraction(self) -> float:
        """Selected entries / scored entries."""
        total = self.numel()
        return self.count() / total if total else 0.0

    def neuron_count(self) -> int:
        """Number of selected neurons (0 for a parameter-level localization)."""
        return sum(int(indices.numel()) for indices in self.neurons.values())

    def counts(self) -> dict[str, int]:
        """Selected entries per parameter name."""
        return {name: s.count for name, s in self.selections.items()}

    def counts_by_layer(self) -> dict[int, int]:
        """Selected entries per decoder block index."""
        counts: dict[int, int] = defaultdict(int)
        for name, selection in self.selections.items():
            counts[layer_and_kind(name)[0]] += selection.count
        return dict(counts)

    @property
    def nbytes(self) -> int:
        """Bytes held by the compact selections."""
        return sum(s.nbytes for s in self.selections.values())

    # Set algebra, one parameter at a time.

    def model(self) -> Mapping[str, Any]:
        """The identity of the model this was made from (empty when not recorded)."""
        return dict(self.provenance.get("model") or {})

    def check_compatible(self, other: Localization, operation: str) -> None:
        """Raise a one-line `LocatorError` unless `other` belongs to the same model: the same
        parameter names and shapes, and the same weights where both record them."""
        if not isinstance(other, Localization):
            raise LocatorError(
                f"cannot {operation} a localization with a {type(other).__name__}; read a file "
                "with Localization.load(path)."
            )
        what = f"cannot {operation} localizations {self.method!r} and {other.method!r}"
        mine, theirs = set(self.selections), set(other.selections)
        if mine != theirs:
            only = sorted(mine - theirs) or sorted(theirs - mine)
            side = "the first" if mine - theirs else "the second"
            raise LocatorError(
                f"{what}: they select different parameters ({len(mine ^ theirs)} differ, e.g. "
                f"{only[0]!r} only in {side}); they belong to different models."
            )
        for name, selection in self.selections.items():
            if selection.shape != other.selections[name].shape:
                raise LocatorError(
                    f"{what}: {name!r} has shape {list(selection.shape)} in one and "
                    f"{list(other.selections[name].shape)} in the other; they belong to "
                    "different models."
                )
        from locator.provenance import describe_model_difference

        difference = describe_model_difference(self.model(), other.model())
        if difference is not None and other.model().get("fingerprint") is not None:
            raise LocatorError(
                f"{what}: they were made from different models ({difference}); compare "
                "localizations of one model."
            )

    def _combine(
        self, other: Localization, op: str, function: Callable[[Tensor, Tensor], Tensor]
    ) -> Localization:
        self.check_compatible(other, op)
        selections = {}
        for name, mine in self.selections.items():
            a, b = mine.mask(), other.selections[name].mask()
            selections[name] = Selection.from_mask(function(a, b))
        same = self.proportion == other.proportion
        neurons = self._combine_neurons(other, function)
        return replace(
            self,
            selections=selections,
            method=f"({self.method} {op} {other.method})",
            proportion=self.proportion if same else None,
            level="neuron" if neurons else "parameter",
            neurons=neurons,
        )

    def _combine_neurons(
        self, other: Localization, function: Callable[[Tensor, Tensor], Tensor]
    ) -> dict[str, Tensor]:
        """Column sets combine exactly as neuron sets do, so two neuron-level operands give a
        neuron-level result; mixing levels gives a parameter-level one (no neurons)."""
        if not self.level == other.level == "neuron":
            return {}
        empty = torch.empty(0, dtype=torch.int64)
        combined = {}
        for name in dict.fromkeys([*self.neurons, *other.neurons]):
            mine, theirs = self.neurons.get(name, empty), other.neurons.get(name, empty)
            both = torch.cat([mine, theirs])
            size = int(both.max()) + 1 if both.numel() else 0
            a, b = torch.zeros(size, dtype=torch.bool), torch.zeros(size, dtype=torch.bool)
            a[mine], b[theirs] = True, True
            combined[name] = function(a, b).nonzero()[:, 0]
        return combined

    def union(self, other: Localization) -> Localization:
        """Entries selected in either."""
        return self._combine(other, "|", torch.logical_or)

    def intersection(self, other: Localization) -> Localization:
        """Entries selected in both."""
        return self._combine(other, "&", torch.logical_and)

    def difference(self, other: Localization) -> Localization:
        """Entries selected here and not in `other`."""
        return self._combine(other, "-", lambda a, b: a & ~b)

    __or__ = union
    __and__ = intersection
    __sub__ = difference

    def jaccard(self, other: Localization) -> float:
        """|A & B| / |A | B| over all parameters (1.0 when both are empty)."""
        self.check_compatible(other, "compare")
        return selections_jaccard(self.selections, other.selections)

    # Checking against a model, saving and loading.

    def check(self, model: nn.Module, *, strict: bool = False) -> None:
        """Check that this localization belongs to `model`.

        Every selected parameter must exist with the same shape (else a `LocatorError`). When
        the localization records its model's weights fingerprint and `model`'s differs, this
        warns (`LocatorWarning`), or raises with ``strict=True``.
        """
        parameters = dict(model.named_parameters())
        for name, selection in self.selections.items():
            if name not in parameters:
                example = next(iter(parameters), "")
                raise LocatorError(
                    f"localization ({self.method}) does not match the model: it selects "
                    f"{name!r}, which {type(model).__name__} does not have (its parameters are "
                    f"named like {example!r}). Localize on this model, or load the model it was "
                    "made for."
                )
            if tuple(parameters[name].shape) != selection.shape:
                raise LocatorError(
                    f"localization ({self.method}) does not match the model: {name!r} has shape "
                    f"{list(selection.shape)} in the localization and "
                    f"{list(parameters[name].shape)} in the model."
                )
        if not self.model().get("fingerprint"):
            return
        from locator.provenance import describe_model_difference, model_identity

        difference = describe_model_difference(self.model(), model_identity(model))
        if difference is None:
            return
        message = (
            f"localization ({self.method}) was made from another model than this one "
            f"({difference}); it was made from {self.model().get('name')!r}."
        )
        if strict:
            raise LocatorError(message)
        warnings.warn(message, LocatorWarning, stacklevel=2)

    def content_hash(self) -> str:
        """A hash of the selections (names, shapes, selected entries): equal for equal
        localizations, whatever their metadata."""
        digest = hashlib.sha256()
        for name in sorted(self.selections):
            selection = self.selections[name]
            digest.update(f"{name}:{list(selection.shape)}:".encode())
            digest.update(selection.indices().numpy().tobytes())
        return digest.hexdigest()[:32]

    def metadata(self) -> dict[str, Any]:
        """How this localization was found, as JSON-ready values."""
        return {
            "method": self.method,
            "proportion": self.proportion,
            "config": dict(self.config),
            "seed": self.seed,
            "target": self.target,
            "controls": list(self.controls),
            "level": self.level,
            "count": self.count(),
            "fraction": self.fraction(),
            "neuron_count": self.neuron_count(),
            "matched_to": self.matched_to,
            "provenance": dict(self.provenance),
        }

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write a safetensors file: compact selections plus JSON metadata.

        An existing file is never replaced silently: one that is not a localization file is
        refused, and a localization file is replaced only with `overwrite` (git's rule for
        clobbering: only when asked, and only what locator wrote).
        """
        from safetensors.torch import save

        existing = Path(path)
        if existing.is_file():  # a folder or an unwritable place: atomic_write's one line
            if not is_localization_file(existing):
                raise LocatorError(
                    f"{str(existing)!r} exists and is not a localization file; choose a new "
                    "file name (locator never overwrites other files)."
                )
            if not overwrite:
                raise LocatorError(
                    f"localization file {str(existing)!r} exists; pass overwrite=True to "
                    "replace it, or choose a new file name."
                )

        tensors, shapes = {}, {}
        for name, selection in self.selections.items():
            form, tensor = selection.stored()
            tensors[f"{name}.{form}"] = tensor.contiguous()
            shapes[name] = list(selection.shape)
        for name, indices in self.neurons.items():
            tensors[f"{name}.neurons"] = indices.contiguous()
        header = {"format": FORMAT, **self.metadata(), "shapes": shapes}
        header["neuron_parameters"] = list(self.neurons)
        return atomic_write(path, save(tensors, metadata={"locator": json.dumps(header)}))

    @classmethod
    def load(cls, path: str | Path) -> Localization:
        """Read a file written by `save`."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise LocatorError(f"localization file {str(path)!r} does not exist.")
        try:
            with safe_open(str(path), framework="pt") as handle:
                raw = (handle.metadata() or {}).get("locator")
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except SafetensorError as error:
            raise LocatorError(f"{str(path)!r} is not a safetensors file: {error}") from None
        if raw is None:
            raise LocatorError(
                f"{str(path)!r} is not a locator localization file (no 'locator' metadata); "
                "write one with Localization.save or `locator localize --out`."
            )
        try:
            return cls._from_file(header=json.loads(raw), tensors=tensors)
        except (KeyError, TypeError, ValueError, AttributeError, LocatorError) as error:
            detail = f"missing {error}" if isinstance(error, KeyError) else str(error)
            raise LocatorError(
                f"localization file {str(path)!r} is corrupt ({detail}); write it again with "
                "`locator localize --out`."
            ) from None

    @classmethod
    def _from_file(cls, *, header: Any, tensors: dict[str, Tensor]) -> Localization:
        """Build from a file's header and tensors, checking every index before use (a corrupt
        file must fail here, not when its indices touch a model's weights)."""
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ValueError(f"format is not {FORMAT!r}")
        selections = {}
        for name, shape in header["shapes"].items():
            if not isinstance(shape, list) or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
            ):
                raise ValueError(f"bad shape {shape!r} of {name!r}")
            numel = math.prod(shape)
            if f"{name}.indices" in tensors:
                indices = tensors[f"{name}.indices"]
                _check_indices(indices, numel, name)
                selections[name] = Selection(tuple(shape), indices, None)
            else:
                bits = tensors[f"{name}.bits"]
                if bits.dtype != torch.uint8 or bits.dim() != 1 or bits.numel() != -(-numel // 8):
                    raise ValueError(f"bit mask of {name!r} does not fit shape {shape}")
                selections[name] = Selection(tuple(shape), None, bits)
        neurons = {}
        for name in header.get("neuron_parameters", []):
            _check_indices(tensors[f"{name}.neurons"], max(selections[name].shape), name)
            neurons[name] = tensors[f"{name}.neurons"]
        config = dict(header["config"])
        # Files written before `matched_to` was a field of its own kept it in the config.
        matched_to = header.get("matched_to", config.pop("matched_to", None))
        found = cls(
            selections=selections,
            method=str(header["method"]),
            proportion=header["proportion"],
            config=config,
            seed=int(header["seed"]),
            target=str(header["target"]),
            controls=tuple(header["controls"]),
            level=str(header["level"]),
            neurons=neurons,
            matched_to=None if matched_to is None else str(matched_to),
            provenance=dict(header.get("provenance") or {}),
        )
        if "count" in header and found.count() != header["count"]:
            raise ValueError(f"{found.count()} entries selected, the header says {header['count']}")
        return found

    def __repr__(self) -> str:
        return (
            f"Localization(method={self.method!r}, proportion={self.proportion}, "
            f"count={self.count()}, fraction={self.fraction():.6f}, "
            f"parameters={len(self.selections)}"
            + (f", neurons={self.neuron_count()})" if self.level == "neuron" else ")")
        )
