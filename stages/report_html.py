"""The report's HTML pieces: escaping, numbers, tables, images, and its style sheet."""

from __future__ import annotations

import html

import numpy as np

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1f2328;max-width:1100px;margin:2em auto;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #d0d7de;padding-bottom:.2em;margin-top:2em}
h3{margin-top:1.4em}table{border-collapse:collapse;margin:.6em 0}th,td{border:1px solid #d0d7de;padding:.3em .6em}
th{background:#f6f8fa;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
.missing{color:#6e7781;font-style:italic}.meta{color:#57606a}img{max-width:100%;border:1px solid #d0d7de}
.bar{display:inline-block;height:.8em;background:#2da44e;vertical-align:middle}
.bar.c{background:#d0d7de}code{background:#f6f8fa;padding:0 .25em}nav a{margin-right:1em}
"""


def esc(v) -> str:
    return html.escape(str(v))


def num(v, digits: int = 4) -> str:
    """Counts with thousands separators, scores with `digits` decimals, "—" for none (plain text)."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return f"{v:,}" if isinstance(v, int) else f"{v:.{digits}f}"


class Raw(str):
    """A string that is already HTML."""


def table(head: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    """An HTML table; cells are escaped unless Raw, columns in `numeric` right-aligned."""
    def cell(i: int, c) -> str:
        return f"<td{' class=n' if i in numeric else ''}>{c if isinstance(c, Raw) else esc(c)}</td>"
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(cell(i, c) for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def missing(text: str) -> str:
    return f'<p class="missing">{esc(text)}</p>'


def img(file: str, alt: str) -> str:
    return f'<p><img src="{esc(file)}" alt="{esc(alt)}"></p>'
