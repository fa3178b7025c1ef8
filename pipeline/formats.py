"""The format header of the pipeline's saved files, checked by common/formats.py (STYLE habit 5),
its mismatches raised as PipelineError naming the file.

Every file embcache writes starts {"format": "embcache.<what>", "format_version": N} (the
store's own files too: storage/manifest.py). Files saved before names were unified spell
the name with a dash ("embcache-head"): they are still read.

>>> meta = json_header(files["head.json"], "head.json", "embcache.head", 1, "a classification head")
"""

from __future__ import annotations

import pyarrow as pa

from ..common.formats import Format, HeaderMismatch, check, metadata_header, parse_json
from .errors import PipelineError


def check_header(header, where: str, fmt: str, version: int | str, what: str) -> None:
    """Raise PipelineError unless `header` (a mapping) names format `fmt` at `version`."""
    try:
        check(header, Format(fmt, int(version)), what)
    except HeaderMismatch as e:
        raise PipelineError(where, str(e)) from None


def json_header(data: bytes, where: str, fmt: str, version: int, what: str) -> dict:
    """A saved JSON object, after checking its format and version."""
    try:
        return parse_json(data, Format(fmt, version), what)
    except HeaderMismatch as e:
        raise PipelineError(where, str(e)) from None


def arrow_header(table: pa.Table, where: str, fmt: str, version: int, what: str,
                 schema: pa.Schema) -> dict[str, str]:
    """An Arrow table's schema metadata (str -> str), after checking format, version and columns."""
    meta = metadata_header(table.schema.metadata)
    check_header(meta, where, fmt, version, what)
    if not table.schema.remove_metadata().equals(schema):
        raise PipelineError(where, f"columns {table.schema.names} differ from {schema.names}")
    return meta
