"""What every classifier of a corpus shares: its labelled documents and one split.

The linear head, the static-vector classifier and the fine-tuned encoder of one corpus
must be compared on the same documents, so the split is a pure function of the
snapshot (its labelled documents in snapshot order, their split column) and a seed:

    docs = labelled_documents(store, "bbc")          # doc_id, text_sha, label, split (labelled rows only)
    parts = corpus_split(docs, seed=0)               # {"train", "validation", "test"}: row indices into docs
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..pipeline.errors import PipelineError
from ..pipeline.splits import LabelSet, classification_metrics, split_from_column, stratified_split
from ..storage import FeatureStore


@dataclass(frozen=True)
class Labelled:
    docs: pa.Table                 # the snapshot's labelled documents, snapshot order
    labels: LabelSet
    y: np.ndarray                  # (N,) int64 class indices
    parts: dict[str, np.ndarray]   # split name -> row indices into docs
    snapshot: str
    unlabelled: int                # documents of the snapshot left out: no label


def labelled(store: FeatureStore, corpus: str, seed: int = 0, snapshot: str | None = None) -> Labelled:
    """The corpus's labelled documents and their split (the split column, else seeded, stratified 80/10/10)."""
    c = store.corpus(corpus)
    snap = c.snapshot(snapshot).id
    docs = c.read(snap, columns=["doc_id", "text_sha", "label", "split"])
    keep = pc.is_valid(docs["label"])
    unlabelled = docs.num_rows - pc.sum(keep.cast(pa.int64())).as_py() if docs.num_rows else 0
    docs = docs.filter(keep)
    if docs.num_rows == 0:
        raise PipelineError(f"corpus {corpus}", "no document has a label: ingest with --label-column "
                                                "or a folder-per-label source")
    values = docs["label"].to_pylist()
    labels = LabelSet.from_values(values)
    if len(labels) < 2:
        raise PipelineError(f"corpus {corpus}", f"needs at least two labels, found {list(labels.names)}")
    y = labels.encode(values)
    split = docs["split"].to_pylist()
    if any(s is not None for s in split):
        parts = split_from_column(split, y, seed)
    else:
        parts = stratified_split(y, seed=seed)
    return Labelled(docs, labels, y, parts, snap, int(unlabelled))


def metrics(data: Labelled, part: str, proba: np.ndarray) -> dict:
    """scikit-learn metrics of (n, C) probabilities (or logits) on one split."""
    rows = data.parts[part]
    return classification_metrics(data.y[rows], np.asarray(proba).argmax(1), list(data.labels.names))


def predictions_table(keys: list[str], labels: LabelSet, proba: np.ndarray) -> pa.Table:
    """text_sha, label (the argmax), probabilities (C floats, in label order)."""
    proba = np.asarray(proba, np.float32)                                     # (N, C)
    return pa.table({
        "text_sha": pa.array(keys, pa.string()),
        "label": pa.array(labels.decode(proba.argmax(1)) if len(proba) else [], pa.string()),
        "probabilities": pa.FixedSizeListArray.from_arrays(pa.array(proba.ravel()), proba.shape[1]),
    })


def unique_rows(keys: list[str]) -> np.ndarray:
    """Indices of the first occurrence of each key (documents may share a text)."""
    _, first = np.unique(np.asarray(keys, dtype=object), return_index=True)
    return np.sort(first)
