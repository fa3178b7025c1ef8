"""Nearest documents of a corpus by cosine over its cached vectors (storage.query.topk_cosine).

    hits = similar_documents(store, "bbc", fingerprint, query_vector, k=5)
    hits[0].doc_id, hits[0].label, hits[0].score, hits[0].text
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc

from .storage import FeatureStore
from .storage.query import topk_cosine


@dataclass(frozen=True)
class Hit:
    """One document found by `Store.similar`, best first."""
    doc_id: str              # the first document of the snapshot with this text
    label: str | None
    score: float             # cosine similarity to the query, in [-1, 1]
    text: str
    text_sha: str


def similar_documents(store: FeatureStore, corpus: str, fingerprint: str, query: np.ndarray,
                      k: int = 5) -> list[Hit]:
    """The k documents of the corpus's current snapshot nearest `query` (H,), distinct texts, best first."""
    docs = store.corpus(corpus).read()
    keys, scores = topk_cosine(store, "bert_features", query.reshape(1, -1), k=k, fingerprint=fingerprint,
                               restrict_to=pc.unique(docs["text_sha"]))
    texts = store.open("documents", store.resolve_linked(corpus, "documents")).lookup(keys[0], ["text"])
    first: dict[str, dict] = {}
    for row in docs.select([c for c in ("doc_id", "text_sha", "label") if c in docs.column_names]).to_pylist():
        first.setdefault(row["text_sha"], row)
    return [Hit(doc_id=first[key]["doc_id"], label=first[key].get("label"), score=float(score), text=text,
                text_sha=key)
            for key, score, text in zip(keys[0], scores[0], texts["text"].to_pylist())]
