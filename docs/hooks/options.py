"""mkdocs hook: the documentation's option and column tables, generated from the fields' help.

A docs page writes a marker alone on a line, and the built page has the table in its place, so
the tables cannot drift from the code:

- ``<!-- options: locator.ModelOptions -->``: the fields of an option class (name, type,
  default, help: `locator.options.describe`); ``... except num_samples -->`` leaves fields out;
- ``<!-- options: methods -->``: every registered method's config, one table;
- ``<!-- columns: locator.bench.results.Row -->``: the Parquet columns of a row type (name,
  Arrow type, help: `locator.bench.results.schema_of`).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
from typing import Any

MARKER = re.compile(r"^<!-- (options|columns): ([\w.]+)((?: except(?: \w+)+)?) -->$", re.M)


def resolve(name: str) -> Any:
    """The object a dotted name names (``locator.ModelOptions``)."""
    module, _, attribute = name.rpartition(".")
    return getattr(importlib.import_module(module), attribute)


def escape(cell: str) -> str:
    """A table cell as Markdown shows it: ``|`` escaped, and ``<`` and ``>`` outside code spans
    (a help's ``<name>``) written as entities, not read as an HTML tag."""
    parts = cell.replace("|", r"\|").split("`")
    parts[::2] = [part.replace("<", "&lt;").replace(">", "&gt;") for part in parts[::2]]
    return "`".join(parts)


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table of `rows` under `header`, each cell escaped."""
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(map(escape, line)) + " |" for line in lines)


def options(cls: type, leave_out: tuple[str, ...] = ()) -> list[list[str]]:
    """One table row per field of option class `cls`: name (and flag where it is not the
    name's), type, default, help."""
    from locator.options import describe

    return [
        [f"`{row['name']}`" + (f" (`{row['flag']}`)" if row["flag"] else ""), row["type"],
         default(row), row["help"]]
        for row in describe(cls)
        if row["name"] not in leave_out
    ]  # fmt: skip


def default(row: dict[str, Any]) -> str:
    """A field's default as JSON writes it (``"auto"``, ``false``), ``None``, or "required"."""
    if row["required"]:
        return "required"
    return "`None`" if row["default"] is None else f"`{json.dumps(row['default'])}`"


def render(kind: str, name: str, leave_out: tuple[str, ...] = ()) -> str:
    """The table a marker stands for (see the module docstring)."""
    if kind == "columns":
        from locator.bench.results import schema_of

        schema = schema_of(resolve(name))
        rows = [
            [f"`{f.name}`", f"{column.type}{' or null' * column.nullable}", f.metadata["help"]]
            for f in dataclasses.fields(resolve(name))
            for column in [schema.field(f.name)]
        ]
        return table(["column", "type", "meaning"], rows)
    if name != "methods":
        return table(["option", "type", "default", "meaning"], options(resolve(name), leave_out))
    from locator.localizer import localizers

    registry, rows = localizers(), []
    for method in registry.names():
        found = options(registry.get(method).Config) or [["(none)", "", "", ""]]
        rows += [[f"`{method}`" if i == 0 else "", *row] for i, row in enumerate(found)]
    return table(["method", "option", "type", "default", "meaning"], rows)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """mkdocs' hook: every marker of a page replaced by its table."""
    return MARKER.sub(lambda m: render(m[1], m[2], tuple(m[3].split()[1:])), markdown)
