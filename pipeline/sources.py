"""Where documents come from: find a source's files, check their columns, read raw records.

A `Source` names a file, a directory or a glob and how to read it. `plan_files` turns it
into `SourceFile`s (checking that each configured column exists, so a wrong schema fails
before anything is read); `read_records` streams them through Hugging Face `datasets`
as `RawRecord`s: one per input record, bad ones included, so nothing is lost on the way.

    >>> [f.rel for f in plan_files(Source("corpus/*.txt"))]              # doctest: +SKIP
    ['notes.txt']
    >>> next(read_records(plan_files(Source("corpus/notes.txt"))))[0]    # doctest: +SKIP
    RawRecord(source='corpus/notes.txt', row=1, local_id='notes.txt:1', text='café',
              doc_id=None, label=None, split=None, error=None)

Invalid UTF-8 is found per record, not per file: text files, CSV and JSONL are decoded by
`datasets` as Latin-1 (a lossless byte <-> character mapping that never fails, and keeps
"\\n", "\\r" and CSV/JSON syntax, all ASCII, where they were), then each record's bytes are
decoded as UTF-8 here, so one bad line costs that line only. Parquet strings are read as
bytes and decoded the same way.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
import uuid
from dataclasses import dataclass
from typing import Any, Iterator, Literal, NamedTuple

import datasets
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import PipelineError, SourceNotFound, SourceSchemaError

Format = Literal["auto", "lines", "files", "csv", "jsonl", "parquet", "folder"]
FileFormat = Literal["lines", "files", "csv", "jsonl", "parquet"]   # how one file is read

EXTENSION_FORMATS: dict[str, FileFormat] = {
    ".txt": "lines", ".text": "lines", ".csv": "csv", ".tsv": "csv",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
}
# Files above this multiple of max_bytes are rejected from their size, unread: normalizing
# never shrinks text to under a quarter of its bytes (NFKC maps the 4-byte U+1D400 to "A";
# CRLF -> LF halves; NFC composition at most thirds), so they could not pass anyway.
UNREAD_SIZE_FACTOR = 5
JSONL_PROBE_LINES = 1000   # the first lines of a JSONL file whose keys make its schema
# Put in the text column of a CSV row with too many fields (pandas' on_bad_lines hook can
# only replace a row): random, so no real cell can collide with it.
MALFORMED_CSV_ROW = f"\x00malformed-csv-row-{uuid.uuid4().hex}:"


@dataclass(frozen=True)
class Source:
    """Where documents come from; a corpus may have several."""

    path: str                      # a file, a directory, or a glob ("data/*.csv", "data/**/*.txt")
    format: Format = "auto"
    # lines: one document per line of each text file; files: one document per text file;
    # folder: <root>/<label>/**/<file>, label = the directory name (files directly under
    # <root> are not documents: READMEs, licences); csv (.tsv is tab-separated), jsonl,
    # parquet: one document per record; auto: a directory with subdirectories is a folder,
    # otherwise each file by its extension (.txt is lines; one-file-per-document needs "files").
    text_column: str = "text"      # column / JSON field holding the text (text formats: "text")
    label_column: str | None = None   # column holding the label (folder: the directory, "label")
    id_column: str | None = None   # column holding a document id; None: ids from path and row
    split_column: str | None = None   # column holding the split name (train/test/...), if any
    id_prefix: str = ""            # put before every doc_id of this source, to keep apart two
                                   # sources whose files have the same relative paths


@dataclass(frozen=True)
class SourceFile:
    """One file of a source, planned: what `read_records` reads."""

    path: str                      # the file as found on disk
    rel: str                       # relative to the source's base directory, "/"-separated:
                                   # the root of positional ids, unchanged if the corpus moves
    format: FileFormat
    label: str | None              # the directory label (folder sources only)
    source: Source


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


def plan_files(source: Source) -> list[SourceFile]:
    """The source's files, sorted, each with its format; checks configured columns exist."""
    path = os.fspath(source.path)
    if source.format == "folder" or (source.format == "auto" and _has_subdirectories(path)):
        files = _folder_files(path, source)
    else:
        base, paths = _matching_files(path)
        files = [SourceFile(p, _rel(p, base), _file_format(p, source), None, source) for p in paths]
    for file in files:
        _check_columns(file, columns_of(file))
    return files


