"""Ingest: read sources into documents with stable ids and content hashes; reject bad rows.

Every input record ends up in exactly one of two tables, so accepted + rejected == input:

    documents: doc_id, text_sha, text (normalized), label, split, source (file), row
    rejected:  source, row, doc_id (when known), reason (one of REJECT_REASONS), detail

    >>> batch = ingest([Source("corpus/notes.txt")], IngestConfig())   # doctest: +SKIP
    >>> # notes.txt: "caf\\u00e9\\r\\n\\n\\xff\\n" (é precomposed, a blank line, a bad byte)
    >>> batch.documents.select(["doc_id", "text", "row"]).to_pylist()  # doctest: +SKIP
    [{'doc_id': 'notes.txt:1', 'text': 'café', 'row': 1}]
    >>> batch.rejected.select(["row", "reason"]).to_pylist()           # doctest: +SKIP
    [{'row': 2, 'reason': 'empty_text'}, {'row': 3, 'reason': 'invalid_utf8'}]

doc_id, in this order:
- the source has an id column: `id_prefix` + the column's value (the user's ids: the same id
  in two sources is a real conflict);
- the source has an `id_prefix`: `id_prefix` + "<path relative to the source's base
  directory>:<row>" (or just that path for one-document files);
- the corpus has one source: "<path relative to the source's base directory>:<row>";
- the corpus has several: "<path relative to the deepest directory holding every source's
  base directory>:<row>", so sources "inbox/2024" and "inbox/2025" give
  "2024/part-00000.jsonl:12" and "2025/part-00000.jsonl:12", and globs "d1/*.txt" "d2/*.txt"
  give "d1/a.txt:1" and "d2/a.txt:1". (A source's base directory: the directory itself, a
  file's directory, a glob's directory before its first wildcard.)
The same files give the same ids on every run, wherever the corpus directory is moved and
whether its paths are given absolute or relative; adding a source outside that deepest
directory changes the other sources' ids (give sources an `id_prefix` to pin them).

Labels, ids and splits of mixed types become strings one way, in every format
(`field_string`): a string is kept as it is; an integer, or a float with an integral value,
is written as an integer (1 and 1.0 -> "1"); another float as Python writes it (0.5 ->
"0.5"); booleans as "true" / "false"; null and NaN -> null. CSV has no types: an id, label
or split cell that is a JSON number or boolean is read as that value first ("2.0" -> 2.0 ->
"2", "True" -> "true"; readers.csv_cell_value), so a CSV, a JSONL and a Parquet file of
the same data give the same strings; other cells stay as they are ("007", "2.0 kg"). A
string in JSONL or Parquet is a string ("2.0" stays "2.0"). Lists and objects are rejected
(invalid_field). A label or split that is the empty string is null too (an empty cell is how
CSV writes null), so an unlabeled row is unlabeled whichever format it comes in. A null
label means "unlabeled" and is allowed even when a label set is declared.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import unicodedata
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from .decoding import AUTO, choose_encoding, reader_encoding
from .errors import IngestOptionError
from .readers import read_records
from .sources import (UNREAD_SIZE_FACTOR, RawRecord, Source, SourceFile, absolute_base, compressed_kind,
                      is_folder_source, plan_files)
from .configs import IngestConfig, Normalization  # noqa: F401  (defined once, in configs.py)

__all__ = ["PATH_REJECT_REASONS", "RECORD_REJECT_REASONS", "REJECT_REASONS", "IngestBatch", "IngestConfig",
           "Source", "check_ingest", "ingest", "iter_ingest", "normalize", "text_sha"]


RECORD_REJECT_REASONS = (   # what a record read from a file can be rejected for
    "malformed_record",        # the record itself cannot be parsed (bad JSON line, CSV row with extra fields)
    "invalid_utf8",            # bytes that are not UTF-8, or not the source's `encoding` when it
                               # has one (or a lone surrogate from a JSON "\ud800" escape)
    "null_text",               # text null or missing
    "not_string",              # text is a number, a list, ...
    "empty_text",              # empty or whitespace only, after normalization
    "binary_content",          # text with NUL characters (binary or UTF-16 data); each line of a
                               # binary file; an archive or compressed file, unread (sources.py)
    "too_large",               # more than max_bytes of UTF-8 after normalization
    "missing_id",              # the id column is configured but null or empty for this row
    "invalid_field",           # id, label or split that is a list or an object
    "label_not_allowed",       # label outside the declared label set
    "duplicate_id_conflict",   # id already taken by a document with different text (first wins)
    "duplicate_row",           # same id and same text as an earlier document
)
PATH_REJECT_REASONS = (     # a path found but not read (pipeline/walk.py): one row, no record
    "broken_link",             # a symbolic link whose target is missing, or that points to itself
    "link_loop",               # a link to a folder already walked (a cycle): skipped, files read once
)
REJECT_REASONS = RECORD_REJECT_REASONS + PATH_REJECT_REASONS

DOCUMENTS_SCHEMA = pa.schema([
    ("doc_id", pa.string()), ("text_sha", pa.string()), ("text", pa.string()),
    ("label", pa.string()), ("split", pa.string()), ("source", pa.string()), ("row", pa.int64()),
])
REJECTED_SCHEMA = pa.schema([
    ("source", pa.string()), ("row", pa.int64()), ("doc_id", pa.string()),
    ("reason", pa.string()), ("detail", pa.string()),
])



@dataclass
class IngestBatch:
    """Accepted documents and rejected records from one stretch of input."""

    documents: pa.Table             # DOCUMENTS_SCHEMA
    rejected: pa.Table              # REJECTED_SCHEMA

    @property
    def input_rows(self) -> int:
        return self.documents.num_rows + self.rejected.num_rows


def normalize(text: str, form: Normalization = "NFC") -> str:
    """Leading BOM dropped, CRLF and lone CR -> LF, then unicode normalization `form`."""
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if form != "none" and not unicodedata.is_normalized(form, text):
        text = unicodedata.normalize(form, text)
    return text


def text_sha(text: str) -> str:
    """sha256 hex of `text`'s UTF-8; pass normalized text (`normalize`), as ingest does."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def iter_ingest(sources: Source | Iterable[Source], config: IngestConfig = IngestConfig(),
                batch_rows: int = 2048, plans: list[list[SourceFile]] | None = None,
                reuse: Callable[[SourceFile], IngestBatch | None] | None = None) -> Iterator[IngestBatch]:
    """Stream batches covering `batch_rows` input records each (the last one fewer).

    Every source is planned first, so a missing path (SourceNotFound) or a missing column
    (SourceSchemaError) fails before any batch is yielded. Duplicate ids are found across all
    sources; only records that can share an id are remembered (`tracked_files`): with
    positional ids memory does not grow with the corpus; with an id column it grows by a
    few hundred bytes per accepted document.

    plans: `plan_files` of each source, if the caller planned already. reuse: for a file
    unchanged since the last ingest, its rows as that ingest left them (documents with a
    null text, rejects), yielded as one batch instead of reading the file; None: read it.
    Reused ids still count for duplicates; a reused file whose ids now collide with an
    earlier file's is read again (stages/source_state.py).
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
    sources = [sources] if isinstance(sources, Source) else list(sources)
    check_ingest(sources, config)
    plans = plans if plans is not None else [plan_files(source) for source in sources]
    roots = id_roots(plans)
    checker = _Checker(config, tracked_files(sources, plans, roots))
    batch = _BatchBuilder()
    max_file_bytes = UNREAD_SIZE_FACTOR * config.max_bytes
    for source, files, root in zip(sources, plans, roots):
        for group, previous in _reuse_groups(files, reuse, checker):
            if previous is not None:
                if batch.input_rows:
                    yield batch.flush()      # keeps input order
                yield previous
                continue
            for part in _by_reader(_detected(group)):
                for records in read_records(part, batch_rows, max_file_bytes):
                    for record in records:
                        batch.add(record, *checker.check(record, source, root))
                        if batch.input_rows >= batch_rows:
                            yield batch.flush()
    if batch.input_rows:
        yield batch.flush()


def _detected(files: list[SourceFile]) -> list[SourceFile]:
    """Files of an encoding="auto" source with the encoding detected for each ("auto:cp1252",
    decoding.choose_encoding); files that are read are detected, reused ones are not."""
    return [replace(f, source=replace(f.source, encoding=choose_encoding(f.path)))
            if f.source.encoding == AUTO and f.problem is None and not compressed_kind(f.path) else f
            for f in files]


def _by_reader(files: list[SourceFile]) -> Iterator[list[SourceFile]]:
    """Runs of files read with the same `datasets` options (one-document files are read in
    one call per run: an auto source may hold UTF-16 files beside cp1252 ones)."""
    run: list[SourceFile] = []
    for f in files:
        if run and reader_encoding(f.source.encoding) != reader_encoding(run[0].source.encoding):
            yield run
            run = []
        run.append(f)
    if run:
        yield run


def _reuse_groups(files: list[SourceFile], reuse, checker: "_Checker"):
    """(files to read, None) for runs of files to read, ([], batch) for each reused file."""
    pending: list[SourceFile] = []
    for file in files:
        previous = reuse(file) if reuse is not None else None
        if previous is not None and pending:
            yield pending, None          # read first: their ids come before this file's
            pending = []
        if previous is not None and checker.remember(previous.documents):
            yield [], previous
        else:
            pending.append(file)
    if pending:
        yield pending, None


def check_ingest(sources: Source | Iterable[Source], config: IngestConfig) -> None:
    """Raise IngestOptionError for an option these sources would ignore; reads no file."""
    sources = [sources] if isinstance(sources, Source) else list(sources)
    if config.labels is not None and not any(s.label_column or is_folder_source(s) for s in sources):
        raise IngestOptionError("--labels (IngestConfig.labels)", (
            f"a label set is declared ({', '.join(map(repr, config.labels[:5]))}) but no source has "
            "labels: none has a label_column (--label-column) or is a folder source; set one, or "
            "drop the label set"))
    for source in sources:
        if source.encoding is not None and (source.format == "parquet" or (
                source.format == "auto" and str(source.path).lower().endswith(".parquet"))):
            raise IngestOptionError(f"--encoding (Source {source.path}: encoding)",
                                    f"encoding {source.encoding!r} has no effect on Parquet, "
                                    "whose strings are UTF-8; drop it")


def id_roots(plans: list[list[SourceFile]]) -> list[str]:
    """Per source, the path put before its positional ids (with a trailing "/"), or "":
    "" for a single source; else its base directory relative to the deepest directory
    holding every source's base (see the module docstring)."""
    if len(plans) < 2:
        return [""] * len(plans)
    bases = [absolute_base(files[0].base) for files in plans]
    common = os.path.commonpath(bases)
    roots = [os.path.relpath(base, common).replace(os.sep, "/") for base in bases]
    return ["" if root == "." else root + "/" for root in roots]


