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
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..pipeline.ingest import DOCUMENTS_SCHEMA, IngestConfig, Source, check_ingest, iter_ingest
from ..storage import FeatureStore

from .bert import documents_spec
from .stage import Stage

REJECT_SHARD_ROWS = 100_000
REJECTED = Stage("rejected", 2)    # 2: rows name their snapshot; one row per rejected record
REJECTED_SPEC = REJECTED.spec({})


@dataclass(frozen=True)
class IngestSummary:
    corpus: str
    snapshot: str
    documents: int            # accepted into the snapshot
    new_texts: int            # texts the store had not seen (under any id, in any corpus)
    rejected: dict            # reason -> count
    inputs: int               # records read: documents + rejected

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


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
    rejected_table = store.table("rejected", REJECTED_SPEC, key="reject_key")
    snapshot_parts, rejects, counts, new_texts = [], [], Counter(), 0
    for batch in iter_ingest(sources, config):
        docs = batch.documents
        unseen = texts.missing(pc.unique(docs["text_sha"]))
        if len(unseen):
            fresh = first_per_key(docs.filter(pc.is_in(docs["text_sha"], value_set=unseen)), "text_sha")
            shard = texts.write(fresh.select(["text_sha", "text"]))
            new_texts += shard.rows if shard else 0
        snapshot_parts.append(docs.drop_columns(["text"]))
        rej = batch.rejected
        if rej.num_rows:
            counts.update(rej["reason"].to_pylist())
            rejects.append(rej)
        if progress:
            progress(docs.num_rows + rej.num_rows)
    snapshot_docs = (pa.concat_tables(snapshot_parts) if snapshot_parts
                     else DOCUMENTS_SCHEMA.empty_table().drop_columns(["text"]))
    stats = {"documents": snapshot_docs.num_rows, "new_texts": new_texts, "rejected": dict(counts),
             "normalization": config.normalization, "sources": [asdict(s) for s in sources]}
    stats["content_sha256"] = content_digest(snapshot_docs, stats)
    handle = store.corpus(corpus)
    current = handle.manifest().snapshots[-1:]
    if current and current[0].stats.get("content_sha256") == stats["content_sha256"]:
        snap = current[0]                  # same documents, labels and rejects: no new snapshot
    else:
        snap = handle.commit_snapshot(snapshot_docs, stats=stats, same_as_current="content_sha256")
    # After the snapshot, whose id they carry: a run cut in between finds the same content
    # on its re-run, keeps that snapshot and writes the missing rows (keys are per snapshot).
    if rejects:
        rejected = pa.concat_tables(rejects).combine_chunks()
        for first in range(0, rejected.num_rows, REJECT_SHARD_ROWS):
            rejected_table.write(reject_rows(corpus, snap.id, rejected.slice(first, REJECT_SHARD_ROWS), first))
    handle.link("documents", texts.fingerprint)
    return IngestSummary(corpus, snap.id, snapshot_docs.num_rows, new_texts, dict(counts),
                         snapshot_docs.num_rows + sum(counts.values()))


def content_digest(snapshot_docs: pa.Table, stats: dict) -> str:
    """sha256 of a snapshot's rows (in order) and of what was read to make it, new_texts aside.

    Re-ingesting unchanged sources gives the same digest, so a scheduled run that finds
    nothing new leaves the corpus on its current snapshot instead of adding a copy.
    """
    import io
    h = hashlib.sha256()
    sink = io.BytesIO()
    table = snapshot_docs.replace_schema_metadata(None).combine_chunks()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    h.update(sink.getvalue())
    h.update(json.dumps({k: v for k, v in stats.items() if k != "new_texts"}, sort_keys=True).encode())
    return h.hexdigest()
