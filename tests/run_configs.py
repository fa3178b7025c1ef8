"""Run configs for the tests: a pipeline.toml from Python values.

Most flow tests want one corpus, BERT at max_length 16 and nothing else: word2vec, the head,
the static classifier and the report are off unless a section is given (a section replaces
the default one whole).

    >>> print(run_config_text(model="m", corpus="news", sources=[{"path": "d/*.jsonl", "format": "jsonl"}]))
    ... # doctest: +ELLIPSIS
    model = "m"
    [[corpora]]
    name = "news"
    sources = [{path = "d/*.jsonl", format = "jsonl"}]
    [bert]
    max_length = 16
    ...
"""

from __future__ import annotations

import json
from pathlib import Path

DEFAULT_SECTIONS = {"bert": {"max_length": 16}, "word2vec": {"enabled": False}, "head": {"enabled": False},
                    "static": {"enabled": False}, "report": {"enabled": False}}


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return json.dumps(str(v))                                   # a TOML basic string is a JSON string


def run_config_text(*, model: str, corpus: str, sources: list, store: str | Path | None = None,
                    **sections: dict) -> str:
    lines = [f"store = {_value(store)}"] if store is not None else []
    lines += [f"model = {_value(model)}", "[[corpora]]", f"name = {_value(corpus)}",
              f"sources = {_value(list(sources))}"]
    for name, values in {**DEFAULT_SECTIONS, **sections}.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def write_run_config(path: Path, **kw) -> Path:
    """`run_config_text(**kw)` written to `path`; returns the path."""
    path.write_text(run_config_text(**kw), encoding="utf-8")
    return path