def _has_subdirectories(path: str) -> bool:
    return os.path.isdir(path) and any(e.is_dir() and not _hidden(e.name) for e in os.scandir(path))


def _folder_files(root: str, source: Source) -> list[SourceFile]:
    if not os.path.isdir(root):
        raise SourceNotFound(root, "a folder source must be a directory of <label>/ directories")
    files = []
    for label in sorted(e.name for e in os.scandir(root) if e.is_dir() and not _hidden(e.name)):
        for path in _walk(os.path.join(root, label)):
            files.append(SourceFile(path, _rel(path, root), "files", label, source))
    if not files:
        raise SourceNotFound(root, "no <label>/<file> documents under this folder")
    return files


def _matching_files(path: str) -> tuple[str, list[str]]:
    """(base directory, sorted non-hidden files) of a file, directory or glob."""
    if os.path.isfile(path):
        return os.path.dirname(path), [path]
    if os.path.isdir(path):
        files = _walk(path)
        base = path
    else:
        files = sorted(p for p in glob.glob(path, recursive=True)
                       if os.path.isfile(p) and not _hidden(os.path.basename(p)))
        base = _glob_base(path)
    if not files:
        raise SourceNotFound(path, "matches no file")
    return base, files


def _walk(directory: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = [d for d in dirnames if not _hidden(d)]
        found += [os.path.join(dirpath, f) for f in filenames if not _hidden(f)]
    return sorted(found)


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


def _hidden(name: str) -> bool:
    return name.startswith(".")


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
        return list(_csv_header(file.path))
    if file.format == "parquet":
        return pq.read_schema(file.path).names
    return _jsonl_keys(file.path)


def _check_columns(file: SourceFile, found: list[str]) -> None:
    source = file.source
    wanted = {"text_column": source.text_column, "label_column": source.label_column,
              "id_column": source.id_column, "split_column": source.split_column}
    for field, column in wanted.items():
        if column is not None and column not in found:
            listed = ", ".join(repr(c) for c in found) or "none"
            raise SourceSchemaError(file.path, f"{field} {column!r} not found; "
                                               f"{file.format} columns found: {listed}")


def _csv_header(path: str) -> dict[str, str]:
    """{decoded column name: name as pandas reads it in Latin-1}; BOM dropped."""
    try:
        raw_names = pd.read_csv(path, nrows=0, sep=_csv_separator(path), encoding="latin-1",
                                engine="python").columns
    except pd.errors.EmptyDataError:
        return {}
    return {(_decode_latin1("column", raw)[0] or raw).lstrip("\ufeff"): raw for raw in raw_names}


def _csv_separator(path: str) -> str:
    return "\t" if path.lower().endswith(".tsv") else ","


def _jsonl_keys(path: str) -> list[str]:
    """Union of the keys of the objects on the file's first lines (like pyarrow's inference)."""
    keys: dict[str, None] = {}
    with open(path, "rb") as f:
        for _, line in zip(range(JSONL_PROBE_LINES), f):
            try:
                value = json.loads(line.decode("utf-8").lstrip("\ufeff"))
            except ValueError:      # bad lines are rejected when read, not here
                continue
            if isinstance(value, dict):
                keys.update(dict.fromkeys(value))
    return list(keys)


# ---------------------------------------------------------------- reading


def read_records(files: list[SourceFile], batch_rows: int = 2048,
                 max_file_bytes: int | None = None) -> Iterator[list[RawRecord]]:
    """Every record of `files` in lists of about `batch_rows`: one-document files first
    (a source has either only those or none), then each file's records in order."""
    documents = [f for f in files if f.format == "files"]
    if documents:
        yield from _read_documents(documents, batch_rows, max_file_bytes)
    for file in files:
        if file.format in ("lines", "jsonl"):
            yield from _read_line_records(file, batch_rows)
        elif file.format == "csv":
            yield from _read_csv(file, batch_rows)
        elif file.format == "parquet":
            yield from _read_parquet(file, batch_rows)


def _stream(builder: str, paths: list[str], batch_rows: int, **options: Any) -> Iterator[pa.Table]:
    """Arrow batches of a packaged `datasets` builder, streamed: nothing copied to a cache."""
    escaped = [glob.escape(p) for p in paths]   # data_files are globs: "a[1].txt" is a file here
    # Streaming still leaves a lock file per builder configuration (per file set) in the cache
    # directory; a throwaway one keeps ~/.cache/huggingface from growing by one per file read.
    with tempfile.TemporaryDirectory(prefix="embcache-ingest-") as cache_dir:
        dataset = datasets.load_dataset(builder, data_files=escaped, split="train", streaming=True,
                                        cache_dir=cache_dir, **options)
    return dataset.with_format("arrow").iter(batch_size=batch_rows)


def _read_line_records(file: SourceFile, batch_rows: int) -> Iterator[list[RawRecord]]:
    """lines and jsonl: one record per line. Latin-1, see the module docstring; datasets opens
    text with universal newlines, so CRLF and a lone CR end a line as LF does."""
    record_of = _jsonl_record if file.format == "jsonl" else _line_record
    row = 0
    for table in _stream("text", [file.path], batch_rows, encoding="latin-1", sample_by="line"):
        records = []
        for line in table.column("text").to_pylist():
            row += 1
            records.append(record_of(file, row, line))
        yield records


def _line_record(file: SourceFile, row: int, line: str) -> RawRecord:
    text, error = _decode_latin1("text", line)
    return RawRecord(file.path, row, f"{file.rel}:{row}", text, error=error)


def _read_documents(files: list[SourceFile], batch_rows: int,
                    max_file_bytes: int | None) -> Iterator[list[RawRecord]]:
    """One record per file, oversized ones first; one `datasets` call for all the files
    (a call per file would cost ~3 ms each)."""
    sizes = {f.path: os.path.getsize(f.path) for f in files}
    limit = max_file_bytes if max_file_bytes is not None else float("inf")
    too_large = [_unread_record(f, sizes[f.path], limit) for f in files if sizes[f.path] > limit]
    if too_large:
        yield too_large
    readable = [f for f in files if sizes[f.path] <= limit]
    if not readable:
        return
    # sample_by="document" yields exactly one row per file, in data_files order.
    done = 0
    for table in _stream("text", [f.path for f in readable], batch_rows,
                         encoding="latin-1", sample_by="document"):
        contents = table.column("text").to_pylist()
        chunk, done = readable[done:done + len(contents)], done + len(contents)
        yield [_document_record(f, content) for f, content in zip(chunk, contents, strict=True)]
    if done != len(readable):
        raise PipelineError(files[0].source.path, f"datasets read {done} of {len(readable)} files")


def _document_record(file: SourceFile, content: str) -> RawRecord:
    text, error = _decode_latin1("text", content)
    return RawRecord(file.path, 1, file.rel, text, label=file.label, error=error)


def _unread_record(file: SourceFile, size: int, max_file_bytes: int) -> RawRecord:
    detail = (f"file is {size:,} bytes > {UNREAD_SIZE_FACTOR} x max_bytes "
              f"({max_file_bytes:,}); not read")
    return RawRecord(file.path, 1, file.rel, None, label=file.label, error=("too_large", detail))


def _jsonl_record(file: SourceFile, row: int, line: str) -> RawRecord:
    # Not the json builder: it parses 10 MB blocks with pyarrow, so one bad line fails the
    # block and mixed types are cast or re-encoded; here each line is its own record.
    where = (file.path, row, f"{file.rel}:{row}")
    decoded, error = _decode_latin1("line", line)
    if error:
        return RawRecord(*where, None, error=error)
    if not decoded.strip():
        return RawRecord(*where, None, error=("empty_text", "line is blank"))
    try:
        value = json.loads(decoded.lstrip("\ufeff"))
    except ValueError as e:
        return RawRecord(*where, None, error=("malformed_record", f"line is not valid JSON: {e}"))
    if not isinstance(value, dict):
        found = type(value).__name__
        return RawRecord(*where, None, error=("malformed_record", f"line is a JSON {found}, not an object"))
    return _record_from_fields(file, row, value)


def _record_from_fields(file: SourceFile, row: int, fields: dict[str, Any],
                        error: tuple[str, str] | None = None) -> RawRecord:
    source = file.source
    if error is None and source.text_column not in fields:
        error = ("null_text", f"record has no {source.text_column!r} field")
    return RawRecord(file.path, row, f"{file.rel}:{row}", fields.get(source.text_column),
                     doc_id=fields.get(source.id_column), label=fields.get(source.label_column),
                     split=fields.get(source.split_column), error=error)


def _read_csv(file: SourceFile, batch_rows: int) -> Iterator[list[RawRecord]]:
    header = _csv_header(file.path)
    raw_names = list(header.values())
    used = [name for name in header if name in _used_columns(file.source)]
    text_index = list(header).index(file.source.text_column)

    def keep_malformed_row(fields: list[str]) -> list[str]:
        row = (fields + [""] * len(raw_names))[:len(raw_names)]   # keeps its id, if any
        row[text_index] = f"{MALFORMED_CSV_ROW}{len(fields)}"
        return row

    # Every cell as a string ("007" stays "007", "NA" stays "NA"): an identity converter, as
    # string `features` make datasets pass dtype=np.object_, which pandas 3.1's python engine
    # still parses as numbers. index_col=False: a row with an extra field is malformed, not
    # shifted. The python engine's on_bad_lines hook can replace a row, keeping its row number.
    options = dict(sep=_csv_separator(file.path), encoding="latin-1", keep_default_na=False,
                   index_col=False, engine="python", on_bad_lines=keep_malformed_row,
                   converters={name: _same_cell for name in raw_names})
    row = 0
    for table in _stream("csv", [file.path], batch_rows, **options):
        columns = [table.column(header[name]).to_pylist() for name in used]
        records = []
        for values in zip(*columns):
            row += 1
            records.append(_csv_record(file, row, dict(zip(used, values)), len(header)))
        yield records


def _same_cell(cell: str) -> str:
    return cell


def _csv_record(file: SourceFile, row: int, cells: dict[str, str | None], width: int) -> RawRecord:
    fields, error = {}, None
    for name, value in cells.items():
        fields[name], problem = _decode_latin1(name, value) if value is not None else (None, None)
        error = error or problem
    text = cells[file.source.text_column]
    if text is not None and text.startswith(MALFORMED_CSV_ROW):
        error = ("malformed_record", f"row has {text[len(MALFORMED_CSV_ROW):]} fields, the header has {width}")
    return _record_from_fields(file, row, fields, error)


def _used_columns(source: Source) -> set[str]:
    return {c for c in (source.text_column, source.label_column, source.id_column,
                        source.split_column) if c is not None}


def _read_parquet(file: SourceFile, batch_rows: int) -> Iterator[list[RawRecord]]:
    columns = sorted(_used_columns(file.source))
    row = 0
    for table in _stream("parquet", [file.path], batch_rows, columns=columns):
        values = {name: _column_values(table.column(name)) for name in columns}
        records = []
        for i in range(table.num_rows):
            row += 1
            records.append(_parquet_record(file, row, {name: values[name][i] for name in columns}))
        yield records


def _column_values(column: pa.ChunkedArray) -> list[Any]:
    """Python values; strings as bytes, so invalid UTF-8 fails one row, not the batch."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_string(column.type):
        return column.cast(pa.binary()).to_pylist()
    if pa.types.is_large_string(column.type):
        return column.cast(pa.large_binary()).to_pylist()
    return column.to_pylist()


def _parquet_record(file: SourceFile, row: int, fields: dict[str, Any]) -> RawRecord:
    error = None
    for name, value in fields.items():
        if isinstance(value, bytes):
            try:
                fields[name] = value.decode("utf-8")
            except UnicodeDecodeError as e:
                fields[name] = None
                error = error or ("invalid_utf8", _utf8_error(name, value, e))
    return _record_from_fields(file, row, fields, error)


# ---------------------------------------------------------------- decoding


def _decode_latin1(name: str, value: str) -> tuple[str | None, tuple[str, str] | None]:
    """(text, None) for a Latin-1-read value whose bytes are UTF-8; else (None, error)."""
    raw = value.encode("latin-1")
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as e:
        return None, ("invalid_utf8", _utf8_error(name, raw, e))


def _utf8_error(name: str, raw: bytes, e: UnicodeDecodeError) -> str:
    line_start = raw.rfind(b"\n", 0, e.start) + 1
    line_number = raw.count(b"\n", 0, e.start) + 1
    line = f"line {line_number:,}, " if b"\n" in raw else ""
    return f"{name}: invalid UTF-8 byte 0x{raw[e.start]:02x} at {line}byte {e.start - line_start + 1:,}"
