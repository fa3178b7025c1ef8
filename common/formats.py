"""The header every file embcache writes starts with, written and checked in one place.

    {"format": "embcache.<what>", "format_version": N, ...}

JSON files carry it as their first two fields; Parquet and Arrow files carry it in their
schema metadata (where values are strings: "1"). A reader names the format and the versions
it reads; `check` says what it found instead, in one sentence. Two older spellings still read:
`{"format": N}` (stores written before format names: version N of the expected format) and
"embcache-<what-with-dashes>" (saved files before names were unified: "embcache-head").

>>> HEAD = Format("embcache.head", 1)
>>> header(HEAD)
{'format': 'embcache.head', 'format_version': 1}
>>> check({"format": "embcache-head", "format_version": "1"}, HEAD, "a classification head")
1
>>> check({"format": "embcache.run", "format_version": 1}, HEAD, "a classification head")
Traceback (most recent call last):
...
embcache.common.formats.HeaderMismatch: not a classification head: format 'embcache.run' version 1; this code reads 'embcache.head' version 1
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import NamedTuple

LEGACY_PREFIX = "embcache-"   # how format names were spelled before "embcache.<what>"


class Format(NamedTuple):
    name: str                 # "embcache.<what>"
    version: int              # bumped whenever the layout changes; readers name the versions they read


class HeaderMismatch(ValueError):
    """A file is not of the format (or version) its reader expects; each layer re-raises it as
    its own error (storage: FormatError; pipeline: PipelineError), naming the file."""


def header(fmt: Format) -> dict:
    """The first two fields of a file of format `fmt`."""
    fmt = Format(*fmt)
    return {"format": fmt.name, "format_version": fmt.version}


def check(found: object, fmt: Format, what: str, reads: Iterable[int] | None = None) -> int:
    """The version of `found` (a header mapping) if it is `fmt` at a version this code reads
    (`reads`, default fmt.version alone); HeaderMismatch saying what it is otherwise."""
    fmt = Format(*fmt)
    reads = tuple(reads) if reads is not None else (fmt.version,)
    if not isinstance(found, Mapping) or "format" not in found:
        raise HeaderMismatch(f"not {what}: it has no 'format' field" if isinstance(found, Mapping)
                             else f"not {what}: a JSON {type(found).__name__}, not an object")
    name, version = found["format"], found.get("format_version")
    if isinstance(name, int) and not isinstance(name, bool) and version is None:    # {"format": N}
        name, version = fmt.name, name
    if isinstance(name, str) and name.startswith(LEGACY_PREFIX):                     # "embcache-head"
        name = "embcache." + name[len(LEGACY_PREFIX):].replace("-", "_")
    try:
        number = int(version) if not isinstance(version, bool) else None
    except (TypeError, ValueError):
        number = None
    if name != fmt.name or number not in reads:
        wanted = " or ".join(str(v) for v in reads)
        raise HeaderMismatch(f"not {what}: format {name!r} version {version!r}; this code reads {fmt.name!r} "
                             f"version {wanted}")
    return number


def parse_json(data: bytes, fmt: Format, what: str, reads: Iterable[int] | None = None) -> dict:
    """A saved JSON object after `check`ing its header; HeaderMismatch if it is not JSON either."""
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HeaderMismatch(f"{what} is not valid JSON ({e})") from None
    check(obj, fmt, what, reads)
    return obj


def metadata_header(metadata: Mapping[bytes, bytes] | None) -> dict[str, str]:
    """An Arrow schema's metadata as str -> str: what `check` reads from Parquet and Arrow files."""
    return {k.decode(): v.decode() for k, v in (metadata or {}).items()}


def metadata(fmt: Format, **more: str) -> dict[str, str]:
    """Schema metadata carrying the header (values as strings, as Arrow keeps them)."""
    fmt = Format(*fmt)
    return {"format": fmt.name, "format_version": str(fmt.version), **more}