def ingest(sources: Source | Iterable[Source], config: IngestConfig = IngestConfig()) -> IngestBatch:
    """Everything `iter_ingest` yields, concatenated in input order."""
    batches = list(iter_ingest(sources, config))
    documents = [b.documents for b in batches] or [DOCUMENTS_SCHEMA.empty_table()]
    rejected = [b.rejected for b in batches] or [REJECTED_SCHEMA.empty_table()]
    return IngestBatch(pa.concat_tables(documents), pa.concat_tables(rejected))


# ---------------------------------------------------------------- checks

Accepted = tuple[str, str, str, str | None, str | None]   # doc_id, text_sha, text, label, split
Rejected = tuple[str | None, str, str]                     # doc_id, reason, detail


def tracked_files(sources: list[Source], plans: list[list[SourceFile]], roots: list[str]) -> set[str] | None:
    """The files whose ids may collide with another record's: only theirs are remembered.

    A positional id is the file's id stem (id_prefix or root, then its relative path) plus
    ":row" (or the stem alone for a one-document file), and rows within a file differ: two
    records can share an id only if their files share a stem. So only files whose stem
    occurs twice are tracked, and memory does not grow with the corpus. None (track every
    record) when a source has an id column (the user's ids can be anything) or a stem ends
    in ":<digits>" (it could equal another file's "stem:row").
    """
    if any(s.id_column is not None for s in sources):
        return None
    stems: dict[str, list[str]] = {}
    for source, files, root in zip(sources, plans, roots):
        for f in files:
            stems.setdefault((source.id_prefix or root) + f.rel, []).append(f.path)
    if any(_ROW_SUFFIX.search(stem) for stem in stems):
        return None
    return {path for paths in stems.values() if len(paths) > 1 for path in paths}


