"""A document written twice: as Markdown beside its figure files, and as one self-contained HTML
file with the PNG figures embedded (no external source, script or style sheet)."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class Document:
    """Headings, paragraphs, tables and figures, rendered as Markdown and as HTML."""

    def __init__(self, out: Path) -> None:
        self.out = out  # the folder the document and its figures are written to
        self.blocks: list[tuple[str, Any]] = []

    def heading(self, level: int, text: str) -> None:
        """A heading of `level` (1 = the title)."""
        self.blocks.append(("heading", (level, text)))

    def text(self, text: str) -> None:
        """A paragraph; `code` and **bold** as in Markdown."""
        self.blocks.append(("text", text))

    def table(self, header: Sequence[str], body: Sequence[Sequence[str]]) -> None:
        """A table of formatted cells, the first column left-aligned, the others right."""
        self.blocks.append(("table", (list(header), [list(r) for r in body])))

    def figure(self, paths: Sequence[Path] | None, caption: str) -> None:
        """A figure saved as (PNG, SVG) `paths`; nothing when `paths` is None (not drawn)."""
        if paths:
            self.blocks.append(("figure", (paths, caption)))

    def markdown(self) -> str:
        """The document as Markdown, figures linked by file name."""
        lines: list[str] = []
        for kind, value in self.blocks:
            if kind == "heading":
                lines += ["#" * value[0] + " " + value[1], ""]
            elif kind == "text":
                lines += [value, ""]
            elif kind == "table":
                header, body = value
                lines.append("| " + " | ".join(header) + " |")
                lines.append(
                    "|" + "".join("---|" if i == 0 else "--:|" for i in range(len(header)))
                )
                lines += ["| " + " | ".join(cells) + " |" for cells in body]
                lines.append("")
            else:
                paths, caption = value
                png, svg = paths
                lines += [f"![{caption}]({png.name})", "", f"{caption} ([SVG]({svg.name}))", ""]
        return "\n".join(lines)

    def html(self, title: str) -> str:
        """The document as one HTML page, figures embedded as base64 PNG."""
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title>",
            "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
            "td,th{border:1px solid #ccc;padding:2px 6px}td{text-align:right;"
            "font-variant-numeric:tabular-nums}td:first-child{text-align:left}"
            "img{max-width:100%}figcaption{font-size:0.9em;color:#444}</style>",
            "</head><body>",
        ]
        for kind, value in self.blocks:
            if kind == "heading":
                level, text = value
                parts.append(f"<h{level}>{html.escape(text)}</h{level}>")
            elif kind == "text":
                parts.append(f"<p>{_inline_html(value)}</p>")
            elif kind == "table":
                header, body = value
                parts.append("<table><thead><tr>")
                parts += [f"<th>{html.escape(h)}</th>" for h in header]
                parts.append("</tr></thead><tbody>")
                for cells in body:
                    parts.append(
                        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
                    )
                parts.append("</tbody></table>")
            else:
                paths, caption = value
                data = base64.b64encode(paths[0].read_bytes()).decode("ascii")
                parts.append(
                    f'<figure><img alt="{html.escape(caption)}" '
                    f'src="data:image/png;base64,{data}">'
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>"
                )
        parts.append("</body></html>")
        return "\n".join(parts)


def _inline_html(text: str) -> str:
    """Markdown's `code` and **bold** in a paragraph, everything else escaped."""
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)
