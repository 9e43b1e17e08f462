"""locator: find, compare and edit the parameters of a language model that carry one skill.

The public API is imported lazily: ``import locator`` loads neither torch nor any plugin.

Example::

    import locator
    localization = locator.localize(
        model, tokenizer, method="mathneuro", target=math_texts, controls=[prose_texts],
        proportion=0.05,
    )
    with locator.intervene(model, localization, 0.0):  # prune
        ...
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from locator.errors import LocatorError, LocatorWarning, UnknownNameError
from locator.plugins import hookimpl

__version__ = "0.1.0"

_LAZY = {
    "ActivationStats": "locator.stats",
    "StatisticKind": "locator.stats",
    "collect_statistics": "locator.stats",
    "list_statistics": "locator.stats",
    "Localization": "locator.localization",
    "Selection": "locator.localization",
    "Localizer": "locator.localizer",
    "LocalizationContext": "locator.localizer",
    "NoConfig": "locator.localizer",
    "build_context": "locator.localizer",
    "get_localizer": "locator.localizer",
    "list_localizers": "locator.localizer",
    "localize": "locator.localizer",
    "statistic_kinds": "locator.localizer",
    "intervene": "locator.intervention",
    "apply": "locator.intervention",
    "scored_parameters": "locator.architecture",
    "list_plugins": "locator.plugins",
    "register_plugin": "locator.plugins",
    "CalibrationOptions": "locator.data",
    "Corpus": "locator.data",
    "Dataset": "locator.data",
    "get_dataset": "locator.data",
    "list_datasets": "locator.data",
    "load_corpus": "locator.data",
    "render_chat": "locator.data",
    "sample_corpus": "locator.data",
    "Evaluation": "locator.evaluation",
    "EvaluationOptions": "locator.evaluation",
    "EvaluationRequest": "locator.evaluation",
    "Evaluator": "locator.evaluation",
    "evaluate": "locator.evaluation",
    "list_evaluators": "locator.evaluation",
    "list_tasks": "locator.evaluation",
    "ModelOptions": "locator.models",
    "ModelSource": "locator.models",
    "list_models": "locator.models",
    "load_model": "locator.models",
    "option": "locator.options",
}

__all__ = [
    "ActivationStats",
    "CalibrationOptions",
    "Corpus",
    "Dataset",
    "Evaluation",
    "EvaluationOptions",
    "EvaluationRequest",
    "Evaluator",
    "Localization",
    "LocalizationContext",
    "Localizer",
    "LocatorError",
    "LocatorWarning",
    "ModelOptions",
    "ModelSource",
    "NoConfig",
    "Selection",
    "StatisticKind",
    "UnknownNameError",
    "__version__",
    "apply",
    "build_context",
    "collect_statistics",
    "evaluate",
    "get_dataset",
    "get_localizer",
    "hookimpl",
    "intervene",
    "list_datasets",
    "list_evaluators",
    "list_localizers",
    "list_models",
    "list_plugins",
    "list_statistics",
    "list_tasks",
    "load_corpus",
    "load_model",
    "localize",
    "option",
    "register_plugin",
    "render_chat",
    "sample_corpus",
    "scored_parameters",
    "statistic_kinds",
]

if TYPE_CHECKING:
    from locator.architecture import scored_parameters
    from locator.data import (
        CalibrationOptions,
        Corpus,
        Dataset,
        get_dataset,
        list_datasets,
        load_corpus,
        render_chat,
        sample_corpus,
    )
    from locator.evaluation import (
        Evaluation,
        EvaluationOptions,
        EvaluationRequest,
        Evaluator,
        evaluate,
        list_evaluators,
        list_tasks,
    )
    from locator.intervention import apply, intervene
    from locator.localization import Localization, Selection
    from locator.localizer import (
        LocalizationContext,
        Localizer,
        NoConfig,
        build_context,
        get_localizer,
        list_localizers,
        localize,
        statistic_kinds,
    )
    from locator.models import ModelOptions, ModelSource, list_models, load_model
    from locator.options import option
    from locator.plugins import list_plugins, register_plugin
    from locator.stats import ActivationStats, StatisticKind, collect_statistics, list_statistics


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'locator' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
