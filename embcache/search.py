"""The warm read path behind `embcache.Store`: every cache a reader keeps, held by one object.

    reads = ReadPath(FeatureStore(root))
    reads.search("bbc", fingerprint, queries, k=5)    # [[Hit, …], …]: one list per (Q, H) query row

One ReadPath per Store, and the CLI, the server and the Python API all read through a
Store, so a damaged file behaves the same on every path (DESIGN.md, "One read path"):
- a committed shard or snapshot that fails its check: CorruptShard, an error (`embcache repair`);
  a lookup still answers ids held by the other shards;
- a derived file (vector matrix, vector index, ONNX export) that fails its check, or that
  changes on disk after it was loaded: rebuilt, searched exactly, or the query encoded
  through torch; the answer is the same;
- a client's mistake (an unknown corpus, table, column, snapshot, id or word; a NaN
  vector): NotFound, InvalidName, UnknownKeys or ValueError, never "damage".

What it keeps: each table's matrix (storage/matrix.py WarmMatrices: this process's own
checked copy), each snapshot it read with its doc_id → text_sha map, the small JSON files
a commit replaces (re-read when their stat changes, looked at most every `recheck_s`),
documents' texts (ColumnLookup), which files were verified (SQL views) and one query
encoder per bert_features fingerprint. Nothing here is process-wide: two Stores share nothing.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .errors import CorruptShard, NotFound, StoreError, UnknownKeys
from .storage import FeatureStore, Table
from .storage import ann
from .storage.fs import check_name
from .storage.matrix import VectorMatrix, WarmMatrices, as_matrix
from .storage.query import ColumnLookup
from .storage.verified import Verified, stamp


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
    """A corpus snapshot as the query path needs it; snapshots are immutable, so kept."""
    corpus: str
    snapshot: str
    docs: pa.Table                           # doc_id, text_sha, label, …
    text_sha_of: dict[str, str]              # doc_id -> text_sha
    first: dict[str, dict]                   # text_sha -> the first document with it (doc_id, label)
    rows: dict[str, np.ndarray]              # matrix setkey -> the matrix rows of its texts


class ReadPath:
    """The caches of one `embcache.Store` and the reads that use them (see the module docstring)."""

    def __init__(self, store: FeatureStore, recheck_s: float = 0.0, max_snapshots: int = 32):
        self.store = store
        self.recheck_s = recheck_s           # how stale a long-running reader may be (seconds)
        self.verified = Verified()           # files checked against their manifests (SQL views)
        self.matrices = WarmMatrices(recheck_s)
        self.indexes = ann.WarmIndexes()     # each table's vector index, checked once
        self.columns = ColumnLookup()        # documents' texts by key
        self.max_snapshots = max_snapshots
        self._snapshots: OrderedDict[tuple, SnapshotView] = OrderedDict()
        self._files: dict[str, tuple] = {}   # path -> (stat, parsed, when checked)
        self._encoders: dict[str, object] = {}
        self._lock = threading.Lock()

    # -- small files a commit replaces -------------------------------------------------------
    def _cached(self, path: str, load):
        """`load()` of a small file, redone only when its stat changes (commits replace it: a new
        inode), looked at most every recheck_s. Object stores (no stat) load every time."""
        with self._lock:
            hit = self._files.get(path)
        if hit is not None and time.monotonic() - hit[2] < self.recheck_s:
            return hit[1]
        try:
            now = stamp(self.store.fs, path)
        except NotFound:
            now = None
        if now is not None and hit is not None and hit[0] == now:
            value = hit[1]
        else:
            value = load()
        if now is not None:
            with self._lock:
                self._files[path] = (now, value, time.monotonic())
        return value

    def current_fingerprint(self, table: str) -> str:
        """The table's current fingerprint, its pointer file re-read only when replaced."""
        path = self.store.fs.path("tables", check_name("table", table), "current.json")
        return self._cached(path, lambda: self.store.resolve(table))

    def corpus_manifest(self, corpus: str):
        """The corpus's manifest (snapshots, links); NotFound naming the corpora there are."""
        c = self.store.corpus(corpus)
        if not c.exists():
            raise NotFound(self.store.root, f"no corpus {corpus!r} in this store (corpora: "
                                            f"{', '.join(self.store.corpora()) or 'none'})")
        return self._cached(c.manifest_path, c.manifest)

    def fingerprint_for(self, table: str, corpus: str | None = None, fingerprint: str | None = None) -> str:
        """`fingerprint` (a prefix of 8+ hex digits), else the one last linked to `corpus`, else the current one."""
        if corpus is not None:
            linked = self.corpus_manifest(corpus).links.get(table)
            if fingerprint is None and linked:
                return linked[-1]
        if fingerprint is not None:
            return self.store.resolve(check_name("table", table), fingerprint)
        return self.current_fingerprint(table)

    # -- snapshots ---------------------------------------------------------------------------
    def snapshot_view(self, corpus: str, snapshot: str | None = None) -> SnapshotView:
        """A kept snapshot of the corpus (its current one by default), read and checked once."""
        m = self.corpus_manifest(corpus)
        snap = m.current if snapshot is None else next((s for s in m.snapshots if s.id == snapshot), None)
        if snap is None:
            if snapshot is None:
                raise NotFound(self.store.corpus(corpus).dir, f"corpus {corpus!r} has no snapshot yet "
                                                              "(run ingest first)")
            raise NotFound(self.store.corpus(corpus).dir, f"corpus {corpus!r} has no snapshot {snapshot!r} "
                           f"(kept: {', '.join(s.id for s in m.snapshots)})")
        key = (corpus, snap.id, snap.sha256)
        with self._lock:
            if key in self._snapshots:
                self._snapshots.move_to_end(key)
                return self._snapshots[key]
        docs = self.store.corpus(corpus).read(snap.id)                       # checked against the manifest
        cols = [n for n in ("doc_id", "text_sha", "label") if n in docs.column_names]
        first: dict[str, dict] = {}
        for row in docs.select(cols).to_pylist():
            first.setdefault(row["text_sha"], row)
        view = SnapshotView(corpus, snap.id, docs,
                            dict(zip(docs["doc_id"].to_pylist(), docs["text_sha"].to_pylist())), first, {})
        with self._lock:
            self._snapshots[key] = view
            while len(self._snapshots) > self.max_snapshots:
                self._snapshots.popitem(last=False)
        return view

    def text_shas(self, corpus: str, doc_ids: list[str], snapshot: str | None = None) -> list[str]:
        """The text hashes of a snapshot's doc_ids; UnknownKeys names absent ones."""
        view = self.snapshot_view(corpus, snapshot)
        unknown = [d for d in doc_ids if d not in view.text_sha_of]
        if unknown:
            raise UnknownKeys(corpus, unknown, f"doc_id(s) not in snapshot {view.snapshot}")
        return [view.text_sha_of[d] for d in doc_ids]

    # -- vectors -----------------------------------------------------------------------------
    def table(self, table: str, fingerprint: str) -> Table:
        t = Table(self.store.fs, check_name("table", table), fingerprint)
        if not t.exists():
            raise NotFound(t.dir, f"table {table!r} has no committed manifest under {fingerprint[:12]}…")
        return t

    def matrix(self, table: str, fingerprint: str, column: str = "vector") -> VectorMatrix:
        """The warm matrix of table@fingerprint (a full fingerprint): loaded once per shard set."""
        return self.matrices.get(self.table(table, fingerprint), column)

    def vectors(self, table: str, fingerprint: str, keys: list[str], column: str = "vector") -> np.ndarray:
        """(N, D) float32 copies of the vectors of `keys`; UnknownKeys names absent ones.

        A damaged committed shard blocks the matrix: then only the shards holding `keys` are
        read, so ids in healthy shards are still answered (and an id in the damaged one is
        CorruptShard)."""
        try:
            m = self.matrix(table, fingerprint, column)
        except CorruptShard as damage:
            t = self.store.open(table, fingerprint)
            absent = t.missing(pa.array(keys, pa.string()))
            if len(absent):      # not in any shard's key column; the damage is said too, it may be why
                raise UnknownKeys(table, absent.to_pylist(), f"key(s) not in {table}, whose shard {damage.path} "
                                                             f"is damaged ({damage.reason}; embcache repair)") from None
            return np.array(as_matrix(t.lookup(keys, [column])[column]))
        rows, found = m.find(keys)
        if not found.all():
            raise UnknownKeys(table, [k for k, ok in zip(keys, found) if not ok], f"key(s) not in {table}")
        return np.array(m.vectors[rows])

    # -- search ------------------------------------------------------------------------------
    def corpus_rows(self, view: SnapshotView, m: VectorMatrix) -> np.ndarray:
        """The matrix rows of the snapshot's distinct texts (kept with the snapshot)."""
        rows = view.rows.get(m.setkey)
        if rows is None:
            rows = view.rows[m.setkey] = np.unique(m.rows_of(list(view.first), missing="skip"))
        return rows

    def search(self, corpus: str, fingerprint: str, queries: np.ndarray, k: int, exact: bool = False,
               snapshot: str | None = None, only: np.ndarray | None = None) -> list[list[Hit]]:
        """The k documents of a snapshot nearest each query (Q, H): distinct texts, best first.

        only: positions of the snapshot's rows to search (a filter): searched exactly. Else
        through the table's vector index where one was built (exact scores, approximate recall);
        a damaged or unreadable index is searched around, exactly.
        """
        view = self.snapshot_view(corpus, snapshot)
        m = self.matrix("bert_features", fingerprint)
        t = Table(self.store.fs, "bert_features", m.fingerprint)
        q = m.normalized(queries)                                  # ValueError: width, NaN, inf
        first = view.first
        if only is not None:
            kept = view.docs.take(pa.array(only, pa.int64()))
            first = {}
            for row in kept.select([c for c in ("doc_id", "text_sha", "label") if c in kept.column_names]).to_pylist():
                first.setdefault(row["text_sha"], row)                   # the first document that passed
            rows = np.unique(m.rows_of(list(first), missing="skip"))
            idx, scores = m.topk(q, k, rows) if len(rows) else (np.zeros((len(q), 0), np.int64),
                                                                  np.zeros((len(q), 0), np.float32))
        else:
            rows = self.corpus_rows(view, m)
            restrict = None if len(rows) == len(m) else rows
            try:
                idx, scores, _ = ann.search(t, m, q, k, restrict, exact=exact, indexes=self.indexes)
            except (StoreError, RuntimeError, ValueError, KeyError, TypeError):
                idx, scores = m.topk(q, k, restrict)              # the index is a derived file: search exactly
        texts = self.texts(corpus, {key for r in idx for key in m.key_of(r)})
        return [[Hit(doc_id=first[key]["doc_id"], label=first[key].get("label"), score=float(s),
                     text=texts.get(key) or "", text_sha=key)
                 for key, s in zip(m.key_of(r), row_scores)]
                for r, row_scores in zip(idx, scores)]

    def texts(self, corpus: str, keys: set[str]) -> dict[str, str | None]:
        """Documents' texts by text_sha, from the corpus's linked documents table."""
        documents = self.corpus_manifest(corpus).links.get("documents")
        if not documents:
            raise NotFound(self.store.corpus(corpus).dir, f"corpus {corpus!r} has no 'documents' table linked")
        keys = sorted(keys)
        values = self.columns.get(self.table("documents", documents[-1]), keys, "text")
        return dict(zip(keys, values))

    def neighbours(self, fingerprint: str, word: str, k: int = 10) -> list[tuple[str, float]]:
        """The k words nearest `word` by cosine over word_vectors (the word itself left out), best first.

        A word missing as given is tried lowercased; UnknownKeys if neither is in the vocabulary.
        """
        m = self.matrix("word_vectors", fingerprint)
        for candidate in dict.fromkeys([word, word.lower()]):
            rows, _ = m.find([candidate])
            if len(rows):
                idx, scores = m.topk(m.vectors[rows], k + 1)
                return [(w, float(s)) for w, s, r in zip(m.key_of(idx[0]), scores[0], idx[0]) if r != rows[0]][:k]
        raise UnknownKeys("word_vectors", [word], "not in the vocabulary")

    # -- the query encoder -------------------------------------------------------------------
    def encoder(self, fingerprint: str, device: str = "auto"):
        """texts -> (N, H) float32, exactly as bert_features@fingerprint was built; loaded once.

        device "auto": the store's ONNX export of the model with `tokenizers` and ONNX Runtime
        when they are installed and reproduce the table's settings (pipeline/query_encoder.py:
        no torch, no transformers); else the model through torch (stages.bert.encode_query),
        on the device torch resolves. Any other device: torch there.
        """
        with self._lock:
            encoder = self._encoders.get((fingerprint, device))
        if encoder is None:
            spec = self.table("bert_features", fingerprint).saved_spec()
            encoder = (self._onnx_encoder(spec) if device == "auto" else None) or _torch_encoder(spec["meta"], device)
            with self._lock:
                self._encoders[(fingerprint, device)] = encoder
        return encoder

    def _onnx_encoder(self, spec: dict):
        from .pipeline.configs import EncodeConfig, TokenizeConfig
        from .pipeline.query_encoder import OnnxQueryEncoder, load_export, load_tokenizer_json, \
            onnx_runtime_available, quantized_export
        meta, digests = spec.get("meta") or {}, (spec.get("spec") or {}).get("digests")
        if not (digests and self.store.fs.local and onnx_runtime_available()):
            return None
        try:
            tok = TokenizeConfig(**meta["tokenize"])
            enc = EncodeConfig(**{"normalize": "none", **meta["encode"]})
        except (KeyError, TypeError, ValueError, StoreError):
            return None
        if not OnnxQueryEncoder.usable(enc):
            return None
        # the export stages/bert.py (cached_encoder, _cached_onnx) keeps for these weights: the fused
        #   graph (fp32 BERTs, pipeline/backends.py), else the plain export; int8-channel: the
        #   plain export's quantized copy, the file the table was encoded with
        from .pipeline.backends import FUSED_VERSION
        key = hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()[:32]
        plain = f"{self.store.root}/derived/onnx/{key}.onnx"
        candidates = (plain,) if enc.quantize == "int8-channel" else \
            (f"{self.store.root}/derived/onnx/{key}-fused-v{FUSED_VERSION}.onnx", plain)
        for export in candidates:
            config = load_export(export, key)
            if config is not None:
                break
        if config is not None and enc.quantize == "int8-channel":
            export = quantized_export(export)
            config = config if export is not None else None
        tokenizer = load_tokenizer_json(meta.get("model", "")) if config is not None else None
        if tokenizer is None:
            return None
        return OnnxQueryEncoder(export, config, tokenizer, tok, enc, threads=enc.threads)


def _torch_encoder(meta: dict, device: str = "auto"):
    def encode(texts: list[str]) -> np.ndarray:
        from .stages.bert import encode_query          # torch and transformers: only here
        return encode_query(meta, texts, device)
    return encode
