"""The `Localizer` base class, its configs, the context a method receives, and `localize`.

A method is a `Localizer` subclass with a `name`, an optional frozen `Config` dataclass, the
statistic kinds it needs, and ``localize(context, proportion)``. It reads the weights and
statistics in the `LocalizationContext`, never edits weights or registers hooks, and returns
bare selections: a dict of parameter name -> `Selection`, or `Neurons` for a neuron-level
method. Methods that cut many proportions from one ranking (`locator.ranking`) override
``localize_many(context, proportions)``, which returns one selection per proportion.
`run_method` is the one place a method is run: it checks what the method returned and wraps it
into a `Localization` with the method's metadata and what a matched baseline copied
(`matched_to`); `localize` adds the provenance.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from locator.architecture import ScoredParameter, scored_parameters
from locator.cache import cached_statistics, model_fingerprint
from locator.corpora import corpus_kind
from locator.data import CalibrationOptions, Corpus, draw_corpus, resolve_corpus
from locator.errors import LocatorError, UnknownNameError
from locator.heldout import calibration_texts
from locator.io import check_output_file
from locator.localization import Localization, Neurons, Selection, is_localization_file
from locator.models import ModelOptions, check_calibration
from locator.options import OptionError, parse
from locator.plugins import Registry, registry
from locator.provenance import file_hash, model_identity, with_provenance
from locator.rows import check_corpora, corpus_rows, model_positions
from locator.runs import ModelRunner, running
from locator.stats import ActivationStats

Selected = Mapping[str, Selection] | Neurons
"""What a method returns for one proportion: parameter name -> `Selection` (a parameter left
out selects nothing), or the `Neurons` of a neuron-level method."""


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
    runner: ModelRunner | None = None  # set for methods that run the model (`runs_model`)

    def matrix(self, name: str) -> Tensor:
        """The weight of `name` as ``[d_out, d_in]`` (a view, no copy)."""
        weight = self.weights[name]
        return weight.t() if self.parameters[name].transposed else weight

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
    sets them in ``__init__``. `runs_model`: True for a method that runs the model itself
    (its context then carries a `locator.runs.ModelRunner`, see that module).
    """

    name: ClassVar[str]
    Config: ClassVar[type] = NoConfig
    statistics: frozenset[str] = frozenset()
    accepts_reference: ClassVar[bool] = False
    min_controls: ClassVar[int] = 0
    uses_controls: ClassVar[bool] = True
    scores_head: bool = False
    runs_model: ClassVar[bool] = False

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

    def localize(self, context: LocalizationContext, proportion: float) -> Selected:
        """Select the entries for one proportion (by default, `localize_many` of one)."""
        return self.localize_many(context, [proportion])[0]

    def localize_many(
        self, context: LocalizationContext, proportions: Sequence[float]
    ) -> Sequence[Selected]:
        """Select for several proportions, one each; override it to cut them from one ranking."""
        return [self.localize(context, proportion) for proportion in proportions]


def run_method(
    model: nn.Module,
    localizer: Localizer,
    context: LocalizationContext,
    proportions: Sequence[float],
) -> list[Localization]:
    """The one place a method runs: `localizer` on `context` (built from `model`) under
    `locator.runs.running`, its result checked (a `Selected` per proportion, over scored
    parameters; else a one-line `LocatorError` naming the method) and wrapped into a
    `Localization` per proportion with the method, its config, the seed, the corpora it read
    and what a matched baseline copied (`matched_to`)."""
    what = f"method {localizer.name!r}"
    if localizer.runs_model and context.runner is None:
        raise LocatorError(
            f"{what} runs the model, and its context has no runner: build one with "
            "locator.runs.ModelRunner.build and pass it to build_context(runner=...) "
            "(locator.localize and suites do)."
        )
    with running(model, what):
        found = localizer.localize_many(context, proportions)
    if not isinstance(found, (list, tuple)) or len(found) != len(proportions):
        given = (
            f"{len(found)} results"
            if isinstance(found, (list, tuple))
            else f"a {type(found).__name__}"
        )
        raise LocatorError(
            f"{what} returned {given} for {len(proportions)} proportions; localize_many must "
            "return a list of one selection per proportion."
        )
    reference = context.reference
    metadata = {
        "method": localizer.name,
        "config": dataclasses.asdict(localizer.config),
        "seed": context.seed,
        "target": context.target.corpus,
        "controls": tuple(s.corpus for s in context.controls) if localizer.uses_controls else (),
        "matched_to": None if reference is None else context.reference_label or reference.method,
    }
    return [
        _wrap(context, selected, {**metadata, "proportion": proportion})
        for selected, proportion in zip(found, proportions, strict=True)
    ]


