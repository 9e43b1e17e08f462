"""The `Localizer` base class, its configs, the context a method receives, and `localize`.

A method is a `Localizer` subclass with a `name`, an optional frozen `Config` dataclass, the
statistic kinds it needs, and ``localize(context, proportion) -> Localization``. It reads the
weights and statistics in the `LocalizationContext` and never edits weights or registers hooks.
Methods that can cut many proportions from one ranking override `localize_many`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from locator.architecture import ScoredParameter, scored_parameters
from locator.data import CalibrationOptions, Corpus, resolve_corpus
from locator.errors import LocatorError, UnknownNameError
from locator.localization import Localization, Selection
from locator.options import OptionError, parse
from locator.plugins import Registry, registry
from locator.provenance import model_identity, with_provenance
from locator.stats import ActivationStats, collect_statistics


@dataclass(frozen=True, kw_only=True)
class NoConfig:
    """The config of a method without options."""


@dataclass(frozen=True)
class LocalizationContext:
    """What a method sees: the scored weights (read-only), the statistics and the seed.

    `weights` maps each scored parameter name to its weight as stored; `matrix(name)` gives it
    as ``[d_out, d_in]`` whatever the storage (GPT-2's `Conv1D` stores ``[d_in, d_out]``).
    `reference` is the localization a matched baseline copies its counts from, if any, and
    `reference_label` what the localization records it as (``matched_to``): a suite's label for
    the reference's method entry, or by default the reference's method name.
    """

    parameters: Mapping[str, ScoredParameter]
    weights: Mapping[str, Tensor]
    target: ActivationStats
    controls: tuple[ActivationStats, ...]
    seed: int
    reference: Localization | None = None
    reference_label: str | None = None

    def matrix(self, name: str) -> Tensor:
        """The weight of `name` as ``[d_out, d_in]`` (a view, no copy)."""
        weight = self.weights[name]
        return weight.t() if self.parameters[name].transposed else weight

    def stored(self, name: str, matrix: Tensor) -> Tensor:
        """Turn a ``[d_out, d_in]`` tensor (a mask, say) into the parameter's stored layout."""
        return matrix.t() if self.parameters[name].transposed else matrix

    def stored_indices(self, name: str, matrix_indices: Tensor) -> Tensor:
        """Turn flat indices into the ``[d_out, d_in]`` matrix into flat stored indices."""
        parameter = self.parameters[name]
        if not parameter.transposed:
            return matrix_indices
        d_in = parameter.d_in
        rows, columns = matrix_indices // d_in, matrix_indices % d_in
        return columns * parameter.shape[1] + rows


class Localizer:
    """Base class of localization methods; subclass it and register it from a plugin.

    Class attributes: `name` (unique), `Config` (a frozen dataclass of options), `statistics`
    (the names of the statistic kinds it reads; `locator.list_statistics()`), and
    `accepts_reference` (True for baselines that copy their counts from another localization),
    `min_controls` (the fewest control corpora it works with) and `uses_controls` (False for
    methods that read the target alone: `localize` refuses controls for them, and their
    localizations record none). `check_request` enforces all three before any pass, so methods
    do not check them again. `scores_head`: True for a method that scores the untied output
    head too (its context's `parameters` then include it; see `build_context`). `statistics`
    and `scores_head` are read from the instance, so a method whose needs depend on its config
    sets them in ``__init__``.
    """

    name: ClassVar[str]
    Config: ClassVar[type] = NoConfig
    statistics: frozenset[str] = frozenset()
    accepts_reference: ClassVar[bool] = False
    min_controls: ClassVar[int] = 0
    uses_controls: ClassVar[bool] = True
    scores_head: bool = False

    def __init__(self, config: Any = None) -> None:
        self.config = self.Config() if config is None else config
        if not isinstance(self.config, self.Config):
            raise LocatorError(
                f"{self.name} takes a {self.Config.__name__}, got {type(self.config).__name__}."
            )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Each default below calls the other: a method must override at least one.
        if cls.localize is Localizer.localize and cls.localize_many is Localizer.localize_many:
            raise TypeError(f"{cls.__name__} must implement localize() or localize_many()")

    def localize(self, context: LocalizationContext, proportion: float) -> Localization:
        """Select the entries for one proportion (by default, `localize_many` of one)."""
        return self.localize_many(context, [proportion])[0]

    def localize_many(
        self, context: LocalizationContext, proportions: Sequence[float]
    ) -> list[Localization]:
        """Select for several proportions; override to cut them all from one ranking."""
        return [self.localize(context, proportion) for proportion in proportions]

    def localization(
        self,
        context: LocalizationContext,
        selections: Mapping[str, Selection],
        proportion: float,
    ) -> Localization:
        """Wrap per-parameter selections with this method's metadata."""
        return Localization(
            selections=dict(selections), proportion=proportion, **self._metadata(context)
        )

    def ranked_localizations(
        self,
        context: LocalizationContext,
        proportions: Sequence[float],
        score: Callable[[str], Tensor],
        group: Literal["matrix", "row"] = "matrix",
        count: Callable[[float, int], int] | None = None,
    ) -> list[Localization]:
        """One localization per proportion from one ranking per scored matrix: `score(name)` is
        parameter `name`'s ``[d_out, d_in]`` score, cut at every proportion by `top_cuts`
        (`count`: entries kept of a group of n, `top_count` unless given)."""
        selections: list[dict[str, Selection]] = [{} for _ in proportions]
        for name, parameter in context.parameters.items():
            cuts = top_cuts(score(name), proportions, group, count or top_count)
            for i, top in enumerate(cuts):
                selections[i][name] = Selection.from_indices(
                    context.stored_indices(name, top), parameter.shape
                )
        return [
            self.localization(context, selection, proportion)
            for selection, proportion in zip(selections, proportions, strict=True)
        ]

    def neuron_localization(
        self,
        context: LocalizationContext,
        neurons: Mapping[str, Tensor],
        proportion: float,
    ) -> Localization:
        """Wrap selected MLP neurons (down-projection parameter name -> neuron indices) as a
        neuron-level localization with this method's metadata."""
        return Localization.from_neurons(
            neurons, context.parameters, proportion=proportion, **self._metadata(context)
        )

    def _metadata(self, context: LocalizationContext) -> dict[str, Any]:
        """What a localization records of the method and the data it was found on."""
        used = context.controls if self.uses_controls else ()
        config = config_to_dict(self.config)
        if context.reference is not None:  # what a baseline copied its counts from
            config["matched_to"] = context.reference_label or context.reference.method
        return {
            "method": self.name,
            "config": config,
            "seed": context.seed,
            "target": context.target.corpus,
            "controls": tuple(stats.corpus for stats in used),
        }


# Configs: built from Python values or from strings (CLI, TOML), checked against field types.


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as a plain dict."""
    return dataclasses.asdict(config)


def make_config(localizer: type[Localizer], options: Mapping[str, Any]) -> Any:
    """Build `localizer.Config` from options (Python values or strings, parsed by the field's
    type: `locator.options.parse`)."""
    try:
        return parse(localizer.Config, options, text=True, kind=f"option of {localizer.name}")
    except UnknownNameError:
        raise
    except OptionError as error:
        raise LocatorError(f"option {error.key!r} of {localizer.name} {error.problem}") from None
    except (TypeError, ValueError) as error:
        raise LocatorError(f"invalid options for {localizer.name}: {error}") from None


# Ranking helpers shared by methods: one sort, many cuts.


def top_count(proportion: float, numel: int) -> int:
    """``floor(proportion * numel)``, robust to the binary rounding of decimal proportions."""
    return math.floor(proportion * numel * (1 + 1e-12))


def check_request(
    localizer: Localizer | None = None,
    *,
    proportions: Sequence[float] = (),
    seed: int | None = None,
    controls: int | None = None,
    reference: bool = False,
) -> None:
    """The checks of a localization request, in one place: `localize`, the CLI and suites call
    it before any expensive work, and methods rely on it instead of checking again.

    Each given proportion must be a number in (0, 1] (not a bool), `seed` an int >= 0; with a
    `localizer`, `controls` (the number of control corpora) must reach its `min_controls` and be
    0 for a method that reads the target alone (`uses_controls = False`, which would silently
    ignore them), and a `reference` is allowed only if it `accepts_reference`. Raises a one-line
    `LocatorError`.
    """
    for proportion in proportions:
        if isinstance(proportion, bool) or not isinstance(proportion, (int, float)):
            raise LocatorError(f"proportion must be a number in (0, 1], got {proportion!r}.")
        if not 0 < proportion <= 1:
            raise LocatorError(f"proportion must be in (0, 1], got {proportion!r}.")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise LocatorError(f"seed must be an integer >= 0, got {seed!r}.")
    if localizer is None:
        return
    if controls and not localizer.uses_controls:
        raise LocatorError(
            f"method {localizer.name!r} reads the target alone and would ignore the {controls} "
            "control corpus(es) given; drop them (CLI: --control)."
        )
    if controls is not None and controls < localizer.min_controls:
        raise LocatorError(
            f"method {localizer.name!r} needs at least {localizer.min_controls} control "
            f"corpus(es) besides the target, got {controls}; give them with controls=[...] "
            "(CLI: --control, suites: controls = [...])."
        )
    if reference and not localizer.accepts_reference:
        raise LocatorError(f"method {localizer.name!r} does not take a reference localization.")


def _ranked(scores: Tensor, count: int) -> Tensor:
    """Column indices ``[rows, count]`` of the `count` largest entries of each row of `scores`
    (``[rows, n]``), in the tie rule's order: score descending, then column ascending.

    `torch.topk` picks among equal scores in no defined order (it differs between devices and
    versions), so only its boundary value is used: every entry above it is taken, and of the
    entries equal to it, those of lowest column until the count is reached. The result does
    not depend on the device, and any prefix is the top of a smaller count under the same rule.
    """
    rows, n = scores.shape
    count = min(count, n)
    if count == 0:
        return torch.empty(rows, 0, dtype=torch.long, device=scores.device)
    boundary = torch.topk(scores, count, dim=1, sorted=False).values.amin(1, keepdim=True)
    taken = scores > boundary  # [rows, n]
    room = count - taken.sum(1)  # [rows]: how many tied entries each row takes
    tied = (scores == boundary).nonzero()  # [ties, 2], row-major: columns ascending per row
    per_row = torch.bincount(tied[:, 0], minlength=rows)
    first = per_row.cumsum(0) - per_row  # where each row's ties start in `tied`
    rank = torch.arange(tied.shape[0], device=tied.device) - first[tied[:, 0]]
    kept = tied[rank < room[tied[:, 0]]]
    taken[kept[:, 0], kept[:, 1]] = True  # now exactly `count` per row
    columns = taken.nonzero()[:, 1].view(rows, count)  # ascending within each row
    values = scores.gather(1, columns)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    return columns.gather(1, order)


def top_indices(scores: Tensor, count: int) -> Tensor:
    """Flat indices of the `count` largest scores, largest first, so that every prefix is the
    top of a smaller count. Ties go to the lower flat index (the tie rule, see `_ranked`)."""
    return _ranked(scores.reshape(1, -1), count)[0]


def top_cuts(
    scores: Tensor,
    proportions: Sequence[float],
    group: Literal["matrix", "row"] = "matrix",
    count: Callable[[float, int], int] = top_count,
) -> list[Tensor]:
    """For each proportion K, flat CPU indices into ``scores`` (``[d_out, d_in]``) of its
    largest entries: the top ``count(K, numel)`` of the matrix (``group="matrix"``) or the top
    ``count(K, d_in)`` of every row (``"row"``), all cut from one ranking. `count` is
    `top_count` (floor) unless a method counts otherwise. Ties go to the lower index."""
    if group == "row":
        d_out, d_in = scores.shape
        counts = [count(p, d_in) for p in proportions]
        # Columns of each row's largest scores, best first: [d_out, max count].
        columns = _ranked(scores, max(counts)).cpu()
        row_starts = torch.arange(d_out)[:, None] * d_in  # [d_out, 1]
        return [(row_starts + columns[:, :k]).flatten() for k in counts]
    counts = [count(p, scores.numel()) for p in proportions]
    ranked = top_indices(scores, max(counts)).cpu()
    return [ranked[:k] for k in counts]


# The registry and the one-call API.


def localizers() -> Registry[type[Localizer]]:
    """The registry of installed methods (`Localizer` subclasses), by name; `source(name)` is
    the plugin that registered one."""
    return registry(
        "register_localizers", "localizer", lambda cls: cls.name, expected=Localizer, classes=True
    )


def list_localizers() -> list[str]:
    """Names of the installed localization methods."""
    return localizers().names()


def localizer_class(name: str) -> type[Localizer]:
    """The registered `Localizer` subclass called `name`."""
    return localizers().get(name)


def get_localizer(name: str, options: Mapping[str, Any] | None = None) -> Localizer:
    """An instance of method `name` configured with `options` (Python values or strings, parsed
    by `make_config`; unknown keys are errors)."""
    cls = localizer_class(name)
    return cls(make_config(cls, options or {}))


def statistic_kinds(localizers: Iterable[Localizer]) -> frozenset[str]:
    """The statistic kinds several methods read together, to collect in one pass per corpus.

    Example::

        methods = [get_localizer("mathneuro"), get_localizer("snip"), get_localizer("lape")]
        kinds = statistic_kinds(methods)
        stats = [collect_statistics(model, tokenizer, texts, kinds=kinds) for texts in corpora]
        context = build_context(model, stats[0], stats[1:])
        found = {method.name: method.localize_many(context, proportions) for method in methods}
    """
    return frozenset().union(*(localizer.statistics for localizer in localizers))


def build_context(
    model: nn.Module,
    target: ActivationStats,
    controls: Sequence[ActivationStats] = (),
    *,
    seed: int = 0,
    reference: Localization | None = None,
    reference_label: str | None = None,
    head: bool = False,
) -> LocalizationContext:
    """The context for localizing on `model` from already collected statistics; a matched
    baseline's `reference` is recorded as `reference_label` (default: its method name); with
    `head` its parameters include the untied output head (for methods with `scores_head`), as
    they do when the `reference` selects in it (a matched baseline copies its count there too)."""
    if reference is not None:  # a reference made for another model must not be matched
        reference.check(model, strict=True)
        head = head or not set(reference.selections) <= set(scored_parameters(model))
    parameters = scored_parameters(model, head=head)
    named = dict(model.named_parameters())
    weights = {name: named[name].detach() for name in parameters}
    return LocalizationContext(
        parameters=parameters,
        weights=weights,
        target=target,
        controls=tuple(controls),
        seed=seed,
        reference=reference,
        reference_label=reference_label,
    )


def checked_localizer(
    method: str | Localizer,
    options: Mapping[str, Any] | None,
    *,
    proportion: float,
    seed: int,
    controls: Sequence[object],
    reference: object | None,
) -> Localizer:
    """The configured method of a `localize` call, with every check of its request made
    (`check_request`): the one place `localize` and the CLI check a request."""
    if isinstance(method, Localizer):
        if options is not None:
            raise LocatorError("give options either in the Localizer or in options=, not both.")
        localizer = method
    else:
        localizer = get_localizer(method, options)
    if isinstance(controls, str):
        raise LocatorError("controls must be a list of corpora, e.g. controls=['race'].")
    check_request(
        localizer,
        proportions=[proportion],
        seed=seed,
        controls=len(controls),
        reference=reference is not None,
    )
    return localizer


def localize(
    model: nn.Module,
    tokenizer: Any,
    *,
    method: str | Localizer,
    target: str | Corpus | Sequence[str],
    controls: Sequence[str | Corpus | Sequence[str]] = (),
    proportion: float,
    options: Mapping[str, Any] | None = None,
    seed: int = 0,
    batch_size: int = 8,
    max_length: int | None = None,
    pack: int | None = None,
    reference: Localization | None = None,
    progress: bool = True,
    cache_dir: str | Path | None = None,
    num_samples: int = 500,
    replace: bool = False,
    data_dir: str | Path | None = None,
) -> Localization:
    """Find the entries of `model` that carry the skill shown by the `target` corpus.

    `method` is a method name configured by `options` (``{"norm": "per_sample"}``; see
    `locator localizers`), or an already configured `Localizer` (then `options` must be None).
    A corpus is a dataset name (``"gsm8k"``: `num_samples` texts of its calibration split
    drawn under `seed`, with replacement if `replace`, from `data_dir` or the hub), a
    `Corpus` from `locator.sample_corpus`, or a list of texts used as given. `controls` is a
    list of corpora whose top entries are removed by methods that use them. Each corpus is read
    one row per text (`max_length` truncates), or with `pack` = N as one token stream cut into
    rows of N tokens (LAPE's original input; see `locator.stats.token_rows`). `reference` is the
    localization a matched baseline (``random``) copies its per-matrix counts from. With
    `cache_dir`, statistics are read from and written to an on-disk cache, so a repeated call
    with another method, proportion or option runs no pass over the model.
    """
    localizer = checked_localizer(
        method, options, proportion=proportion, seed=seed, controls=controls, reference=reference
    )
    calibration = CalibrationOptions(
        num_samples=num_samples,
        with_replacement=replace,
        batch_size=batch_size,
        max_length=max_length,
        pack=pack,
    )
    corpora = [
        resolve_corpus(
            corpus, role, num_samples=num_samples, seed=seed, replace=replace, data_dir=data_dir
        )
        for role, corpus in [("target", target)]
        + [(f"control{i}", control) for i, control in enumerate(controls)]
    ]
    collect: Any = collect_statistics
    if cache_dir is not None:
        from locator.cache import cached_statistics, model_fingerprint

        key = model_fingerprint(model)
        collect = partial(cached_statistics, cache_dir=cache_dir, model_key=key)
    collected = [
        collect(
            model,
            tokenizer,
            texts,
            kinds=localizer.statistics,
            batch_size=calibration.batch_size,
            max_length=calibration.max_length,
            pack=calibration.pack,
            corpus=label,
            progress=progress,
        )
        for label, texts in corpora
    ]
    context = build_context(
        model,
        collected[0],
        collected[1:],
        seed=seed,
        reference=reference,
        head=localizer.scores_head,
    )
    return with_provenance(
        localizer.localize(context, proportion),
        model=model_identity(model),
        corpora=corpora,
        max_length=max_length,
    )
