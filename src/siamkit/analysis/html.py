"""Self-contained HTML pages: the style, tables and inlined PNGs the reports share.

A page written with these loads no script, style sheet, font or image from anywhere: the plots
are base64 PNG data URIs, so the file can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
.note { color: #666; font-size: 0.9em; }
"""


def fmt(value: Any) -> str:
    """A cell's text: floats to 4 significant digits, lists and dicts as JSON."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def img(png: Path, alt: str) -> str:
    """An ``<img>`` with the PNG inlined as a data URI."""
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def table(header: list[str], rows: list[list[Any]]) -> str:
    """An HTML table; numbers are right-aligned."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{html.escape(fmt(v))}</td>'
            if isinstance(v, (int, float))
            else f"<td>{html.escape(fmt(v))}</td>"
            for v in row
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def page(title: str, body: str) -> str:
    """A whole HTML document with the shared style."""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )


__all__ = ["STYLE", "fmt", "img", "page", "table"]
