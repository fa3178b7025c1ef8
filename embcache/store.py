"""`embcache.open(root)`: a store for reading — features, lookups, nearest neighbours, SQL, encoding.

    store = embcache.open("./embcache-store")
    f = store.features("bbc")                       # vectors (N, H), labels, splits, in snapshot order
    store.lookup(["business/001.txt"], corpus="bbc")  # (1, H)
    store.similar("bbc", text="interest rates rise", k=5)

Which bert_features a corpus means: the fingerprint its last featurize run linked to it
(`embcache featurize bert`, `embcache run`), else the table's current one; pass
`fingerprint=` (8+ hex digits) for another. The store is read through the layers'
own functions (embcache.storage, embcache.stages); nothing is written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, overload

import numpy as np
import pyarrow as pa

from .features import Features, Format, convert, read_features
from . import search
from .search import Hit
from .storage import FeatureStore, TableInfo, default_root
from .storage.query import sql

if TYPE_CHECKING:
    import datasets
    import torch


def open(root: str | os.PathLike | None = None) -> Store:    # noqa: A001 - embcache.open, like datasets/fsspec
    """Open an existing store: a directory or a URL (s3://bucket/prefix, memory://name).

    root: default $EMBCACHE_STORE, else ./embcache-store (as the CLI). A missing store is
    an error (NotFound): reading never creates one; `embcache.run` or the CLI do.
    """
    return Store(FeatureStore(root if root is not None else default_root()).require())


class Store:
    """Read access to one store. Cheap to keep around: each table's vectors are mapped once per process
    (its warm matrix), each corpus snapshot read once."""

    def __init__(self, feature_store: FeatureStore):
        self.feature_store = feature_store       # the storage layer underneath (embcache.storage)

    @property
    def root(self) -> str:
        return self.feature_store.root

    def __repr__(self) -> str:
        return f"embcache.Store({self.root!r})"

    # -- what is there ---------------------------------------------------
    def corpora(self) -> list[str]:
        """Names of the corpora with at least one snapshot."""
        return self.feature_store.corpora()

    def tables(self) -> list[TableInfo]:
        """Every committed table under every fingerprint: name, fingerprint, current, rows, shards, bytes, …"""
        return self.feature_store.tables()

    def sql(self, query: str) -> pa.Table:
        """One read-only SELECT over the store (views: each table by name, corpora.<name>, embcache_tables)."""
        return sql(self.feature_store, query)

    # -- document vectors ------------------------------------------------
    @overload
    def features(self, corpus: str, format: Literal["numpy", "torch"] = ..., *, fingerprint: str | None = ...,
                 split_seed: int = ...) -> Features: ...
    @overload
    def features(self, corpus: str, format: Literal["arrow"], *, fingerprint: str | None = ...,
                 split_seed: int = ...) -> pa.Table: ...
    @overload
    def features(self, corpus: str, format: Literal["dataset"], *, fingerprint: str | None = ...,
                 split_seed: int = ...) -> datasets.Dataset: ...

    def features(self, corpus: str, format: Format = "numpy", *, fingerprint: str | None = None,
                 split_seed: int = 0):
        """The corpus's current documents with their BERT vectors, labels and splits, in snapshot order.

        format: "numpy" (a Features), "torch" (a Features holding tensors), "arrow" (a pyarrow
        Table), "dataset" (a datasets.Dataset): columns doc_id, text_sha, label, label_id,
        split, vector. split_seed: the seed of the 80/10/10 split of a corpus without a split
        column (the heads' default is 0). NotFound if a document has no vector yet.
        """
        fp = self._features_fingerprint(corpus, fingerprint)
        return convert(read_features(self.feature_store, corpus, fp, split_seed), format)

    @overload
    def lookup(self, ids: str | Sequence[str], corpus: str | None = ..., *, fingerprint: str | None = ...,
               format: Literal["numpy"] = ...) -> np.ndarray: ...
    @overload
    def lookup(self, ids: str | Sequence[str], corpus: str | None = ..., *, fingerprint: str | None = ...,
               format: Literal["torch"]) -> torch.Tensor: ...

    def lookup(self, ids, corpus=None, *, fingerprint=None, format="numpy"):
        """Vectors for `ids`, in the order given: (N, H) float32 (a tensor with format="torch").

        With `corpus`, ids are doc_ids of its current snapshot; without, they are text hashes
        (text_sha, the table's keys). Ids the store does not have raise UnknownKeys (a KeyError)
        naming them.
        """
        if format not in ("numpy", "torch"):
            raise ValueError(f"format must be numpy or torch, got {format!r}")
        ids = [ids] if isinstance(ids, str) else list(ids)
        fp = self._features_fingerprint(corpus, fingerprint)
        keys = self._text_shas(corpus, ids) if corpus is not None else ids
        vectors = search.vectors(self.feature_store, fp, keys)            # (N, H), the warm matrix's rows
        if format == "torch":
            import torch
            return torch.from_numpy(vectors)
        return vectors

    def similar(self, corpus: str, text: str | None = None, *, vector=None, k: int = 5,
                fingerprint: str | None = None, exact: bool = False, device: str = "auto") -> list[Hit]:
        """The k documents of the corpus nearest a query `text` (encoded as the corpus was) or `vector` (H,).

        Cosine over the cached vectors; one hit per distinct text, best first. Through the
        table's HNSW index when `embcache index bert_features` built one (scores exact, recall
        approximate); exact=True (or no index) scans every vector.
        """
        if (text is None) == (vector is None):
            raise ValueError("give exactly one of text= or vector=")
        _check_k(k)
        fp = self._features_fingerprint(corpus, fingerprint)
        query = self.encode([text], fingerprint=fp, device=device)[0] if text is not None else self._check_vector(vector, fp)
        return search.similar_documents(self.feature_store, corpus, fp, query, k, exact=exact)

    def encode(self, texts: str | Sequence[str], corpus: str | None = None, *,
               fingerprint: str | None = None, device: str = "auto") -> np.ndarray:
        """(N, H) float32 vectors of new texts, computed exactly as the corpus's bert_features were
        (same model, tokenizer settings, pooling, dtype, precision): comparable with the stored vectors.
        device: where torch runs (auto: CUDA when torch sees a GPU, else cpu; cuda:N; mps)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        from .stages.bert import encode_query
        fp = self._features_fingerprint(corpus, fingerprint)
        return encode_query(self.feature_store.open("bert_features", fp).saved_spec()["meta"], texts, device)

    # -- word vectors ----------------------------------------------------
    def neighbours(self, word: str, k: int = 10, *, corpus: str | None = None,
                   fingerprint: str | None = None) -> list[tuple[str, float]]:
        """The k words nearest `word` by cosine over trained word2vec vectors: [(word, score)], best first.

        Which vectors: `fingerprint`, else those trained for `corpus`, else the current ones.
        A word missing as given is tried lowercased; UnknownKeys (a KeyError) if neither is known.
        """
        _check_k(k)
        fp = self._linked_or_current("word_vectors", corpus, fingerprint)
        return search.neighbours(self.feature_store, fp, word, k)

    neighbors = neighbours

    # -- helpers ---------------------------------------------------------
    def _check_corpus(self, corpus: str) -> None:
        search.corpus_manifest(self.feature_store, corpus)          # NotFound names the corpora there are

    def _linked_or_current(self, table: str, corpus: str | None, fingerprint: str | None) -> str:
        """`fingerprint` (a prefix of 8+ hex digits), else the one linked to `corpus`, else the current one."""
        if corpus is not None:
            self._check_corpus(corpus)
        return search.fingerprint_for(self.feature_store, table, corpus, fingerprint)

    def _features_fingerprint(self, corpus: str | None, fingerprint: str | None) -> str:
        return self._linked_or_current("bert_features", corpus, fingerprint)

    def _text_shas(self, corpus: str, doc_ids: list[str]) -> list[str]:
        self._check_corpus(corpus)
        return search.text_shas(self.feature_store, corpus, doc_ids)

    def _check_vector(self, vector, fingerprint: str) -> np.ndarray:
        query = np.asarray(vector, dtype=np.float32).reshape(-1)                      # (H,)
        schema = self.feature_store.open("bert_features", fingerprint).manifest().arrow_schema()
        width = schema.field("vector").type.list_size if schema is not None else len(query)
        if len(query) != width:
            raise ValueError(f"vector has {len(query)} values; bert_features@{fingerprint[:12]} has {width}")
        return query


def _check_k(k: int) -> None:
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
