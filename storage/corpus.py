"""Corpus snapshots: which documents are current, and which feature tables were built for them.

    corpora/<name>/manifest.json               snapshots in commit order + links to tables
    corpora/<name>/snapshots/snap-<uuid>.parquet   doc_id, text_sha, …(label, split, source)

A snapshot is immutable; a run over a corpus commits a new one. Removing a document
only removes it from the next snapshot: its feature rows stay keyed by content and
are reused if the text comes back under any id.
"""

from __future__ import annotations

import uuid

import pyarrow as pa
import pyarrow.compute as pc

from . import manifest as mf
from .errors import CorruptShard, NotFound, SchemaMismatch, did_you_mean
from .fs import StoreFS, check_fingerprint, check_name
from .lock import commit_lock
from .shards import choose_codecs, decode_shard, encode_shard

REQUIRED = ("doc_id", "text_sha")


class Corpus:
    def __init__(self, fs: StoreFS, name: str):
        self.fs = fs
        self.name = check_name("corpus", name)
        self.dir = fs.path("corpora", name)
        self.manifest_path = f"{self.dir}/manifest.json"

    def __repr__(self) -> str:
        return f"Corpus({self.name!r})"

    def exists(self) -> bool:
        return self.fs.exists(self.manifest_path)

    def require(self) -> "Corpus":
        """This corpus, or NotFound when nothing was ever ingested under its name."""
        if not self.exists():
            known = [n for n in self.fs.listdir(self.fs.path("corpora"))
                     if self.fs.exists(f"{self.fs.path('corpora', n)}/manifest.json")]
            close = did_you_mean(self.name, known)
            if close is not None:         # a typo: not an invitation to ingest a second corpus
                raise NotFound(self.dir, f"no corpus {self.name!r} in this store; did you mean {close!r}? "
                                         f"(corpora: {', '.join(known)})")
            raise NotFound(self.dir, f"no corpus {self.name!r} in this store: ingest it first "
                                     f"(embcache ingest {self.name} SOURCES...)"
                                     + (f"; corpora here: {', '.join(known)}" if known else ""))
        return self

    def manifest(self) -> mf.CorpusManifest:
        if not self.exists():
            return mf.CorpusManifest(corpus=self.name)
        return mf.CorpusManifest.from_json(self.manifest_path, self.fs.read_bytes(self.manifest_path))

    def reserve_id(self, content: str, stat: str = "content_sha256") -> str:
        """An id for the next snapshot of `content` (a digest, kept in its stats[`stat`]), held
        until that snapshot is committed with `commit_snapshot(snapshot_id=…)`: rows that name
        the snapshot (its rejects) can be committed first, so no snapshot is ever without
        them. A run cut in between leaves the id held; the same content, re-run, gets it
        back, other content never does. When the current snapshot already has this content
        (another writer was first), its id is returned."""
        def found(m: mf.CorpusManifest) -> str | None:
            if m.current and m.current.stats.get(stat) == content:
                return m.current.id
            last = max((int(s.id) for s in m.snapshots if s.id.isdigit()), default=0)
            return next((i for i, c in m.held.items() if c == content and i.isdigit() and int(i) > last), None)

        if (known := found(self.manifest())) is not None:
            return known
        with commit_lock(self.fs, f"{self.dir}/.lock"):
            m = self.manifest()
            if (known := found(m)) is not None:
                return known
            snapshot_id = m.next_id()
            self.fs.write_atomic(self.manifest_path, mf.CorpusManifest(
                self.name, m.snapshots, m.links, {**m.held, snapshot_id: content}).to_json())
        return snapshot_id

    def commit_snapshot(self, docs: pa.Table, note: str = "", stats: dict | None = None,
                        same_as_current: str | None = None, snapshot_id: str | None = None) -> mf.Snapshot:
        """Make `docs` (doc_id, text_sha, any extra columns) the current document set.

        same_as_current: a key of `stats`; when the current snapshot's stats hold the same
        value there, it stays current and is returned (checked under the lock, so two
        writers ingesting the same content at once commit one snapshot, not two).
        snapshot_id: one `reserve_id` gave (default: the next free id).
        """
        for col in REQUIRED:
            if col not in docs.column_names:
                raise SchemaMismatch(self.dir, f"snapshot needs column {col!r} "
                                               f"(columns: {', '.join(docs.column_names)})")
            if docs[col].null_count:
                raise SchemaMismatch(self.dir, f"snapshot column {col!r} has {docs[col].null_count} nulls")
        if pc.count_distinct(docs["doc_id"]).as_py() != docs.num_rows:
            raise SchemaMismatch(self.dir, "snapshot has duplicate doc_id values")
        docs = docs.replace_schema_metadata(None)
        data, sha = encode_shard(docs, choose_codecs(docs))
        file = f"snap-{uuid.uuid4().hex}.parquet"
        self.fs.write_atomic(f"{self.dir}/snapshots/{file}", data)
        with commit_lock(self.fs, f"{self.dir}/.lock"):
            m = self.manifest()
            value = (stats or {}).get(same_as_current) if same_as_current else None
            if value is not None and m.current and m.current.stats.get(same_as_current) == value:
                self.fs.delete(f"{self.dir}/snapshots/{file}")
                return m.current
            # Ids follow every committed and held one (never the count: `repair` may have dropped
            # a snapshot), and a held id goes only to the content it was held for.
            held = dict(m.held)
            if snapshot_id not in held or any(s.id == snapshot_id for s in m.snapshots):
                snapshot_id = m.next_id()       # none reserved (or another writer took it meanwhile)
            held.pop(snapshot_id, None)
            snap = mf.Snapshot(id=snapshot_id, file=file, rows=docs.num_rows,
                               bytes=len(data), sha256=sha, created=mf.utcnow(), note=note,
                               stats=dict(stats or {}))
            new = mf.CorpusManifest(corpus=self.name, snapshots=m.snapshots + (snap,), links=m.links,
                                    held=held)
            self.fs.write_atomic(self.manifest_path, new.to_json())
        return snap

    def snapshot(self, snapshot_id: str | None = None) -> mf.Snapshot:
        m = self.manifest()
        if not m.snapshots:
            raise NotFound(self.dir, f"corpus {self.name!r} has no snapshot yet (run ingest first)")
        if snapshot_id is None:
            return m.current
        for s in m.snapshots:
            if s.id == snapshot_id:
                return s
        raise NotFound(self.dir, f"corpus {self.name!r} has no snapshot {snapshot_id!r}")

    def snapshot_path(self, snap: mf.Snapshot) -> str:
        return f"{self.dir}/snapshots/{snap.file}"

    def read(self, snapshot_id: str | None = None, columns: list[str] | None = None) -> pa.Table:
        """The documents of a snapshot (the current one by default)."""
        snap = self.snapshot(snapshot_id)
        path = self.snapshot_path(snap)
        try:
            data = self.fs.read_bytes(path)
        except NotFound as e:
            raise CorruptShard(path, "committed snapshot is missing: the manifest lists it, the file does not exist") from e
        return decode_shard(path, data, snap.bytes, snap.sha256, columns)

    def link(self, table: str, fingerprint: str) -> None:
        """Record that `table` under `fingerprint` was built for this corpus (gc keeps it).

        The most recently linked fingerprint is the corpus's default for `table`: linking
        one that was linked before makes it the default again.
        """
        check_name("table", table)
        check_fingerprint(fingerprint)
        if self.manifest().links.get(table, [])[-1:] == [fingerprint]:
            return        # already the default: nothing to write, no lock (a fully cached run on a read-only store)
        with commit_lock(self.fs, f"{self.dir}/.lock"):
            m = self.manifest()
            if m.links.get(table, [])[-1:] == [fingerprint]:
                return
            links = {k: [fp for fp in v if not (k == table and fp == fingerprint)] for k, v in m.links.items()}
            links.setdefault(table, []).append(fingerprint)
            self.fs.write_atomic(self.manifest_path,
                                 mf.CorpusManifest(self.name, m.snapshots, links, m.held).to_json())
