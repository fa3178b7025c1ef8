"""Where documents come from: find a source's files, check their columns, read raw records.

A `Source` names a file, a directory or a glob and how to read it, on the local disk or in
an object store (s3://bucket/news/**/*.jsonl: objects.py lists it). `plan_files` turns it
into `SourceFile`s (checking that each configured column exists, so a wrong schema fails
before anything is read); `readers.read_records` streams them through Hugging Face
`datasets` as `RawRecord`s: one per input record, bad ones included, so nothing is lost.

    >>> [f.rel for f in plan_files(Source("corpus/*.txt"))]              # doctest: +SKIP
    ['notes.txt']
    >>> next(readers.read_records(plan_files(Source("corpus/notes.txt"))))[0]    # doctest: +SKIP
    RawRecord(source='corpus/notes.txt', row=1, local_id='notes.txt:1', text='café',
              doc_id=None, label=None, split=None, error=None)

Invalid UTF-8 (or invalid text in the source's `encoding`) is found per record, not per
file: see decoding.py. Parquet strings are read as bytes and decoded as UTF-8 the same way.

Some files are not read as text at all, and say why in every row they cost:
- a file that `datasets` would decompress (a .zip, .gz, ... name, or zip/gzip/... first
  bytes: .docx, .xlsx) is one rejected row, unread: an archive's members are not the file's
  rows, and a broken archive would stop the run;
- a lines, JSONL or CSV file with a NUL byte in its first `BINARY_PROBE_BYTES` (git's rule
  for binary files: PNGs, UTF-16, UTF-32) has each of its lines rejected, none parsed, so no
  fragment of a binary file becomes a document. A NUL further on costs its own row only.
"""

from __future__ import annotations

import csv
import io
import json
import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Literal, NamedTuple

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .decoding import UNICODE_BOMS, decode_field, reads_as_bytes, reader_encoding
from .errors import SourceNotFound, SourceSchemaError
from .objects import ObjectState, find_objects, has_subfolders, is_url, open_binary, read_head
from .walk import Found, broken_link, glob_files, hidden, walk
from .configs import Source  # noqa: F401  (defined once, in configs.py)

FileFormat = Literal["lines", "files", "csv", "jsonl", "parquet"]   # how one file is read

EXTENSION_FORMATS: dict[str, FileFormat] = {
    ".txt": "lines", ".text": "lines", ".csv": "csv", ".tsv": "csv",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
}
# Files above this multiple of max_bytes are rejected from their size, unread: normalizing
# never shrinks text to under a quarter of its bytes (NFKC maps the 4-byte U+1D400 to "A";
# CRLF -> LF halves; NFC composition at most thirds), so they could not pass anyway.
UNREAD_SIZE_FACTOR = 5
# Put in the text column of a CSV row with too many fields (pandas' on_bad_lines hook can
# only replace a row): random, so no real cell can collide with it.
MALFORMED_CSV_ROW = f"\x00malformed-csv-row-{uuid.uuid4().hex}:"
BINARY_PROBE_BYTES = 8000  # a NUL byte among a text file's first 8,000 bytes makes it binary (as in git)
PROBE_BLOCK_BYTES = 1 << 20  # an object opened to read its header or first keys fetches this much at a time


@dataclass(frozen=True)
class SourceFile:
    """One file of a source, planned: what `read_records` reads."""

    path: str                      # the file as found on disk
    rel: str                       # relative to the source's base directory, "/"-separated:
                                   # the root of positional ids, unchanged if the corpus moves
    base: str                      # that base directory, as given ("" for the current one)
    format: FileFormat
    label: str | None              # the directory label (folder sources only)
    source: Source
    problem: tuple[str, str] | None = None   # (reject reason, detail): a path found but not read,
                                             # such as a broken link or a link loop (walk.py)
    object: ObjectState | None = None        # an object's size and version, from its listing
                                             # (objects.py); None: a local file (stat it)


