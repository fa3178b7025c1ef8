"""The format header every saved file of the stages carries, checked in one place (STYLE habit 5).

Every file embcache writes starts {"format": "embcache.<what>", "format_version": N} (the
store's own files too: storage/manifest.py). Files saved before names were unified spell
the name with a dash ("embcache-head"): they are still read.

>>> meta = json_header(files["head.json"], "head.json", "embcache.head", 1, "a classification head")
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import pyarrow as pa

from .errors import PipelineError

LEGACY_PREFIX = "embcache-"   # how format names were spelled before "embcache.<what>"


def check_header(header, where: str, fmt: str, version: int | str, what: str) -> None:
    """Raise PipelineError unless `header` (a mapping) names format `fmt` at `version`."""
    found = header.get("format") if isinstance(header, Mapping) else type(header).__name__
    if isinstance(found, str) and found.startswith(LEGACY_PREFIX):      # "embcache-finetune-checkpoint"
        found = "embcache." + found[len(LEGACY_PREFIX):].replace("-", "_")
    if found != fmt:
        raise PipelineError(where, f"not {what}: format {found!r}, expected {fmt!r}")
    if header.get("format_version") != version:
        raise PipelineError(where, f"format_version {header.get('format_version')!r} found, "
                                   f"this code reads {version}")


def json_header(data: bytes, where: str, fmt: str, version: int, what: str) -> dict:
    """A saved JSON object, after checking its format and version."""
    try:
        header = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PipelineError(where, f"not JSON: {err}") from None
    check_header(header, where, fmt, version, what)
    return header


def arrow_header(table: pa.Table, where: str, fmt: str, version: int, what: str,
                 schema: pa.Schema) -> dict[str, str]:
    """An Arrow table's schema metadata (str -> str), after checking format, version and columns."""
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    check_header(meta, where, fmt, str(version), what)
    if not table.schema.remove_metadata().equals(schema):
        raise PipelineError(where, f"columns {table.schema.names} differ from {schema.names}")
    return meta
