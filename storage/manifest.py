"""Versioned JSON files of the store: table specs, table manifests, corpus manifests.

A manifest is the whole truth about a table: a shard it does not list does not exist.

    {"format": "embcache.table_manifest", "format_version": 1, "table": "bert_features",
     "fingerprint": "3f2a…", "key": "text_sha",
     "generation": 2, "schema": "<base64 Arrow IPC schema>", "columns": {"text_sha": "string", …},
     "codecs": {"vector": {"codec": "none", "encoding": "plain", "ratio": 0.87, "tried": {…}}, …},
     "shards": [{"file": "part-…parquet", "rows": 512, "bytes": 801234, "sha256": "…",
                 "created": "2026-11-21T09:30:00Z"}, …]}
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ..common.formats import Format, HeaderMismatch, header, parse_json  # noqa: F401 (header: re-exported)
from .errors import FormatError
from .fs import FILE_RE

# Every file embcache writes starts {"format": "embcache.<what>", "format_version": N}; readers
# check both. Stores written before this convention have {"format": N}: still read as version N.
MANIFEST_FORMAT = Format("embcache.table_manifest", 1)
SPEC_FORMAT = Format("embcache.table_spec", 1)
CORPUS_FORMAT = Format("embcache.corpus_manifest", 1)


def utcnow() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def dump(obj: dict) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()


def load(path: str, data: bytes, fmt: Format, kind: str) -> dict:
    """Parse a JSON file and check its format header (common/formats.py), naming the file on any problem."""
    try:
        return parse_json(data, fmt, f"a {kind}")
    except HeaderMismatch as e:
        raise FormatError(path, str(e)) from None


def schema_to_text(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def schema_from_text(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


@dataclass(frozen=True)
class Shard:
    file: str      # base name under shards/
    rows: int
    bytes: int
    sha256: str    # of the whole file
    created: str


@dataclass(frozen=True)
class Manifest:
    table: str
    fingerprint: str
    key: str                                   # column rows are keyed by (a content hash)
    generation: int = 0                        # +1 per commit
    schema: str | None = None                  # fixed by the first shard
    codecs: dict[str, dict] = field(default_factory=dict)
    shards: tuple[Shard, ...] = ()

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.shards)

    def arrow_schema(self) -> pa.Schema | None:
        return schema_from_text(self.schema) if self.schema else None

    def to_json(self) -> bytes:
        d = {**header(MANIFEST_FORMAT), **dataclasses.asdict(self)}
        schema = self.arrow_schema()
        d["columns"] = {f.name: str(f.type) for f in schema} if schema else {}
        return dump(d)

    @classmethod
    def from_json(cls, path: str, data: bytes) -> "Manifest":
        d = load(path, data, MANIFEST_FORMAT, "table manifest")
        try:
            m = cls(table=d["table"], fingerprint=d["fingerprint"], key=d["key"],
                    generation=int(d["generation"]), schema=d.get("schema"),
                    codecs=dict(d.get("codecs", {})),
                    shards=tuple(Shard(**s) for s in d["shards"]))
        except (KeyError, TypeError) as e:
            raise FormatError(path, f"table manifest is missing or has a bad field: {e}") from e
        check_file_names(path, "shard", [s.file for s in m.shards])
        return m


@dataclass(frozen=True)
class Snapshot:
    id: str        # sortable: <UTC time>-<counter>
    file: str      # base name under snapshots/
    rows: int
    bytes: int
    sha256: str
    created: str
    note: str = ""
    stats: dict = field(default_factory=dict)   # what the run that made it counted (e.g. rejected rows)


@dataclass(frozen=True)
class CorpusManifest:
    corpus: str
    snapshots: tuple[Snapshot, ...] = ()
    links: dict[str, list[str]] = field(default_factory=dict)  # table name -> fingerprints used
    # Snapshot ids held back: id -> the content digest it is held for. An ingest reserves its
    # snapshot's id (and commits its rejects under it) before committing the snapshot; repair
    # holds the id of a snapshot it dropped. Another content never gets a held id; the same
    # content gets it back (so a cut or repaired ingest, re-run, ends as a clean one).
    held: dict[str, str] = field(default_factory=dict)

    def next_id(self) -> str:
        """The id after every committed and held one."""
        ids = [s.id for s in self.snapshots] + list(self.held)
        return f"{max((int(i) for i in ids if i.isdigit()), default=0) + 1:06d}"

    @property
    def current(self) -> Snapshot | None:
        return self.snapshots[-1] if self.snapshots else None

    def to_json(self) -> bytes:
        d = {**header(CORPUS_FORMAT), **dataclasses.asdict(self)}
        return dump(d)

    @classmethod
    def from_json(cls, path: str, data: bytes) -> "CorpusManifest":
        d = load(path, data, CORPUS_FORMAT, "corpus manifest")
        try:
            m = cls(corpus=d["corpus"], snapshots=tuple(Snapshot(**s) for s in d["snapshots"]),
                    links={k: list(v) for k, v in d.get("links", {}).items()},
                    held={str(k): str(v) for k, v in d.get("held", {}).items()})
        except (KeyError, TypeError) as e:
            raise FormatError(path, f"corpus manifest is missing or has a bad field: {e}") from e
        check_file_names(path, "snapshot", [s.file for s in m.snapshots])
        return m


def check_file_names(path: str, kind: str, names: list) -> None:
    """A listed file is one plain name in its folder: a damaged or hostile listing
    ('../../x', '/etc/passwd') must not make a reader leave the store."""
    for name in names:
        if not isinstance(name, str) or not FILE_RE.match(name):
            raise FormatError(path, f"lists {kind} file {name!r}, which is not a plain file name")


def spec_json(name: str, fp: str, key: str, spec: dict[str, Any], meta: dict[str, Any] | None = None) -> bytes:
    """`spec` is what the fingerprint hashes; `meta` is how to reproduce it (e.g. the model's
    path) and is not hashed: content identity comes from digests, not from where files sit."""
    return dump({**header(SPEC_FORMAT), "table": name, "fingerprint": fp, "key": key,
                 "spec": spec, "meta": meta or {}, "created": utcnow()})
