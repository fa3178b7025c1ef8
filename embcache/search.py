"""The warm read path of the public API and `embcache serve`: lookups and nearest neighbours.

    hits = similar_documents(store, "bbc", fingerprint, query_vector, k=5)
    hits[0].doc_id, hits[0].label, hits[0].score, hits[0].text

Vectors come from each table's memory-mapped matrix and, where one was built, its HNSW
index (embcache.storage.matrix / .ann); a corpus snapshot is read (and checked) once per
process and kept with its doc_id → text_sha map and the matrix rows it covers. Nothing
here imports torch or gensim: encoding a query text is the caller's (stages.bert).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .errors import CorruptShard, NotFound, UnknownKeys
from .storage import FeatureStore, Table
from .storage.ann import search
from .storage.fs import check_name
from .storage.matrix import WARM, VectorMatrix, as_matrix
from .storage.query import lookup_column
from .storage.verified import stamp


@dataclass(frozen=True)
class Hit:
    """One document found by `Store.similar`, best first."""
    doc_id: str              # the first document of the snapshot with this text
    label: str | None
    score: float             # cosine similarity to the query, in [-1, 1]
    text: str
    text_sha: str


@dataclass
class SnapshotView:
    """A corpus snapshot as the query path needs it; snapshots are immutable, so kept per process."""
    corpus: str
    snapshot: str
    docs: pa.Table                           # doc_id, text_sha, label, …
    text_sha_of: dict[str, str]              # doc_id -> text_sha
    first: dict[str, dict]                   # text_sha -> the first document with it (doc_id, label)
    rows: dict[str, np.ndarray]              # matrix setkey -> the matrix rows of its texts


class _Snapshots:
    def __init__(self, max_entries: int = 32):
        self.max_entries = max_entries
        self._cache: OrderedDict[tuple, SnapshotView] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, store: FeatureStore, corpus: str) -> SnapshotView:
        c = store.corpus(corpus)
        snap = corpus_manifest(store, corpus).current
        if snap is None:
            raise NotFound(c.dir, f"corpus {corpus!r} has no snapshot yet (run ingest first)")
        key = (store.root, corpus, snap.sha256)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        docs = c.read(snap.id)
        cols = [n for n in ("doc_id", "text_sha", "label") if n in docs.column_names]
        first: dict[str, dict] = {}
        for row in docs.select(cols).to_pylist():
            first.setdefault(row["text_sha"], row)
        view = SnapshotView(corpus, snap.id, docs, dict(zip(docs["doc_id"].to_pylist(), docs["text_sha"].to_pylist())),
                            first, {})
        with self._lock:
            self._cache[key] = view
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        return view


SNAPSHOTS = _Snapshots()
_FILES: dict[str, tuple] = {}       # path -> (stat, parsed, when checked): small JSON files
RECHECK_S = [0.0]                   # a file's stat is looked at again after this long (0: every call)


def set_recheck(seconds: float) -> None:
    """How stale a long-running reader may be: pointer, manifest and matrix stats re-checked this often."""
    RECHECK_S[0] = seconds
    WARM.recheck_s = seconds


def _cached(store: FeatureStore, path: str, load):
    """`load()` of a small file, redone only when its stat changes (commits replace it: a new inode).

    The stat is re-checked at most every RECHECK_S seconds (set_recheck): a reader sees a
    commit that late. Object stores (no stat) load every time.
    """
    hit = _FILES.get(path)
    if hit is not None and time.monotonic() - hit[2] < RECHECK_S[0]:
        return hit[1]
    try:
        now = stamp(store.fs, path)
    except NotFound:
        now = None
    if now is not None and hit is not None and hit[0] == now:
        _FILES[path] = (now, hit[1], time.monotonic())
        return hit[1]
    value = load()
    if now is not None:
        _FILES[path] = (now, value, time.monotonic())
    return value


def current_fingerprint(store: FeatureStore, table: str) -> str:
    """The table's current fingerprint (store.resolve), its pointer file re-read only when replaced."""
    path = store.fs.path("tables", check_name("table", table), "current.json")
    return _cached(store, path, lambda: store.resolve(table))


def corpus_manifest(store: FeatureStore, corpus: str):
    """The corpus's manifest (snapshots, links), re-read only when replaced; NotFound for no such corpus."""
    c = store.corpus(corpus)
    if not c.exists():
        raise NotFound(store.root, f"no corpus {corpus!r} in this store (corpora: "
                                   f"{', '.join(store.corpora()) or 'none'})")
    return _cached(store, c.manifest_path, c.manifest)