class RawRecord(NamedTuple):
    """One input record as read, before any check. Values keep their source types."""

    source: str                    # file path
    row: int                       # 1-based: line (lines, jsonl), data row (csv, parquet), 1 (files)
    local_id: str                  # positional id: "<rel>:<row>", or "<rel>" for one-document files
    text: Any                      # str when well read; None, a number, a list... otherwise
    doc_id: Any = None             # the id column's value, if the source has one
    label: Any = None
    split: Any = None
    error: tuple[str, str] | None = None   # (reason, detail) found while reading


# ---------------------------------------------------------------- planning


def plan_files(source: Source, trusted: Callable[[SourceFile], bool] | None = None) -> list[SourceFile]:
    """The source's files, sorted, each with its format; checks configured columns exist.

    trusted(file) True: the file is unchanged since an ingest that checked it
    (stages/source_state.py), so it is not opened again here."""
    path = os.fspath(source.path)
    if is_folder_source(source):
        files = _folder_objects(path, source) if is_url(path) else _folder_files(path, source)
    elif is_url(path):
        base, listed = find_objects(path)
        files = [SourceFile(o.path, o.rel, base, _file_format(o.path, source), None, source, object=o.state)
                 for o in listed]
    else:
        base, found = _matching_files(path)
        files = [SourceFile(f.path, _rel(f.path, base), base, "files" if f.problem else _file_format(f.path, source),
                            None, source, f.problem) for f in found]
    for file in files:
        if trusted is not None and trusted(file):
            continue
        if file.format in ("lines", "files") or not unread_reason(file):
            _check_columns(file, columns_of(file))
    return files


def check_source(source: Source) -> None:
    """What a command checks before it starts any flow: the source matches files, and the
    first has the configured columns (SourceNotFound / SourceSchemaError). Ingest itself
    checks every file it reads; this opens one, so a million-file source costs a listing."""
    checked = []

    def trusted(file: SourceFile) -> bool:
        checked.append(file.path)
        return len(checked) > 1

    plan_files(source, trusted)


def is_folder_source(source: Source) -> bool:
    """A folder source (<root>/<label>/<file>): named so, or "auto" on a directory with subdirectories."""
    return source.format == "folder" or (source.format == "auto" and _has_subdirectories(source.path))


def _has_subdirectories(path: str) -> bool:
    if is_url(path):
        return has_subfolders(path)
    return os.path.isdir(path) and any(e.is_dir() and not _hidden(e.name) for e in os.scandir(path))


def _folder_files(root: str, source: Source) -> list[SourceFile]:
    if not os.path.isdir(root):
        raise SourceNotFound(root, "a folder source must be a directory of <label>/ directories")
    files = []
    labels = sorted(e.name for e in os.scandir(root) if e.is_dir() and not _hidden(e.name))
    for label, found in zip(labels, walk([os.path.join(root, label) for label in labels])):
        files += [SourceFile(f.path, _rel(f.path, root), root, "files", label, source, f.problem) for f in found]
    if not files:
        raise SourceNotFound(root, "no <label>/<file> documents under this folder")
    return files


def _folder_objects(root: str, source: Source) -> list[SourceFile]:
    """A folder source in an object store: <prefix>/<label>/**/<object>, labels in order."""
    base, listed = find_objects(root)
    if base != root.rstrip("/"):
        raise SourceNotFound(root, "a folder source must be a prefix of <label>/ folders, not an object or a glob")
    by_label: dict[str, list] = {}
    for o in listed:                         # objects right under the prefix are not documents
        label, _, rest = o.rel.partition("/")
        if rest:
            by_label.setdefault(label, []).append(o)
    if not by_label:
        raise SourceNotFound(root, "no <label>/<object> documents under this prefix")
    return [SourceFile(o.path, o.rel, base, "files", label, source, object=o.state)
            for label in sorted(by_label) for o in by_label[label]]


def absolute_base(base: str) -> str:
    """A source's base as an absolute "/"-path, to find the folder that holds several sources'
    bases (pipeline/ingest.py id_roots): a local one made absolute, an object store's as
    "/<protocol>:/<bucket>/<prefix>" ("s3://b/2024" and "s3://b/2025" are held by "/s3:/b")."""
    if is_url(base):
        protocol, rest = base.split("://", 1)
        return f"/{protocol}:/{rest}".rstrip("/")
    return os.path.abspath(base or ".")


