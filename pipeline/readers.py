"""Reading planned source files into RawRecords through Hugging Face `datasets`.

Split from sources.py (which finds files and checks columns). One RawRecord per input
record, bad ones included: `ingest` decides what is accepted.

Objects (s3://..., objects.py) are read the same way, with one exception: datasets 5.2's
streaming `open` hands a text file's `encoding` to the object store's filesystem as an
option (s3fs fails: "AioSession.__init__() got an unexpected keyword argument 'encoding'";
memory:// drops it), so lines, JSONL and one-document objects are decoded here
(`_object_texts`), as datasets' text builder decodes a local file: universal newlines,
one row per line without its "\n". CSV and Parquet objects open in binary mode, through
datasets like local files.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import re
import tempfile
from typing import Any, Iterator

import pandas as pd
import pyarrow as pa

from .decoding import decode_field, encoding_hint, reader_encoding, utf8_error
from .errors import PipelineError
from .objects import STORAGE_OPTIONS, is_url, open_binary, read_objects
from .sources import (MALFORMED_CSV_ROW, UNREAD_SIZE_FACTOR, RawRecord, Source, SourceFile, csv_header,
                      csv_separator, unread_reason)

# A CSV cell that is a JSON number or boolean literal (pandas' spellings of booleans too) is
# read as that value, as the same row written as JSONL would be: see `csv_cell_value`.
JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
OBJECT_BATCH_BYTES = 64 * 2**20     # one-document objects are fetched this many bytes at a time, at most
CSV_BOOLEANS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}


def read_records(files: list[SourceFile], batch_rows: int = 2048,
                 max_file_bytes: int | None = None) -> Iterator[list[RawRecord]]:
    """Every record of `files` in lists of about `batch_rows`: one-document files first
    (a source has either only those or none), then each file's records in order."""
    documents = [f for f in files if f.format == "files"]
    if documents:
        yield from _read_documents(documents, batch_rows, max_file_bytes)
    for file in files:
        unread = unread_reason(file) if file.format != "files" else None
        if unread and unread[0] != "binary":
            yield [_unread_record(file, unread[1], unread_reject_reason(unread[0]))]
        elif unread:                     # binary: its lines are counted, none is parsed
            yield from _read_line_records(file, batch_rows, binary=unread[1])
        elif file.format in ("lines", "jsonl"):
            yield from _read_line_records(file, batch_rows)
        elif file.format == "csv":
            yield from _read_csv(file, batch_rows)
        elif file.format == "parquet":
            yield from _read_parquet(file, batch_rows)


def _stream(builder: str, paths: list[str], batch_rows: int, **options: Any) -> Iterator[pa.Table]:
    """Arrow batches of a packaged `datasets` builder, streamed: nothing copied to a cache."""
    escaped = [glob.escape(p) for p in paths]   # data_files are globs: "a[1].txt" is a file here
    if any(is_url(p) for p in paths):
        options["storage_options"] = dict(STORAGE_OPTIONS)   # objects.py's filesystem: no stale listings
                                                             # (a copy: datasets adds its own keys to it)
    # Streaming still leaves a lock file per builder configuration (per file set) in the cache
    # directory; a throwaway one keeps ~/.cache/huggingface from growing by one per file read.
    import datasets                              # here: a no-op run never reads a file (~0.5 s of imports)
    with tempfile.TemporaryDirectory(prefix="embcache-ingest-") as cache_dir:
        dataset = datasets.load_dataset(builder, data_files=escaped, split="train", streaming=True,
                                        cache_dir=cache_dir, **options)
    return dataset.with_format("arrow").iter(batch_size=batch_rows)