def _wrap(
    context: LocalizationContext, selected: Selected, metadata: dict[str, Any]
) -> Localization:
    """One proportion's checked selection as a `Localization` (see `run_method`)."""
    what = f"method {metadata['method']!r}"
    if not isinstance(selected, Mapping):
        raise LocatorError(
            f"{what} returned a {type(selected).__name__} for proportion "
            f"{metadata['proportion']}; return a dict of parameter name -> Selection, or Neurons."
        )
    parameters = context.parameters
    unknown = [name for name in selected if name not in parameters]
    if unknown:
        raise LocatorError(
            f"{what} selected in {unknown[0]!r}, which is not a scored parameter (they are "
            f"named like {next(iter(parameters), '')!r})."
        )
    if isinstance(selected, Neurons):
        try:
            return Localization.from_neurons(selected, parameters, **metadata)
        except LocatorError as error:  # an index out of range
            raise LocatorError(f"{what}: {error}") from None
    for name, selection in selected.items():
        shape = parameters[name].shape
        if not isinstance(selection, Selection) or selection.shape != shape:
            given = f"{type(selection).__name__} of shape {list(getattr(selection, 'shape', ()))}"
            raise LocatorError(
                f"{what} returned a {given} for {name!r}; give a Selection of its shape "
                f"{list(shape)} (Selection.from_indices or Selection.from_mask)."
            )
    empty = torch.empty(0, dtype=torch.long)
    selections = {name: Selection.from_indices(empty, p.shape) for name, p in parameters.items()}
    return Localization(selections={**selections, **selected}, **metadata)


# Configs: built from Python values or from strings (CLI, TOML), checked against field types.


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


def check_request(
    localizer: Localizer | None = None,
    *,
    proportions: Sequence[float] = (),
    seed: int | None = None,
    controls: int | None = None,
    reference: bool = False,
) -> None:
    """The checks of a localization request, in one place (`localize`, the CLI and suites call it
    before any expensive work; methods rely on it): the proportions and the seed and, with a
    `localizer`, the number of `controls` it is given and whether it takes a `reference`.
    Raises a one-line `LocatorError`."""
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


# The registry and the one-call API.


def localizers() -> Registry[type[Localizer]]:
    """The registry of installed methods (`Localizer` subclasses), by name; `source(name)` is
    the plugin that registered one."""
    return registry("register_localizers")


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
        found = {m.name: run_method(model, m, context, proportions) for m in methods}
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
    runner: ModelRunner | None = None,
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
        runner=runner,
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


