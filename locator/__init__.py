"""locator: find, compare and edit the parameters of a language model that carry one skill.

The public API is imported lazily: ``import locator`` loads neither torch nor any plugin. It is
also all a plugin needs: `Localizer`, `LocalizationContext`, `Selection`, `Neurons`,
`Localization`, the statistics (`StatisticKind`, `Activations`, `WeightGradients`, `Forward`,
`Feed`), the ranking helpers (`top_count`, `top_indices`, `top_cuts`, `ranked_selections`,
`split_neurons`), the model runner and its edits (`ModelRunner`, `Batch`, `scale`, `replace`,
`record`, `compose`), datasets (`Dataset`, `HubDataset`, `Record`, `load_hub_split`,
`read_records`), evaluators (`Evaluator`, `EvaluationRequest`, `Evaluation`, `ItemScore`,
`Results`), model sources (`ModelSource`, `model_cache_dir`, `atomic_directory`),
`Options` and `option` (a method's config and its fields; `click_options` makes an option
set a command's flags), `MlpLayout` and `hookimpl`, and for
evaluators the held-out texts of ``nll:<corpus>`` tasks (`NLL_PREFIX`, `corpus_of_task`,
`held_out_texts`, `is_file_corpus`), `read_text`, `offline_variable` and `LOAD_PLUGINS_VARIABLE`.

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
    "Activations": "locator.stats",
    "ActivationStats": "locator.stats",
    "Forward": "locator.stats",
    "StatisticKind": "locator.stats",
    "WeightGradients": "locator.stats",
    "list_statistics": "locator.stats",
    "Feed": "locator.rows",
    "collect_statistics": "locator.passes",
    "top_count": "locator.ranking",
    "top_cuts": "locator.ranking",
    "top_indices": "locator.ranking",
    "ranked_selections": "locator.ranking",
    "split_neurons": "locator.ranking",
    "Localization": "locator.localization",
    "Selection": "locator.localization",
    "Neurons": "locator.localization",
    "Localizer": "locator.localizer",
    "LocalizationContext": "locator.localizer",
    "NoConfig": "locator.localizer",
    "build_context": "locator.localizer",
    "get_localizer": "locator.localizer",
    "list_localizers": "locator.localizer",
    "localize": "locator.localizer",
    "run_method": "locator.localizer",
    "statistic_kinds": "locator.localizer",
    "intervene": "locator.intervention",
    "apply": "locator.intervention",
    "MlpLayout": "locator.architecture",
    "ScoredParameter": "locator.architecture",
    "scored_parameters": "locator.architecture",
    "LOAD_PLUGINS_VARIABLE": "locator.plugins",
    "list_plugins": "locator.plugins",
    "register_plugin": "locator.plugins",
    "CalibrationOptions": "locator.data",
    "Corpus": "locator.data",
    "Dataset": "locator.data",
    "HubDataset": "locator.data",
    "Record": "locator.data",
    "load_hub_split": "locator.data",
    "offline_variable": "locator.data",
    "read_records": "locator.data",
    "get_dataset": "locator.data",
    "list_datasets": "locator.data",
    "render_chat": "locator.data",
    "sample_corpus": "locator.data",
    "Evaluation": "locator.evaluation",
    "EvaluationOptions": "locator.evaluation",
    "EvaluationRequest": "locator.evaluation",
    "Evaluator": "locator.evaluation",
    "ItemScore": "locator.evaluation",
    "Results": "locator.evaluation",
    "evaluate": "locator.evaluation",
    "list_tasks": "locator.evaluation",
    "ModelOptions": "locator.models",
    "ModelSource": "locator.models",
    "list_models": "locator.models",
    "load_model": "locator.models",
    "model_cache_dir": "locator.models",
    "atomic_directory": "locator.io",
    "read_text": "locator.io",
    "NLL_PREFIX": "locator.heldout",
    "corpus_of_task": "locator.heldout",
    "held_out_texts": "locator.heldout",
    "is_file_corpus": "locator.heldout",
    "click_options": "locator.options",
    "option": "locator.options",
    "Options": "locator.options",
    "Batch": "locator.runs",
    "ModelRunner": "locator.runs",
    "compose": "locator.runs",
    "record": "locator.runs",
    "replace": "locator.runs",
    "scale": "locator.runs",
}

__all__ = [
    "LocatorError",
    "LocatorWarning",
    "UnknownNameError",
    "__version__",
    "hookimpl",
    *_LAZY,
]

# ruff: noqa: F401 (for type checkers only: __all__ names these through _LAZY)
if TYPE_CHECKING:
    from locator.architecture import MlpLayout, ScoredParameter, scored_parameters
    from locator.data import (
        CalibrationOptions,
        Corpus,
        Dataset,
        HubDataset,
        Record,
        get_dataset,
        list_datasets,
        load_hub_split,
        offline_variable,
        read_records,
        render_chat,
        sample_corpus,
    )
    from locator.evaluation import (
        Evaluation,
        EvaluationOptions,
        EvaluationRequest,
        Evaluator,
        ItemScore,
        Results,
        evaluate,
        list_tasks,
    )
    from locator.heldout import NLL_PREFIX, corpus_of_task, held_out_texts, is_file_corpus
    from locator.intervention import apply, intervene
    from locator.io import atomic_directory, read_text
    from locator.localization import Localization, Neurons, Selection
    from locator.localizer import (
        LocalizationContext,
        Localizer,
        NoConfig,
        build_context,
        get_localizer,
        list_localizers,
        localize,
        run_method,
        statistic_kinds,
    )
    from locator.models import ModelOptions, ModelSource, list_models, load_model, model_cache_dir
    from locator.options import Options, click_options, option
    from locator.passes import collect_statistics
    from locator.plugins import LOAD_PLUGINS_VARIABLE, list_plugins, register_plugin
    from locator.ranking import ranked_selections, split_neurons, top_count, top_cuts, top_indices
    from locator.rows import Feed
    from locator.runs import Batch, ModelRunner, compose, record, replace, scale
    from locator.stats import (
        Activations,
        ActivationStats,
        Forward,
        StatisticKind,
        WeightGradients,
        list_statistics,
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'locator' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