def _read_line_records(file: SourceFile, batch_rows: int,
                       binary: str | None = None) -> Iterator[list[RawRecord]]:
    """lines and jsonl: one record per line. Latin-1, see the module docstring; datasets opens
    text with universal newlines, so CRLF and a lone CR end a line as LF does. A `binary`
    file (of any text format; the string says why) has each line rejected as binary_content."""
    record_of = _jsonl_record if file.format == "jsonl" else _line_record
    row = 0
    tables = (_object_lines(file, batch_rows) if file.object is not None else
              _stream("text", [file.path], batch_rows, sample_by="line", **reader_encoding(file.source.encoding)))
    for table in tables:
        records = []
        for line in table.column("text").to_pylist():
            row += 1
            records.append(_binary_line_record(file, row, binary) if binary else record_of(file, row, line))
        yield records


def _object_texts(raw: io.BufferedIOBase, encoding: str | None) -> io.TextIOWrapper:
    """An object's bytes as text, decoded as datasets' text builder decodes a local file
    (`reader_encoding`; universal newlines: CRLF and a lone CR end a line as LF does)."""
    options = reader_encoding(encoding)
    return io.TextIOWrapper(raw, encoding=options["encoding"], errors=options.get("encoding_errors", "strict"))


def _object_lines(file: SourceFile, batch_rows: int) -> Iterator[pa.Table]:
    """An object's lines, `batch_rows` at a time, as `_stream("text", sample_by="line")` gives a file's."""
    with open_binary(file.path) as raw:
        lines = []
        for line in _object_texts(raw, file.source.encoding):
            lines.append(line[:-1] if line.endswith("\n") else line)
            if len(lines) == batch_rows:
                yield pa.table({"text": pa.array(lines, pa.string())})
                lines = []
        if lines:
            yield pa.table({"text": pa.array(lines, pa.string())})


def _object_documents(files: list[SourceFile], batch_rows: int) -> Iterator[pa.Table]:
    """One row per object, whole: fetched concurrently in groups of at most `batch_rows`
    objects and OBJECT_BATCH_BYTES (sizes from the listing)."""
    group: list[SourceFile] = []
    size = 0
    for file in files + [None]:
        if group and (file is None or len(group) == batch_rows or size + file.object.size > OBJECT_BATCH_BYTES):
            contents = read_objects([f.path for f in group])
            yield pa.table({"text": pa.array([_object_texts(io.BytesIO(contents[f.path]), f.source.encoding).read()
                                              for f in group], pa.string())})
            group, size = [], 0
        if file is not None:
            group.append(file)
            size += file.object.size


def _binary_line_record(file: SourceFile, row: int, why: str) -> RawRecord:
    return RawRecord(file.path, row, f"{file.rel}:{row}", None, error=("binary_content", why))


def _decode(file: SourceFile, name: str, value: str) -> tuple[str | None, tuple[str, str] | None]:
    """`decode_field` in the file's encoding; with none given, an invalid-UTF-8 detail also
    says which encodings would decode the file and how to pass one."""
    text, error = decode_field(name, value, file.source.encoding)
    if error and file.source.encoding is None:
        state = None if file.object is None else (file.object.size, file.object.version or file.object.mtime_ns)
        error = (error[0], error[1] + encoding_hint(file.path, state))
    return text, error


def _line_record(file: SourceFile, row: int, line: str) -> RawRecord:
    text, error = _decode(file, "text", line)
    return RawRecord(file.path, row, f"{file.rel}:{row}", text, error=error)


def _read_documents(files: list[SourceFile], batch_rows: int,
                    max_file_bytes: int | None) -> Iterator[list[RawRecord]]:
    """One record per file, oversized ones first; one `datasets` call for all the files
    (a call per file would cost ~3 ms each)."""
    limit = max_file_bytes if max_file_bytes is not None else float("inf")
    unread, readable = [], []
    for f in files:
        skipped = unread_reason(f)       # files: "compressed", or a problem found when planning
        if skipped:                      # an archive's members would shift every later text
            unread.append(_unread_record(f, skipped[1], unread_reject_reason(skipped[0])))
        elif (size := f.object.size if f.object is not None else os.path.getsize(f.path)) > limit:
            unread.append(_unread_record(f, f"file is {size:,} bytes > {UNREAD_SIZE_FACTOR} x max_bytes "
                                            f"({limit:,}); not read", "too_large"))
        else:
            readable.append(f)
    if unread:
        yield unread
    if not readable:
        return
    # sample_by="document" yields exactly one row per file, in data_files order.
    done = 0
    tables = (_object_documents(readable, batch_rows) if readable[0].object is not None else
              _stream("text", [f.path for f in readable], batch_rows, sample_by="document",
                      **reader_encoding(files[0].source.encoding)))     # one source: one encoding
    for table in tables:
        contents = table.column("text").to_pylist()
        chunk, done = readable[done:done + len(contents)], done + len(contents)
        yield [_document_record(f, content) for f, content in zip(chunk, contents, strict=True)]
    if done != len(readable):
        raise PipelineError(files[0].source.path, f"datasets read {done} of {len(readable)} files")


