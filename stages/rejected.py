"""The `rejected` table: one row per input record that ingest turned away, naming its snapshot.

Written by stages/ingest.py, read back by stages/source_state.py (the rejects of files that
did not change since the last snapshot), so both take its declaration from here.
"""

from __future__ import annotations

from ..storage import FeatureStore, Table
from .stage import Stage

REJECTED = Stage("rejected", 2)    # 2: rows name their snapshot; one row per rejected record
REJECTED_SPEC = REJECTED.spec({})


def rejected_table(store: FeatureStore) -> Table:
    """The store's `rejected` table (keyed by reject_key), committed or not yet."""
    return store.table("rejected", REJECTED_SPEC, key="reject_key")
