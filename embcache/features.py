"""A corpus's document vectors with their labels and splits, as numpy, torch, Arrow, pandas or a `datasets.Dataset`.

    f = read_features(store, "bbc", fingerprint)   # the current snapshot ⨝ bert_features, snapshot order
    f.vectors[f.splits == "train"]                  # (n_train, H) float32
    f.split("test").label_ids                       # (n_test,) int64 indices into f.label_names

Splits are the ones every classifier of the corpus uses (stages.classify.labelled): the
snapshot's split column when it has one (validation carved from train when absent),
else a seeded, stratified 80/10/10 of the labelled documents.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa

from .pipeline.errors import PipelineError
from .storage import FeatureStore
from .storage.matrix import WarmMatrices

if TYPE_CHECKING:
    import datasets
    import pandas

Format = Literal["numpy", "torch", "arrow", "dataset", "pandas"]
FORMATS: tuple[str, ...] = ("numpy", "torch", "arrow", "dataset", "pandas")


@dataclass(frozen=True)
class Features:
    """One row per document of a corpus snapshot, in snapshot order. N documents, H dimensions."""
    corpus: str
    snapshot: str                    # the snapshot id the rows come from
    fingerprint: str                 # the bert_features table the vectors come from
    doc_ids: np.ndarray              # (N,) str
    text_sha: np.ndarray             # (N,) str: the content key (documents may share a text)
    labels: np.ndarray               # (N,) str, None where unlabelled
    label_names: tuple[str, ...]     # sorted: label_ids index into it
    label_ids: Any                   # (N,) int64, -1 where unlabelled (a torch tensor with format="torch")
    splits: np.ndarray               # (N,) "train" | "validation" | "test" | None
    vectors: Any                     # (N, H) float32 (a torch tensor with format="torch")

    def __len__(self) -> int:
        return len(self.doc_ids)

    def __repr__(self) -> str:
        return (f"Features({self.corpus!r}, snapshot {self.snapshot}, {len(self)} documents × "
                f"{self.vectors.shape[1]}, bert_features@{self.fingerprint[:12]})")

    def split(self, name: str) -> Features:
        """The rows of one split ("train", "validation", "test"), in snapshot order."""
        return self.take(np.flatnonzero(self.splits == name))

    def take(self, rows) -> Features:
        """The given rows (indices or a boolean mask), in that order."""
        rows = np.asarray(rows)
        return replace(self, doc_ids=self.doc_ids[rows], text_sha=self.text_sha[rows], labels=self.labels[rows],
                       label_ids=self.label_ids[rows], splits=self.splits[rows], vectors=self.vectors[rows])

    def to_torch(self) -> Features:
        """The same rows with `vectors` and `label_ids` as torch tensors (sharing memory where possible)."""
        import torch
        return replace(self, vectors=torch.as_tensor(np.asarray(self.vectors)),
                       label_ids=torch.as_tensor(np.asarray(self.label_ids)))

    def to_arrow(self) -> pa.Table:
        """doc_id, text_sha, label, label_id, split, vector (fixed-size list of float32)."""
        vectors = np.ascontiguousarray(np.asarray(self.vectors), dtype=np.float32)        # (N, H)
        return pa.table({
            "doc_id": pa.array(self.doc_ids.tolist(), pa.string()),
            "text_sha": pa.array(self.text_sha.tolist(), pa.string()),
            "label": pa.array(self.labels.tolist(), pa.string()),
            "label_id": pa.array(np.asarray(self.label_ids), pa.int64()),
            "split": pa.array(self.splits.tolist(), pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1]),
        })

    def to_pandas(self, wide: bool = False) -> pandas.DataFrame:
        """A DataFrame with the to_arrow() columns: `vector` holds one (H,) float32 array per row,
        or, wide=True, H float32 columns vector_0 … vector_{H-1} (what scikit-learn and
        plotting code take as they are)."""
        import pandas as pd
        vectors = np.asarray(self.vectors, dtype=np.float32)                             # (N, H)
        frame = pd.DataFrame({"doc_id": self.doc_ids, "text_sha": self.text_sha, "label": self.labels,
                              "label_id": np.asarray(self.label_ids), "split": self.splits})
        if wide:
            columns = pd.DataFrame(vectors, columns=[f"vector_{i}" for i in range(vectors.shape[1])],
                                   index=frame.index)
            return pd.concat([frame, columns], axis=1)
        frame["vector"] = list(vectors)
        return frame

    def to_dataset(self) -> datasets.Dataset:
        """A Hugging Face `datasets.Dataset` with the to_arrow() columns (`.with_format("torch")` for tensors)."""
        import datasets
        return datasets.Dataset(self.to_arrow())


def read_features(store: FeatureStore, corpus: str, fingerprint: str, split_seed: int = 0,
                  snapshot: str | None = None, matrices: WarmMatrices | None = None) -> Features:
    """The snapshot's documents joined with bert_features@fingerprint (NotFound if any lacks a vector).

    matrices: the caller's warm matrices (embcache.Store's); a fresh one loads the matrix again."""
    snap = store.corpus(corpus).snapshot(snapshot).id
    joined = store.corpus(corpus).read(snap)
    n = joined.num_rows
    labels = _column(joined, "label", n)
    names, label_ids = _label_ids(labels)
    matrix = (matrices or WarmMatrices()).get(store.open("bert_features", fingerprint))   # checked matrix
    vectors = np.array(matrix.vectors[matrix.rows_of(joined["text_sha"])])              # (N, H), own copy
    return Features(corpus=corpus, snapshot=snap, fingerprint=fingerprint,
                    doc_ids=_column(joined, "doc_id", n), text_sha=_column(joined, "text_sha", n),
                    labels=labels, label_names=names, label_ids=label_ids,
                    splits=_splits(store, corpus, snap, joined, split_seed),
                    vectors=vectors)


def _column(table: pa.Table, name: str, n: int) -> np.ndarray:
    """A string column as an (n,) object array; all None when the snapshot has no such column."""
    values = table[name].to_pylist() if name in table.column_names else [None] * n
    out = np.empty(n, dtype=object)
    out[:] = values
    return out


def _label_ids(labels: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    names = tuple(sorted({v for v in labels if v is not None}))
    index = {name: i for i, name in enumerate(names)}
    return names, np.array([index.get(v, -1) for v in labels], dtype=np.int64)


def _splits(store: FeatureStore, corpus: str, snapshot: str, joined: pa.Table, seed: int) -> np.ndarray:
    """Each document's split as the corpus's classifiers see it; the split column as ingested where
    the corpus cannot be split that way (no labels, a single label, or unknown split names)."""
    from .stages.classify import labelled
    raw = _column(joined, "split", joined.num_rows)
    if all(v is None for v in _column(joined, "label", joined.num_rows)):
        return raw
    try:
        data = labelled(store, corpus, seed, snapshot)
    except PipelineError:
        return raw
    out = np.full(joined.num_rows, None, dtype=object)
    row_of = {doc: row for row, doc in enumerate(joined["doc_id"].to_pylist())}
    doc_ids = data.docs["doc_id"].to_pylist()
    for name, rows in data.parts.items():
        out[[row_of[doc_ids[r]] for r in rows]] = name
    return out


def convert(features: Features, format: Format, wide: bool = False):
    """`features` in the asked format (numpy: as is; wide: pandas' vector columns)."""
    if format == "numpy":
        return features
    if format == "torch":
        return features.to_torch()
    if format == "arrow":
        return features.to_arrow()
    if format == "dataset":
        return features.to_dataset()
    if format == "pandas":
        return features.to_pandas(wide)
    raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