def localize_to_file(
    model: ModelOptions,
    out: str | Path,
    *,
    method: str,
    target: str,
    controls: Sequence[str] = (),
    proportion: float,
    options: Mapping[str, Any] | None = None,
    seed: int = 0,
    reference: str | Path | None = None,
    calibration: CalibrationOptions | None = None,
    data_dir: str | Path | None = None,
) -> tuple[Localization, Path]:
    """`localize` the model `model` (a `locator.ModelOptions`) and save the result to `out`
    (``locator localize``); return it and the path written.

    Every check is made before the model loads: the request, the output file (only a
    localization file is replaced), the model, the corpora and the calibration
    (`locator.models.check_calibration`). A corpus value is drawn as `localize` draws it,
    except that a JSON Lines file is used as given (its texts not held out for
    ``nll:<file>``), labelled by its role (``target``, ``control0``, ...), with its file name
    and SHA-256 added to its provenance entry. `reference` is a localization file to match.
    """
    calibration = calibration or CalibrationOptions()
    localizer = checked_localizer(
        method, options, proportion=proportion, seed=seed, controls=controls, reference=reference
    )
    check_output_file(out, overwrite=is_localization_file)
    model.check()
    files = {}
    corpora: list[Any] = []
    for value in (target, *controls):  # a path (even a missing one), a task or a dataset
        if corpus_kind(value) == "file":
            corpora.append(calibration_texts(value))
            files[len(corpora) - 1] = {"file": Path(value).name, "file_sha256": file_hash(value)}
        else:
            corpora.append(draw_corpus(value, calibration, seed=seed, data_dir=data_dir))
    check_calibration(model, corpora, calibration)  # before the model loads
    matched = Localization.load(reference) if reference else None
    loaded, tokenizer = model.load()
    result = localize(
        loaded,
        tokenizer,
        method=localizer,
        target=corpora[0],
        controls=corpora[1:],
        proportion=proportion,
        seed=seed,
        calibration=calibration,
        reference=matched,
    )
    described = [dict(c, **files.get(i, {})) for i, c in enumerate(result.provenance["corpora"])]
    result = dataclasses.replace(result, provenance={**result.provenance, "corpora": described})
    return result, result.save(out, overwrite=True)  # check_output_file allowed a localization


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
    calibration: CalibrationOptions | None = None,
) -> Localization:
    """Find the entries of `model` that carry the skill shown by the `target` corpus.

    `method` is a method name configured by `options` (``{"norm": "per_sample"}``; see
    `locator localizers`), or an already configured `Localizer` (then `options` must be None).
    A corpus is a corpus value (a dataset name ``"gsm8k"``, a JSON Lines file of texts or
    ``"task:<evaluation task>"``: `num_samples` calibration texts drawn under `seed`, with
    replacement if `replace`, from `data_dir` or the hub, none of them one that
    ``nll:<corpus>`` or the task evaluates; see `locator.corpora`), a `Corpus` from
    `locator.sample_corpus`, or a list of texts used as given. `controls` is a
    list of corpora whose top entries are removed by methods that use them. Each corpus is read
    one row per text (`max_length` truncates), or with `pack` = N as one token stream cut into
    rows of N tokens (LAPE's original input; see `locator.rows.token_rows`). `calibration` (a
    `locator.CalibrationOptions`, which adds `chat_template`) gives these options as one object
    instead of `batch_size`, `max_length`, `pack`, `num_samples` and `replace`. `reference` is
    the localization a matched baseline (``random``) copies its per-matrix counts from. With
    `cache_dir`, statistics are read from and written to an on-disk cache, so a repeated call
    with another method, proportion or option runs no pass over the model.
    """
    localizer = checked_localizer(
        method, options, proportion=proportion, seed=seed, controls=controls, reference=reference
    )
    keywords = CalibrationOptions(
        num_samples=num_samples,
        with_replacement=replace,
        batch_size=batch_size,
        max_length=max_length,
        pack=pack,
    )
    if calibration is not None and keywords != CalibrationOptions():
        raise LocatorError(
            "give the calibration options either as calibration= or as keywords (batch_size, "
            "max_length, pack, num_samples, replace), not both."
        )
    calibration = calibration or keywords
    corpora = [
        resolve_corpus(corpus, role, calibration, seed=seed, data_dir=data_dir, tokenizer=tokenizer)
        for role, corpus in [("target", target)]
        + [(f"control{i}", control) for i, control in enumerate(controls)]
    ]
    check_corpora(corpora)  # before any pass: no empty corpus, no control equal to the target
    positions = model_positions(model)
    rows = [
        (label, corpus_rows(tokenizer, texts, calibration, label, positions))
        for label, texts in corpora
    ]
    key = None if cache_dir is None else model_fingerprint(model)
    collected = [
        cached_statistics(
            model,
            tokenizer,
            texts,
            made,
            cache_dir=cache_dir,
            kinds=localizer.statistics,
            batch_size=calibration.batch_size,
            corpus=label,
            progress=progress,
            model_key=key,
        )
        for (label, texts), (_, made) in zip(corpora, rows, strict=True)
    ]
    runner = None
    if localizer.runs_model:  # on the rows the statistics read, not tokenized again
        runner = ModelRunner(model, rows, calibration.batch_size, seed=seed, progress=progress)
    context = build_context(
        model,
        collected[0],
        collected[1:],
        seed=seed,
        reference=reference,
        head=localizer.scores_head,
        runner=runner,
    )
    (found,) = run_method(model, localizer, context, [proportion])
    return with_provenance(
        found,
        model=model_identity(model),
        corpora=corpora,
        calibration=calibration,
        positions=positions,
        reference=reference,
    )