def _document_record(file: SourceFile, content: str) -> RawRecord:
    text, error = _decode(file, "text", content)
    return RawRecord(file.path, 1, file.rel, text, label=file.label, error=error)


def unread_reject_reason(kind: str) -> str:
    """The reject reason of a file `unread_reason` gives `kind` for: a compressed or binary
    file's is binary_content; a path that cannot be read (broken_link, link_loop) is its own."""
    return "binary_content" if kind in ("compressed", "binary") else kind


def _unread_record(file: SourceFile, detail: str, reason: str = "binary_content") -> RawRecord:
    """The one record of a file that is not read (a whole-file id, row 1)."""
    return RawRecord(file.path, 1, file.rel, None, label=file.label, error=(reason, detail))


def _jsonl_record(file: SourceFile, row: int, line: str) -> RawRecord:
    # Not the json builder: it parses 10 MB blocks with pyarrow, so one bad line fails the
    # block and mixed types are cast or re-encoded; here each line is its own record.
    where = (file.path, row, f"{file.rel}:{row}")
    decoded, error = _decode(file, "line", line)
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
    header = csv_header(file.path, file.source.encoding)
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
    options = dict(sep=csv_separator(file.path), keep_default_na=False,
                   index_col=False, engine="python", on_bad_lines=keep_malformed_row,
                   converters={name: _same_cell for name in raw_names},
                   **reader_encoding(file.source.encoding))
    row = 0
    try:
        for table in _stream("csv", [file.path], batch_rows, **options):
            columns = [table.column(header[name]).to_pylist() for name in used]
            records = []
            for values in zip(*columns):
                row += 1
                records.append(_csv_record(file, row, dict(zip(used, values)), len(header)))
            yield records
    except (pd.errors.ParserError, csv.Error) as e:   # rows past it cannot be told apart: fail
        raise PipelineError(file.path, f"CSV cannot be parsed at or after data row {row + 1:,}: {e} "
                                       "(an unterminated quoted field?)") from e


def _same_cell(cell: str) -> str:
    return cell


def _csv_record(file: SourceFile, row: int, cells: dict[str, str | None], width: int) -> RawRecord:
    fields, error = {}, None
    for name, value in cells.items():
        fields[name], problem = _decode(file, name, value) if value is not None else (None, None)
        error = error or problem
        if name != file.source.text_column and fields[name] is not None:
            fields[name] = csv_cell_value(fields[name])
    text = cells[file.source.text_column]
    if text is not None and text.startswith(MALFORMED_CSV_ROW):
        error = ("malformed_record", f"row has {text[len(MALFORMED_CSV_ROW):]} fields, the header has {width}")
    return _record_from_fields(file, row, fields, error)


def csv_cell_value(cell: str) -> Any:
    """A CSV id, label or split cell as the value JSONL would hold: CSV has no types, so a
    cell that is a JSON number or a boolean is read as one ("2.0" -> 2.0, "7" -> 7,
    "True" -> True); anything else stays the string it is ("007", "2.50 EUR", "yes")."""
    number = JSON_NUMBER.fullmatch(cell)
    if number:
        return float(cell) if number.group(1) or number.group(2) else int(cell)
    return CSV_BOOLEANS.get(cell, cell)


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
                error = error or ("invalid_utf8", utf8_error(name, value, e))
    return _record_from_fields(file, row, fields, error)


