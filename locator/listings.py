"""Listings: what is installed, as rows of plain data (JSON-ready dicts).

The ``locator localizers``, ``statistics``, ``datasets``, ``models`` and ``plugins`` commands
print these rows as text or JSON; a notebook or another tool gets the same data without the
command line.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def localizer_rows() -> list[dict[str, Any]]:
    """Each installed method: name, plugin, first sentence of its docstring (its first
    paragraph, wrapped lines joined), statistic kinds, its
    options with their defaults, and (`help`, where the plugin gives any) their help."""
    from locator.localizer import localizers
    from locator.options import describe

    registry, rows = localizers(), []
    for name in registry.names():
        cls = registry.get(name)
        fields = describe(cls.Config)
        summary = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
        rows.append({
            "name": name, "plugin": registry.source(name), "description": summary,
            "statistics": sorted(cls.statistics),
            "options": {field["name"]: field["default"] for field in fields},
        })  # fmt: skip
        if any(field["help"] for field in fields):  # (a key only then: older output unchanged)
            rows[-1]["help"] = {field["name"]: field["help"] for field in fields if field["help"]}
    return rows


def statistic_rows() -> list[dict[str, Any]]:
    """Each statistic kind methods can declare: name, site, dtype and what it computes."""
    from locator.stats import statistics

    return [
        {"name": k.name, "site": k.site, "dtype": str(k.dtype).removeprefix("torch."),
         "description": k.description}
        for k in statistics().values()
    ]  # fmt: skip


def dataset_rows() -> list[dict[str, Any]]:
    """Each installed dataset: plugin, splits, calibration split, evaluation task, source."""
    from locator.data import datasets

    registry = datasets()
    return [
        {"name": name, "plugin": registry.source(name), "description": dataset.description,
         "splits": list(dataset.splits), "calibration_split": dataset.calibration_split,
         "task": dataset.task, "source": dataset.source()}
        for name in registry.names()
        for dataset in [registry.get(name)]
    ]  # fmt: skip


def model_rows() -> list[dict[str, Any]]:
    """Each model known by short name: hub id, where its local copy is (``hub`` when none),
    whether that copy exists yet (`built`: else its first load builds it), size, description
    and how to install it."""
    from locator.models import get_model_source, list_models

    return [
        {"name": name, "hub_id": source.hub_id, "source": "hub" if found is None else str(found),
         "built": found is not None and found.exists(), "size": source.size,
         "description": source.description, "install": source.install_hint()}
        for name in list_models()
        for source in [get_model_source(name)]
        for found in [source.find()]
    ]  # fmt: skip


def plugin_rows() -> list[dict[str, Any]]:
    """Each loaded plugin: its `locator.plugins.PluginInfo` (name, distribution, version,
    hooks) as a dict."""
    from locator.plugins import list_plugins

    return [dataclasses.asdict(info) for info in list_plugins()]
