"""`embcache.open(root)`: the public read facade — features, lookups, nearest neighbours, SQL, encoding.

    store = embcache.open("./embcache-store")
    f = store.features("bbc")                              # vectors (N, H), labels, splits, in snapshot order
    store.lookup(["business/001.txt"], corpus="bbc")       # (1, H)
    store.similar("bbc", text="interest rates rise", k=5)  # [Hit, …]
    store.similar("bbc", text=["rates rise", "cup final"], where="split = 'test'")   # [[Hit, …], [Hit, …]]
    store.features("bbc", snapshot="000003")               # as of an earlier snapshot

`Store` only reads. It is not `embcache.storage.FeatureStore`, the storage layer's writer
(tables under fingerprints, commits, snapshots) that stages use and that a Store reads
through (`store.feature_store`). A Store owns every cache a reader keeps (embcache.search.
ReadPath): the CLI's query commands, `embcache serve` and this API all read through one,
so they answer alike and a damaged file behaves alike on each.

Which bert_features a corpus means: the fingerprint its last featurize run linked to it
(`embcache featurize bert`, `embcache run`), else the table's current one; pass
`fingerprint=` (8+ hex digits) for another.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, overload

import numpy as np
import pyarrow as pa

from .features import Features, Format, convert, read_features
from .search import ReadPath
from .storage import FeatureStore, TableInfo, default_root

if TYPE_CHECKING:
    import datasets
    import pandas
    import torch

FLOAT32_MAX = float(np.finfo(np.float32).max)


def open(root: str | os.PathLike | None = None, *, recheck_s: float = 0.0) -> Store:    # noqa: A001
    """Open an existing store: a directory or a URL (s3://bucket/prefix, memory://name).

    root: default $EMBCACHE_STORE, else ./embcache-store (as the CLI). A missing store is
    an error (NotFound): reading never creates one; `embcache.run` or the CLI do.
    recheck_s: how stale the Store may be: the files a commit replaces are looked at
    again at most this often (0: on every call; `embcache serve` uses 0.05).
    """
    return Store(FeatureStore(root if root is not None else default_root()).require(), recheck_s=recheck_s)


class Store:
    """Read access to one store, warm: each table's vectors loaded once per shard set, each
    snapshot read once, the query encoder loaded once, files checked once (`ReadPath`)."""

    def __init__(self, feature_store: FeatureStore, recheck_s: float = 0.0):
        self.feature_store = feature_store            # the storage layer's writer underneath (embcache.storage)
        self.reads = ReadPath(feature_store, recheck_s)

    @property
    def root(self) -> str:
        return self.feature_store.root

    def __repr__(self) -> str:
        return f"embcache.Store({self.root!r})"

    # -- what is there ---------------------------------------------------
    def corpora(self) -> list[str]:
        """Names of the corpora with at least one snapshot."""
        return self.feature_store.corpora()

    def snapshots(self, corpus: str) -> list[str]:
        """The ids of the corpus's kept snapshots, oldest first (the last is the current one)."""
        return [s.id for s in self.reads.corpus_manifest(corpus).snapshots]

    def tables(self) -> list[TableInfo]:
        """Every committed table under every fingerprint: name, fingerprint, current, rows, shards, bytes, …"""
        return self.feature_store.tables()

    def sql(self, query: str, limits=None) -> pa.Table:
        """One read-only SELECT over the store (views: each table by name, corpora.<name>,
        corpora."<name>@<snapshot>", embcache_tables, embcache_snapshots); limits: a
        storage.sql.QueryLimits (default: 60 s, 2 GB, 1,000,000 rows)."""
        from .storage.query import sql
        return sql(self.feature_store, query, limits, self.reads.verified)

    # -- document vectors ------------------------------------------------
    @overload
    def features(self, corpus: str, format: Literal["numpy", "torch"] = ..., *, fingerprint: str | None = ...,
                 snapshot: str | None = ..., split_seed: int = ...) -> Features: ...
    @overload
    def features(self, corpus: str, format: Literal["arrow"], *, fingerprint: str | None = ...,
                 snapshot: str | None = ..., split_seed: int = ...) -> pa.Table: ...
    @overload
    def features(self, corpus: str, format: Literal["dataset"], *, fingerprint: str | None = ...,
                 snapshot: str | None = ..., split_seed: int = ...) -> datasets.Dataset: ...
    @overload
    def features(self, corpus: str, format: Literal["pandas"], *, fingerprint: str | None = ...,
                 snapshot: str | None = ..., split_seed: int = ..., wide: bool = ...) -> pandas.DataFrame: ...

    def features(self, corpus: str, format: Format = "numpy", *, fingerprint: str | None = None,
                 snapshot: str | None = None, split_seed: int = 0, wide: bool = False):
        """A snapshot's documents with their BERT vectors, labels and splits, in snapshot order.

        format: "numpy" (a Features), "torch" (a Features holding tensors), "arrow" (a pyarrow
        Table), "dataset" (a datasets.Dataset), "pandas" (a DataFrame): columns doc_id,
        text_sha, label, label_id, split, vector. With pandas, `vector` holds one (H,) array
        per row; wide=True gives H float columns vector_0 … vector_{H-1} instead.
        snapshot: an id `store.snapshots(corpus)` lists (default: the current one): the
        documents, labels and splits as of then. split_seed: the seed of the 80/10/10 split of
        a corpus without a split column (the heads' default is 0). NotFound if a document has
        no vector yet.
        """
        if wide and format != "pandas":
            raise ValueError("wide=True applies to format='pandas' only")
        fp = self._features_fingerprint(corpus, fingerprint)
        if snapshot is not None:
            self.reads.snapshot_view(corpus, snapshot)           # NotFound naming the kept snapshots
        features = read_features(self.feature_store, corpus, fp, split_seed, snapshot, self.reads.matrices)
        return convert(features, format, wide=wide)

    @overload
    def lookup(self, ids: str | Sequence[str], corpus: str | None = ..., *, table: str = ..., column: str = ...,
               fingerprint: str | None = ..., snapshot: str | None = ...,
               format: Literal["numpy"] = ...) -> np.ndarray: ...
    @overload
    def lookup(self, ids: str | Sequence[str], corpus: str | None = ..., *, table: str = ..., column: str = ...,
               fingerprint: str | None = ..., snapshot: str | None = ...,
               format: Literal["torch"]) -> torch.Tensor: ...

    def lookup(self, ids, corpus=None, *, table="bert_features", column="vector", fingerprint=None,
               snapshot=None, format="numpy"):
        """Vectors for `ids`, in the order given: (N, H) float32 (a tensor with format="torch").

        With `corpus`, ids are doc_ids of its current snapshot (or `snapshot`); without, they
        are the table's keys (text_sha for bert_features). Ids the store does not have raise
        UnknownKeys (a KeyError) naming them. table/column: any table's vector column.
        """
        if format not in ("numpy", "torch"):
            raise ValueError(f"format must be numpy or torch, got {format!r}")
        ids = [ids] if isinstance(ids, str) else list(ids)
        fp = self.reads.fingerprint_for(table, corpus, fingerprint)
        keys = self.reads.text_shas(corpus, ids, snapshot) if corpus is not None else ids
        vectors = self.reads.vectors(table, fp, keys, column)                 # (N, H)
        if format == "torch":
            import torch
            return torch.from_numpy(vectors)
        return vectors

    def rows(self, table: str, ids: str | Sequence[str], corpus: str | None = None, *,
             fingerprint: str | None = None, snapshot: str | None = None,
             columns: Sequence[str] | None = None) -> pa.Table:
        """Whole rows of any table for `ids` (doc_ids with `corpus`, else keys), in the order given,
        read from the shards that hold them (checked); with `corpus`, a doc_id column is added."""
        ids = [ids] if isinstance(ids, str) else list(ids)
        fp = self.reads.fingerprint_for(table, corpus, fingerprint)
        keys = self.reads.text_shas(corpus, ids, snapshot) if corpus is not None else ids
        found = self.reads.table(table, fp).lookup(keys, columns)     # NotFound names absent keys
        return found.append_column("doc_id", pa.array(ids, pa.string())) if corpus is not None else found

    def similar(self, corpus: str, text: str | Sequence[str] | None = None, *, vector=None, k: int = 5,
                fingerprint: str | None = None, exact: bool = False, where: str | None = None,
                label: str | Sequence[str] | None = None, snapshot: str | None = None, device: str = "auto"):
        """The k documents of the corpus nearest a query `text` (encoded as the corpus was) or `vector`.

        One query (a str, or a (H,) vector): a list of Hits, best first. A batch (a list of
        texts, or an (N, H) array): one such list per query, in order. Cosine over the cached
        vectors; one hit per distinct text. Through the table's vector index when `embcache
        index bert_features` built one (scores exact, recall approximate); exact=True (or no
        index) scans every vector.

        Filters (searched exactly, over the matching documents only): label= one label or a
        list of them; where= a SQL predicate over the snapshot's columns (doc_id, label,
        split, source, …), e.g. "split = 'test' AND label <> 'tech'". snapshot: search the
        documents of a kept snapshot instead of the current one. device: where a text query is
        encoded (see `encode`).
        """
        if (text is None) == (vector is None):
            raise ValueError("give exactly one of text= or vector=")
        _check_k(k)
        fp = self._features_fingerprint(corpus, fingerprint)
        batch = not isinstance(text, str) if text is not None else np.ndim(vector) == 2
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            queries = self.reads.encoder(fp, device)(check_texts(texts))                      # (Q, H)
        else:
            queries = check_vectors(vector)
        only = self._filter(corpus, snapshot, where, label)
        hits = self.reads.search(corpus, fp, queries, k, exact=exact, snapshot=snapshot, only=only)
        return hits if batch else hits[0]

    def encode(self, texts: str | Sequence[str], corpus: str | None = None, *,
               fingerprint: str | None = None, device: str = "auto") -> np.ndarray:
        """(N, H) float32 vectors of new texts, computed exactly as the corpus's bert_features were
        (same model, tokenizer settings, pooling, dtype, precision): comparable with the stored vectors.
        device: "auto" uses the store's ONNX export on the CPU when onnxruntime is installed and the
        table is fp32 (no torch import: queries are a few texts), else torch as `encode_device`
        resolves it (CUDA when torch sees a GPU); "cpu", "cuda", "cuda:N", "mps": torch there."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self.reads.encoder(self._features_fingerprint(corpus, fingerprint), device)(check_texts(texts))

    # -- word vectors ----------------------------------------------------
    def neighbours(self, word: str, k: int = 10, *, corpus: str | None = None,
                   fingerprint: str | None = None) -> list[tuple[str, float]]:
        """The k words nearest `word` by cosine over trained word2vec vectors: [(word, score)], best first.

        Which vectors: `fingerprint`, else those trained for `corpus`, else the current ones.
        A word missing as given is tried lowercased; UnknownKeys (a KeyError) if neither is known.
        """
        _check_k(k)
        if not isinstance(word, str):
            raise ValueError(f"word must be a str, got {type(word).__name__}")
        return self.reads.neighbours(self.reads.fingerprint_for("word_vectors", corpus, fingerprint), word, k)

    neighbors = neighbours            # the American spelling, as an alias

    # -- helpers ---------------------------------------------------------
    def _features_fingerprint(self, corpus: str | None, fingerprint: str | None) -> str:
        return self.reads.fingerprint_for("bert_features", corpus, fingerprint)

    def _filter(self, corpus: str, snapshot: str | None, where: str | None, label) -> np.ndarray | None:
        """Positions of the snapshot's documents passing `label` and `where`; None: no filter."""
        if where is None and label is None:
            return None
        docs = self.reads.snapshot_view(corpus, snapshot).docs
        keep = np.ones(docs.num_rows, bool)
        if label is not None:
            labels = [label] if isinstance(label, str) else list(label)
            have = docs["label"].to_pylist() if "label" in docs.column_names else [None] * docs.num_rows
            keep &= np.isin(np.array(have, dtype=object), np.array(labels, dtype=object))
        if where is not None:
            from .storage.sql import select_rows
            passed = np.zeros(docs.num_rows, bool)
            passed[select_rows(docs, where)] = True
            keep &= passed
        return np.flatnonzero(keep)


def check_texts(texts: list) -> list[str]:
    """Query texts as the encoder takes them: str, encodable as UTF-8 (no lone surrogates)."""
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ValueError(f"text {i}: expected a str, got {type(t).__name__}")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"text {i}: not valid Unicode ({e.reason} at character {e.start})") from None
    if not texts:
        raise ValueError("no query text given")
    return texts


def check_vectors(vector) -> np.ndarray:
    """(Q, H) float32 query vectors from a (H,) vector or a (Q, H) batch: finite, within float32."""
    try:
        q = np.asarray(vector, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"vector must be numbers: {e}") from None
    if q.ndim not in (1, 2) or q.size == 0:
        raise ValueError(f"vector must be one (H,) vector or an (N, H) batch, got shape {q.shape}")
    if not np.isfinite(q).all() or np.abs(q).max() > FLOAT32_MAX:
        raise ValueError("vector values must be finite float32 numbers (no NaN, no infinity, none beyond ±3.4e38)")
    return np.atleast_2d(q.astype(np.float32))


def _check_k(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
