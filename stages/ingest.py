"""Ingest as a unit of work over the store (no Prefect here: flows wrap it).

Streams the sources batch by batch: new texts go to the content-keyed `documents`
table, and the accepted documents become the corpus's new snapshot. Bad rows go to
`rejected` (corpus, snapshot, source, row, reason), tied to the snapshot of the ingest
that read them: the current snapshot's rejects are

    SELECT r.* FROM rejected r JOIN embcache_snapshots s USING (corpus, snapshot) WHERE s.current
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..pipeline.ingest import DOCUMENTS_SCHEMA, IngestConfig, Source, check_ingest, iter_ingest
from ..storage import FeatureStore

from .bert import documents_spec
from .rejected import rejected_table
from .source_state import SourceState

REJECT_SHARD_ROWS = 100_000
TEXT_SHARD_ROWS = 50_000             # new texts are checked and committed this many documents at a time
TEXT_SHARD_BYTES = 64 * 2**20        # ... or this many bytes of text, whichever comes first
DIGEST_ROWS = 65_536                 # snapshot rows hashed per IPC batch (content_digest)
DIGEST_SCHEME = b"embcache.content_digest 2\n"


@dataclass(frozen=True)
class IngestSummary:
    corpus: str
    snapshot: str
    documents: int            # accepted into the snapshot
    new_texts: int            # texts the store had not seen (under any id, in any corpus)
    rejected: dict            # reason -> count
    inputs: int               # records read: documents + rejected
    # What changed in the sources since the last ingest (SourceState.counts): files (objects
    # too) found now and not then; found with another size, mtime or inode (object: version);
    # gone; unchanged and not read (rows from the last snapshot); unchanged but read again
    # (--rescan, other options, modified within 2 s of the last ingest). objects: how many of
    # the files found now are objects in an object store (s3://...).
    files_added: int = 0
    files_edited: int = 0
    files_removed: int = 0
    files_unchanged: int = 0
    files_reread: int = 0
    objects: int = 0
    # encoding="auto" sources: what the files read this time were read as, {codec: {"files",
    #   "examples", "how"}} (pipeline.decoding.summarize); files not read are not in it
    encodings: dict = field(default_factory=dict)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def changes(self) -> dict[str, int]:
        """What changed in the sources since the last ingest, as the run record keeps it."""
        return {k: getattr(self, k) for k in ("files_added", "files_edited", "files_removed", "files_unchanged",
                                              "files_reread", "objects")}


def first_per_key(table: pa.Table, key: str) -> pa.Table:
    """Rows with the first occurrence of each key (a shard commits a key once)."""
    _, first = np.unique(table[key].to_numpy(zero_copy_only=False), return_index=True)
    return table.take(pa.array(np.sort(first)))


def reject_rows(corpus: str, snapshot: str, rejected: pa.Table, first: int) -> pa.Table:
    """Rejected records as `rejected` rows: one per record, keyed by (corpus, snapshot, ordinal).

    The ordinal (the record's place among this ingest's rejects) keeps a record read twice
    (one file reached by two sources) as two rows; an ingest that finds the same content
    again keeps the same snapshot, so its rows are the same keys and are not stored twice.
    """
    keys = [hashlib.sha256(f"{corpus}\0{snapshot}\0{i}".encode()).hexdigest()
            for i in range(first, first + rejected.num_rows)]
    n = rejected.num_rows
    return (rejected.add_column(0, "reject_key", pa.array(keys, pa.string()))
            .add_column(1, "corpus", pa.array([corpus] * n, pa.string()))
            .add_column(2, "snapshot", pa.array([snapshot] * n, pa.string())))


def ingest_corpus(store_root: str, corpus: str, sources: list[Source], config: IngestConfig,
                  progress=None) -> IngestSummary:
    check_ingest(sources, config)          # an option with no effect fails before the store is opened
    store = FeatureStore(store_root)
    texts = store.table("documents", documents_spec(config.normalization))
    rejected_rows = rejected_table(store)
    state = SourceState(store, corpus, sources, config)     # plans; knows files unchanged since the last ingest
    if state.unchanged:
        store.corpus(corpus).link("documents", texts.fingerprint)
        return replace(unchanged_summary(corpus, state.snapshot), **state.counts())
    snapshot_parts, rejects, counts, new_texts = [], [], Counter(), 0
    pending: list[pa.Table] = []          # read documents whose texts are not checked against the store yet
    for batch in iter_ingest(sources, config, plans=state.plans, reuse=state.reuse):
        docs = batch.documents
        pending.append(docs.filter(pc.is_valid(docs["text"])))     # reused rows (text null) are stored
        if sum(t.num_rows for t in pending) >= TEXT_SHARD_ROWS or sum(t.nbytes for t in pending) >= TEXT_SHARD_BYTES:
            new_texts += commit_texts(texts, pending)
            pending = []
        snapshot_parts.append(docs.drop_columns(["text"]))
        rej = batch.rejected
        if rej.num_rows:
            counts.update(rej["reason"].to_pylist())
            rejects.append(rej)
        if progress:
            progress(docs.num_rows + rej.num_rows)
    new_texts += commit_texts(texts, pending)
    snapshot_docs = (pa.concat_tables(snapshot_parts) if snapshot_parts
                     else DOCUMENTS_SCHEMA.empty_table().drop_columns(["text"]))
    stats = {"documents": snapshot_docs.num_rows, "new_texts": new_texts, "rejected": dict(counts),
             "normalization": config.normalization, "sources": [asdict(s) for s in sources]}
    stats["content_sha256"] = content_digest(snapshot_docs, stats)
    handle = store.corpus(corpus)
    rejected = pa.concat_tables(rejects).combine_chunks() if rejects else None

    def commit_rejects(snapshot_id: str) -> None:          # idempotent: keys are per snapshot id
        for first in range(0, rejected.num_rows if rejected is not None else 0, REJECT_SHARD_ROWS):
            rejected_rows.write(reject_rows(corpus, snapshot_id, rejected.slice(first, REJECT_SHARD_ROWS), first))

    current = handle.manifest().snapshots[-1:]
    if current and current[0].stats.get("content_sha256") == stats["content_sha256"]:
        snap = current[0]                  # same documents, labels and rejects: no new snapshot
        commit_rejects(snap.id)            # (a store whose ingest was cut before them gets them now)
    else:
        # The rejects first, under the id reserved for the snapshot: a run cut in between
        # leaves rows under a held id that no other content gets (its re-run gets it back),
        # never a snapshot whose stats count rejects that `rejected` lacks.
        reserved = handle.reserve_id(stats["content_sha256"])
        commit_rejects(reserved)
        snap = handle.commit_snapshot(snapshot_docs, stats=stats, same_as_current="content_sha256",
                                      snapshot_id=reserved)
        if snap.id != reserved:            # another writer committed this content first
            commit_rejects(snap.id)
    handle.link("documents", texts.fingerprint)
    state.save(snap)
    return IngestSummary(corpus, snap.id, snapshot_docs.num_rows, new_texts, dict(counts),
                         snapshot_docs.num_rows + sum(counts.values()), **state.counts())


def commit_texts(texts, pending: list[pa.Table]) -> int:
    """The texts of `pending` documents that the store lacks, committed as one shard; how many.

    The check is a key-index lookup (storage/keyindex.py): the documents table's keys are
    read once per process and extended by each commit, so it costs O(new texts · log N),
    not O(texts in the store) per batch."""
    read = pa.concat_tables(pending) if pending else None
    if read is None or read.num_rows == 0:
        return 0
    unseen = texts.missing(pc.unique(read["text_sha"]))
    if not len(unseen):
        return 0
    fresh = first_per_key(read.filter(pc.is_in(read["text_sha"], value_set=unseen)), "text_sha")
    shard = texts.write(fresh.select(["text_sha", "text"]))
    return shard.rows if shard else 0


def unchanged_summary(corpus: str, snap) -> IngestSummary:
    """What an ingest that read nothing reports: the current snapshot's own counts."""
    rejected = dict(snap.stats.get("rejected", {}))
    return IngestSummary(corpus, snap.id, snap.rows, 0, rejected, snap.rows + sum(rejected.values()))