_ROW_SUFFIX = re.compile(r":[0-9]+$")


class _Checker:
    """Decides each record's fate; remembers accepted ids of `tracked` files to find duplicates
    (None: of every file)."""

    def __init__(self, config: IngestConfig, tracked: set[str] | None = None):
        self.config = config
        self.allowed = None if config.labels is None else {field_string(l) for l in config.labels}
        self.seen: dict[str, tuple[str, str, int]] = {}   # doc_id -> (text_sha, source, row)
        self.tracked = tracked

    def _tracks(self, path: str) -> bool:
        return self.tracked is None or path in self.tracked

    def check(self, record: RawRecord, source: Source,
              id_root: str = "") -> tuple[Accepted | None, Rejected | None]:
        doc_id, id_problem = _doc_id(record, source, id_root)
        if record.error:
            return None, (doc_id, *record.error)
        text, problem = _checked_text(record.text, self.config)
        if problem:
            return None, (doc_id, *problem)
        if id_problem:
            return None, (doc_id, *id_problem)
        try:
            label, split = field_string(record.label, "label"), field_string(record.split, "split")
            label, split = label or None, split or None     # "": CSV's null, see the module docstring
        except ValueError as e:
            return None, (doc_id, "invalid_field", str(e))
        if label is not None and self.allowed is not None and label not in self.allowed:
            return None, (doc_id, "label_not_allowed", self._not_allowed(label))
        sha = text_sha(text)
        if self._tracks(record.source):
            duplicate = self._duplicate(doc_id, sha)
            if duplicate:
                return None, (doc_id, *duplicate)
            self.seen[doc_id] = (sha, record.source, record.row)
        return (doc_id, sha, text, label, split), None

    def remember(self, documents: pa.Table) -> bool:
        """Take a reused file's accepted documents as seen; False (nothing taken) if one of
        their ids is taken already: the file must be read again to decide its duplicates."""
        if self.tracked is not None and not any(self._tracks(p) for p in pc.unique(documents["source"]).to_pylist()):
            return True                  # no other file can share its ids
        ids = documents["doc_id"].to_pylist()
        if any(i in self.seen for i in ids) or len(set(ids)) != len(ids):
            return False
        for doc_id, sha, source, row in zip(ids, documents["text_sha"].to_pylist(),
                                            documents["source"].to_pylist(), documents["row"].to_pylist()):
            self.seen[doc_id] = (sha, source, row)
        return True

    def _not_allowed(self, label: str) -> str:
        declared = ", ".join(repr(l) for l in sorted(self.allowed)[:20])
        return f"label {label!r} is not one of the declared labels ({declared})"

    def _duplicate(self, doc_id: str, sha: str) -> tuple[str, str] | None:
        if doc_id not in self.seen:
            return None
        first_sha, source, row = self.seen[doc_id]
        if first_sha == sha:
            return "duplicate_row", f"same doc_id and text as {source} row {row}"
        return ("duplicate_id_conflict", f"doc_id {doc_id!r} already taken by {source} row {row} "
                f"with different text (sha {first_sha[:12]}, this one {sha[:12]})")