def fingerprint_for(store: FeatureStore, table: str, corpus: str | None = None, fingerprint: str | None = None) -> str:
    """`fingerprint` (a prefix of 8+ hex digits), else the one last linked to `corpus`, else the current one.

    The pointer and manifest files are re-read only when a commit replaced them (_cached).
    """
    if fingerprint is not None:
        return store.resolve(table, fingerprint)
    if corpus is not None:
        linked = corpus_manifest(store, corpus).links.get(table)
        if linked:
            return linked[-1]
    return current_fingerprint(store, table)


def snapshot_view(store: FeatureStore, corpus: str) -> SnapshotView:
    return SNAPSHOTS.get(store, corpus)


def matrix(store: FeatureStore, table: str, fingerprint: str | None, column: str = "vector") -> VectorMatrix:
    """The warm matrix of table@fingerprint (default: current), without parsing an unchanged manifest."""
    fp = current_fingerprint(store, table) if fingerprint is None else store.resolve(table, fingerprint) \
        if len(fingerprint) < 64 else fingerprint
    t = Table(store.fs, table, fp)
    if not t.exists():
        raise NotFound(t.dir, f"table {table!r} has no committed manifest under {fp[:12]}…")
    return WARM.get(t, column)


def text_shas(store: FeatureStore, corpus: str, doc_ids: list[str]) -> list[str]:
    """The text hashes of a corpus's doc_ids (current snapshot); UnknownKeys names absent ones."""
    index = snapshot_view(store, corpus).text_sha_of
    unknown = [d for d in doc_ids if d not in index]
    if unknown:
        raise UnknownKeys(corpus, unknown, "doc_id(s) not in the current snapshot")
    return [index[d] for d in doc_ids]


def vectors(store: FeatureStore, fingerprint: str, keys: list[str], table: str = "bert_features") -> np.ndarray:
    """(N, H) float32 copies of the vectors of `keys` (text_sha); UnknownKeys names absent ones."""
    try:
        m = matrix(store, table, fingerprint)
    except CorruptShard:          # a damaged shard blocks the matrix: read only the shards holding `keys`
        t = store.open(table, fingerprint)
        absent = t.missing(pa.array(keys, pa.string()))
        if len(absent):
            raise UnknownKeys(table, absent.to_pylist(), f"text_sha(s) not in {table}") from None
        return np.array(as_matrix(t.lookup(keys, ["vector"])["vector"]))
    rows, found = m.find(keys)
    if not found.all():
        raise UnknownKeys(table, [k for k, ok in zip(keys, found) if not ok], f"text_sha(s) not in {table}")
    return np.array(m.vectors[rows])


def similar_documents(store: FeatureStore, corpus: str, fingerprint: str, query: np.ndarray,
                      k: int = 5, exact: bool = False) -> list[Hit]:
    """The k documents of the corpus's current snapshot nearest `query` (H,), distinct texts, best first.

    Indexed where the table has an HNSW index (exact scores, approximate recall), else
    or with exact=True an exact scan of the snapshot's rows of the matrix.
    """
    view = snapshot_view(store, corpus)
    m = matrix(store, "bert_features", fingerprint)
    t = Table(store.fs, "bert_features", m.fingerprint)
    rows = view.rows.get(m.setkey)
    if rows is None:
        rows = view.rows[m.setkey] = np.unique(m.rows_of(list(view.first), missing="skip"))
    idx, scores, _ = search(t, m, np.asarray(query, np.float32).reshape(1, -1), k,
                            None if len(rows) == len(m) else rows, exact=exact)
    keys = m.key_of(idx[0])
    documents = corpus_manifest(store, corpus).links.get("documents")
    if not documents:
        raise NotFound(store.corpus(corpus).dir, f"corpus {corpus!r} has no 'documents' table linked")
    texts = lookup_column(store, "documents", keys, "text", documents[-1])
    return [Hit(doc_id=view.first[key]["doc_id"], label=view.first[key].get("label"), score=float(score),
                text=text or "", text_sha=key)
            for key, score, text in zip(keys, scores[0], texts)]


def neighbours(store: FeatureStore, fingerprint: str, word: str, k: int = 10) -> list[tuple[str, float]]:
    """The k words nearest `word` by cosine over word_vectors (the word itself left out), best first.

    A word missing as given is tried lowercased; UnknownKeys if neither is in the vocabulary.
    """
    m = matrix(store, "word_vectors", fingerprint)
    for candidate in dict.fromkeys([word, word.lower()]):
        rows, _ = m.find([candidate])
        if len(rows):
            idx, scores = m.topk(m.vectors[rows], k + 1)
            return [(w, float(s)) for w, s, r in zip(m.key_of(idx[0]), scores[0], idx[0]) if r != rows[0]][:k]
    raise UnknownKeys("word_vectors", [word], "not in the vocabulary")