class _HashSink:
    """A write-only file that hashes what is written to it."""

    def __init__(self, h):
        self.h, self.closed = h, False

    def write(self, data) -> int:
        self.h.update(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def content_digest(snapshot_docs: pa.Table, stats: dict) -> str:
    """sha256 of a snapshot's rows (in order) and of what was read to make it, new_texts aside.

    Re-ingesting unchanged sources gives the same digest, so a scheduled run that finds
    nothing new leaves the corpus on its current snapshot instead of adding a copy. The rows
    are hashed as an Arrow IPC stream of DIGEST_ROWS-row batches, whatever chunks the
    snapshot came in: a copy of one batch at a time, never of the whole snapshot. (Digests
    made before this scheme, one batch of every row, differ: a store's first re-ingest of
    re-read but unchanged files after the change commits one identical snapshot.)
    """
    h = hashlib.sha256(DIGEST_SCHEME)
    table = snapshot_docs.replace_schema_metadata(None)
    with pa.ipc.new_stream(pa.PythonFile(_HashSink(h), mode="w"), table.schema) as writer:
        for start in range(0, table.num_rows, DIGEST_ROWS):
            writer.write_table(table.slice(start, DIGEST_ROWS).combine_chunks())
    h.update(json.dumps({k: v for k, v in stats.items() if k != "new_texts"}, sort_keys=True).encode())
    return h.hexdigest()