def _matching_files(path: str) -> tuple[str, list[Found]]:
    """(base directory, sorted non-hidden files and reports) of a file, directory or glob."""
    if os.path.isfile(path):
        return os.path.dirname(path), [Found(path)]
    if os.path.islink(path) and not os.path.isdir(path):
        return os.path.dirname(path), [Found(path, broken_link(path))]
    if os.path.isdir(path):
        files = walk([path])[0]
        base = path
    else:
        files = glob_files(path)
        base = _glob_base(path)
    if not any(f.problem is None or f.problem[0] == "broken_link" for f in files):
        raise SourceNotFound(path, "matches no file")
    return base, files


def _glob_base(pattern: str) -> str:
    """The directory part of a glob before its first wildcard: "data/*/x.csv" -> "data"."""
    literal = []
    for part in pattern.replace(os.sep, "/").split("/")[:-1]:
        if any(c in part for c in "*?["):
            break
        literal.append(part)
    return "/".join(literal) or "."


def _rel(path: str, base: str) -> str:
    return os.path.relpath(path, base or ".").replace(os.sep, "/")


_hidden = hidden


def _file_format(path: str, source: Source) -> FileFormat:
    if source.format != "auto":
        return source.format
    extension = os.path.splitext(path)[1].lower()
    if extension not in EXTENSION_FORMATS:
        raise SourceSchemaError(path, f"cannot tell the format from extension {extension!r} "
                                      f"(known: {', '.join(EXTENSION_FORMATS)}); set Source.format")
    return EXTENSION_FORMATS[extension]


def columns_of(file: SourceFile) -> list[str]:
    """The columns a file offers, as decoded names (what `SourceSchemaError` lists)."""
    if file.format in ("lines", "files"):
        return ["text", "label"] if file.label is not None else ["text"]
    if file.format == "csv":
        return list(csv_header(file.path, file.source.encoding))
    if file.format == "parquet":
        try:
            if file.object is None:
                return pq.read_schema(file.path).names
            with open_binary(file.path, block_size=PROBE_BLOCK_BYTES) as f:
                return pq.read_schema(f).names
        except pa.ArrowInvalid as e:     # no rows to count: the run fails, naming the file
            raise SourceSchemaError(file.path, f"not a readable Parquet file: {e}") from e
    return _jsonl_keys(file.path, file.source.encoding, _wanted_columns(file.source))


def _check_columns(file: SourceFile, found: list[str]) -> None:
    source = file.source
    wanted = {"text_column": source.text_column, "label_column": source.label_column,
              "id_column": source.id_column, "split_column": source.split_column}
    for field, column in wanted.items():
        if column is not None and column not in found:
            listed = ", ".join(repr(c) for c in found) or "none"
            flag = "--" + field.replace("_", "-")
            raise SourceSchemaError(file.path, f"no column {column!r} ({flag}; {field} in a run config); "
                                               f"{file.format} columns found: {listed}")


def csv_header(path: str, encoding: str | None = None) -> dict[str, str]:
    """{decoded column name: name as pandas reads it (`reader_encoding`)}; BOM dropped."""
    try:
        with _csv_input(path) as where:
            raw_names = pd.read_csv(where, nrows=0, sep=csv_separator(path), engine="python",
                                    **reader_encoding(encoding)).columns
    except pd.errors.EmptyDataError:
        return {}
    except (pd.errors.ParserError, csv.Error) as e:   # it peeks at the first row: an open quote there
        raise SourceSchemaError(path, f"CSV cannot be parsed at its start: {e} "
                                      "(an unterminated quoted field?)") from e
    return {(decode_field("column", raw, encoding)[0] or raw).lstrip("\ufeff"): raw for raw in raw_names}


@contextmanager
def _csv_input(path: str):
    """What pandas reads a CSV header from: the path, or an object opened for its first bytes."""
    if not is_url(path):
        yield path
        return
    with open_binary(path, block_size=PROBE_BLOCK_BYTES) as f:
        yield f


def csv_separator(path: str) -> str:
    return "\t" if path.lower().endswith(".tsv") else ","