def _doc_id(record: RawRecord, source: Source,
            id_root: str = "") -> tuple[str | None, tuple[str, str] | None]:
    """(doc_id, None) or (None, problem): the id column's value, else the positional id
    (after the source's id_prefix if it has one, else after `id_root`: see `id_roots`)."""
    if source.id_column is None:
        return (source.id_prefix or id_root) + record.local_id, None
    try:
        value = field_string(record.doc_id, "id")
    except ValueError as e:
        return None, ("invalid_field", str(e))
    if value is None or not value.strip():
        found = "null" if value is None else "empty"
        return None, ("missing_id", f"id column {source.id_column!r} is {found}")
    return source.id_prefix + value, None


def _checked_text(value: Any, config: IngestConfig) -> tuple[str | None, tuple[str, str] | None]:
    """(normalized text, None) or (None, (reason, detail))."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None, ("null_text", "text is null")
    if not isinstance(value, str):
        return None, ("not_string", f"text is {type(value).__name__} {_short(value)}, not a string")
    text = normalize(value, config.normalization)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as e:
        return None, ("invalid_utf8", f"text has an unpaired surrogate U+{ord(text[e.start]):04X} "
                                      f"at character {e.start + 1:,}")
    if not text.strip():
        return None, ("empty_text", "text is empty" if not text else
                      f"text is whitespace only ({len(text):,} characters)")
    if "\x00" in text:
        return None, ("binary_content", f"text has NUL characters (first at character "
                                        f"{text.index(chr(0)) + 1:,}): binary or UTF-16 data?")
    if size > config.max_bytes:
        return None, ("too_large", f"text is {size:,} bytes > max_bytes {config.max_bytes:,}")
    return text, None


def field_string(value: Any, name: str = "value") -> str | None:
    """A label, id or split as a string (see the module docstring); ValueError if it has none."""
    if value is None:
        return None
    if isinstance(value, str):
        if not value.isascii():
            _check_encodable(value, name)
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    raise ValueError(f"{name} is {type(value).__name__} {_short(value)}; expected a string or a number")


def _check_encodable(value: str, name: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{name} has an unpaired surrogate U+{ord(value[e.start]):04X}") from None


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# ---------------------------------------------------------------- output


class _BatchBuilder:
    """Rows of the two tables, turned into Arrow on flush."""

    def __init__(self) -> None:
        self.documents: list[tuple] = []   # DOCUMENTS_SCHEMA order
        self.rejected: list[tuple] = []    # REJECTED_SCHEMA order

    @property
    def input_rows(self) -> int:
        return len(self.documents) + len(self.rejected)

    def add(self, record: RawRecord, accepted: Accepted | None, rejected: Rejected | None) -> None:
        if accepted is not None:
            self.documents.append((*accepted, record.source, record.row))
        else:
            self.rejected.append((record.source, record.row, *rejected))

    def flush(self) -> IngestBatch:
        batch = IngestBatch(_table(self.documents, DOCUMENTS_SCHEMA), _table(self.rejected, REJECTED_SCHEMA))
        self.documents, self.rejected = [], []
        return batch


def _table(rows: list[tuple], schema: pa.Schema) -> pa.Table:
    columns = list(zip(*rows)) if rows else [() for _ in schema]
    return pa.table([pa.array(c, type=f.type) for c, f in zip(columns, schema)], schema=schema)