def _wanted_columns(source: Source) -> set[str]:
    return {c for c in (source.text_column, source.label_column, source.id_column, source.split_column)
            if c is not None}


def _jsonl_keys(path: str, encoding: str | None = None, wanted: set[str] = frozenset()) -> list[str]:
    """Union of the keys of the file's objects, read until every `wanted` key was seen (so
    a column is missing only if no record has it: keys first seen late, after blank or
    unlabelled lines, count; a record without one is judged on its own when read)."""
    keys: dict[str, None] = {}
    with open_binary(path, block_size=PROBE_BLOCK_BYTES) as raw, \
            io.TextIOWrapper(raw, encoding=encoding or "utf-8", errors="replace") as f:
        for line in f:
            try:
                value = json.loads(line.lstrip("\ufeff"))
            except ValueError:      # bad lines are rejected when read, not here
                continue
            if isinstance(value, dict):
                keys.update(dict.fromkeys(value))
                if wanted and wanted <= keys.keys():
                    break
    return list(keys)


# ---------------------------------------------------------------- binary files


def unread_reason(file: SourceFile) -> tuple[str, str] | None:
    """(kind, detail) for a file not parsed as records, else None: kind is "compressed",
    "binary", or a reject reason of a path found but not readable (see SourceFile.problem)."""
    if file.problem:
        return file.problem
    kind = compressed_kind(file.path, file.object)
    if kind:
        return "compressed", (f"{kind} data (by the file's name or first bytes): compressed files "
                              "and archives are not read; extract them first")
    if file.format in ("lines", "jsonl", "csv") and reads_as_bytes(file.source.encoding):
        marker = binary_marker(file.path, file.object)
        if marker:
            return "binary", marker
    return None


def compressed_kind(path: str, state: ObjectState | None = None) -> str | None:
    """What `datasets` would decompress `path` as ("zip", "gzip", "tar", ...), or None.

    Its own rule (private in datasets): a compression extension, unless the extension is a
    data format it knows (.txt, .csv, .jsonl, .parquet...), else the file's magic number.
    An object (`state` from its listing) is judged by the same rule on its first bytes,
    fetched once (datasets would open it with a 50 MB read-ahead block).
    """
    if path.lower().endswith((".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz")):
        return "tar"                     # datasets refuses these in streaming mode
    from datasets.utils.file_utils import (BASE_KNOWN_EXTENSIONS, COMPRESSION_EXTENSION_TO_PROTOCOL,
                                           _get_extraction_protocol, _get_extraction_protocol_with_magic_number,
                                           _get_path_extension)   # here: importing datasets costs ~0.5 s
    try:
        if state is None:
            return _get_extraction_protocol(path)
        extension = _get_path_extension(path)
        if extension in BASE_KNOWN_EXTENSIONS:
            return None
        if extension in COMPRESSION_EXTENSION_TO_PROTOCOL:
            return COMPRESSION_EXTENSION_TO_PROTOCOL[extension]
        return _get_extraction_protocol_with_magic_number(io.BytesIO(read_head(path, BINARY_PROBE_BYTES, state)))
    except NotImplementedError:          # rar: recognized, not readable
        return "rar"


def binary_marker(path: str, state: ObjectState | None = None) -> str | None:
    """Why a text file is binary (a NUL byte in its first BINARY_PROBE_BYTES), or None."""
    head = read_head(path, BINARY_PROBE_BYTES, state)
    nul = head.find(b"\x00")
    if nul < 0:
        return None
    bom = next(((mark, name) for mark, name in UNICODE_BOMS if head.startswith(mark)), None)
    if bom is None:
        return (f"file has a NUL byte at byte {nul + 1:,}: binary data or UTF-16/UTF-32 text, "
                "not UTF-8; no line of it is read")
    codec = bom[1][:6].lower()            # "utf-16" / "utf-32": reads the BOM, then drops it
    return (f"file has a NUL byte at byte {nul + 1:,}: {bom[1]} text (BOM {bom[0].hex(' ')}), not "
            f"UTF-8; no line of it is read (pass --encoding {codec}, or encoding = \"{codec}\" in the source)")
