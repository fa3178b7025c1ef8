"""FeatureStore: the entry point. Tables under fingerprints, corpus snapshots, and their join.

>>> import tempfile, pyarrow as pa
>>> from storage import FeatureStore, spec
>>> store = FeatureStore(tempfile.mkdtemp())
>>> t = store.table("lengths", spec("length", 1, {"unit": "chars"}), key="text_sha")
>>> _ = t.write(pa.table({"text_sha": ["a1", "b2"], "length": [3, 5]}))
>>> _ = store.corpus("demo").commit_snapshot(pa.table({"doc_id": ["d1", "d2"], "text_sha": ["b2", "a1"]}))
>>> store.corpus_features("demo", "lengths").column("length").to_pylist()
[5, 3]
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from .corpus import Corpus
from .errors import NotFound, StoreError, did_you_mean
from .fingerprint import fingerprint_of
from .fs import NAME_RE, FINGERPRINT_RE, StoreFS, check_fingerprint
from .models import Models
from .table import Table, read_current

DEFAULT_ROOT = "./embcache-store"


def default_root() -> str:
    """`EMBCACHE_STORE` if set, else ./embcache-store."""
    return os.environ.get("EMBCACHE_STORE") or DEFAULT_ROOT


@dataclass(frozen=True)
class TableInfo:
    name: str
    fingerprint: str
    current: bool | None  # what `name` means by default (in SQL, in lookups); None: its pointer is damaged
    rows: int
    shards: int
    bytes: int
    key: str
    stage: str | None    # from spec.json, when present
    damaged: str | None = None   # why it cannot be read in full (manifest unreadable, shard files missing)


class FeatureStore:
    def __init__(self, root: str | os.PathLike | None = None):
        self.fs = StoreFS(root if root is not None else default_root())
        self.models = Models(self.fs)     # trained heads, classifiers, checkpoints (storage/models.py)

    @property
    def root(self) -> str:
        return self.fs.url

    def __repr__(self) -> str:
        return f"FeatureStore({self.root!r})"

    def exists(self) -> bool:
        """True once anything was committed here (a table or a corpus)."""
        return any(self.fs.exists(self.fs.path(part)) for part in ("tables", "corpora"))

    def require(self) -> "FeatureStore":
        """This store, or NotFound when there is none at its root (reading never creates one)."""
        if not self.exists():
            raise NotFound(self.root, "no embcache store here (no tables/ or corpora/): check --store / "
                                      "$EMBCACHE_STORE, or build one with `embcache ingest` or `embcache run`")
        return self

    # -- tables ----------------------------------------------------------
    def table(self, name: str, spec: dict, key: str = "text_sha", meta: dict | None = None) -> Table:
        """Handle for writing (and reading) `name` under the fingerprint of `spec`.

        `meta` (not hashed) is saved beside the spec: how to reproduce the table. A commit
        cut short before the name's pointer was written is finished here (Table.finish_pointer).
        """
        t = Table(self.fs, name, fingerprint_of(spec), key=key, spec=spec, meta=meta)
        t.finish_pointer()
        return t

    def open(self, name: str, fingerprint: str | None = None) -> Table:
        """An existing table; its current fingerprint unless one is given (a 12+ char prefix works)."""
        fp = self.resolve(name, fingerprint)
        t = Table(self.fs, name, fp)
        if not t.exists():
            raise NotFound(t.dir, f"table {name!r} has no committed manifest under {fp[:12]}…")
        t.manifest()  # learns the key column
        return t

    def resolve(self, name: str, fingerprint: str | None = None) -> str:
        if fingerprint is None:
            fp = read_current(self.fs, name)
            if fp is None:
                close = did_you_mean(name, self.table_names())
                raise NotFound(self.fs.path("tables", name), f"no table named {name!r} in {self.root}"
                                                             + (f"; did you mean {close!r}?" if close else ""))
            return fp
        matches = [fp for fp in self.fingerprints(name) if fp.startswith(fingerprint)]
        if len(matches) != 1 or len(fingerprint) < 8:
            raise NotFound(self.fs.path("tables", name),
                           f"fingerprint {fingerprint!r} matches {len(matches)} of table {name!r}"
                           " (give at least 8 hex digits of exactly one)")
        return check_fingerprint(matches[0])

    def resolve_linked(self, corpus: str, name: str) -> str:
        """The fingerprint of `name` most recently linked to `corpus` (e.g. its documents table)."""
        fps = self.corpus(corpus).manifest().links.get(name)
        if not fps:
            raise NotFound(self.corpus(corpus).dir, f"corpus {corpus!r} has no {name!r} table linked")
        return fps[-1]

    def table_names(self) -> list[str]:
        return [n for n in self.fs.listdir(self.fs.path("tables")) if NAME_RE.match(n)]

    def fingerprints(self, name: str) -> list[str]:
        return [f for f in self.fs.listdir(self.fs.path("tables", name)) if FINGERPRINT_RE.match(f)]

    def tables(self, damaged: list[StoreError] | None = None) -> list[TableInfo]:
        """Every committed table under every fingerprint. A damaged one is listed with
        `damaged` saying why (and no rows) instead of failing the listing; a damaged
        current pointer is appended to `damaged` when given, and leaves `current` None."""
        out = []
        for name in self.table_names():
            try:
                current = read_current(self.fs, name)
            except StoreError as e:
                current = ...
                if damaged is not None:
                    damaged.append(e)
            for fp in self.fingerprints(name):
                t = Table(self.fs, name, fp)
                if t.exists():
                    out.append(self._info(t, None if current is ... else fp == current))
        return out

    def _info(self, t: Table, current: bool | None) -> TableInfo:
        try:
            m = t.manifest()
        except StoreError as e:
            return TableInfo(t.name, t.fingerprint, current, 0, 0, 0, t.key, self._stage(t), str(e))
        on_disk = self.fs.sizes(f"{t.dir}/shards")        # one listing: status stays cheap
        missing = sum(on_disk.get(s.file) is None for s in m.shards)
        wrong = sum(on_disk.get(s.file) not in (None, s.bytes) for s in m.shards)
        problems = [f"{n} of {len(m.shards)} shard files {what}" for n, what in
                    ((missing, "missing"), (wrong, "of the wrong size")) if n]
        return TableInfo(t.name, t.fingerprint, current, m.rows, len(m.shards), m.bytes, m.key, self._stage(t),
                         "; ".join(problems) + " (embcache verify names them, embcache repair fixes)"
                         if problems else None)

    def _stage(self, t: Table) -> str | None:
        try:
            if not self.fs.exists(f"{t.dir}/spec.json"):
                return None
            return t.saved_spec()["spec"].get("stage")
        except (StoreError, AttributeError):      # a damaged spec: verify names it
            return None

    # -- corpora ---------------------------------------------------------
    def corpus(self, name: str) -> Corpus:
        return Corpus(self.fs, name)

    def corpora(self) -> list[str]:
        return [n for n in self.fs.listdir(self.fs.path("corpora")) if NAME_RE.match(n)
                and Corpus(self.fs, n).exists()]

    def corpus_features(self, corpus: str, table: str, fingerprint: str | None = None,
                        columns: list[str] | None = None, snapshot: str | None = None,
                        missing: str = "error") -> pa.Table:
        """The snapshot's documents joined with their feature rows, in snapshot order.

        Each document carries the snapshot's columns (doc_id, text_sha, label, …) plus
        the table's columns. `missing="error"` raises NotFound for documents whose
        features were not computed; "skip" leaves them out.
        """
        docs = self.corpus(corpus).read(snapshot)
        t = self.open(table, fingerprint)
        key = t.key
        cols = None if columns is None else list(dict.fromkeys([key, *columns]))
        feats = t.lookup(pc.unique(docs["text_sha"]), cols, missing=missing)
        pos = pc.index_in(docs["text_sha"], value_set=feats[key])
        if pos.null_count:
            keep = pc.is_valid(pos)
            docs, pos = docs.filter(keep), pos.filter(keep)
        feats = feats.take(pos)
        out = docs
        for name in feats.column_names:
            if name not in out.column_names:
                out = out.append_column(name, feats[name])
        return out

    # -- overview --------------------------------------------------------
    def status(self) -> dict:
        """What `embcache status --json` prints."""
        damaged: list[StoreError] = []
        tables = [{"name": t.name, "fingerprint": t.fingerprint, "current": t.current,
                   "stage": t.stage, "rows": t.rows, "shards": t.shards, "bytes": t.bytes, "damaged": t.damaged}
                  for t in self.tables(damaged)]
        corpora = []
        for name in self.corpora():
            c = self.corpus(name)
            try:
                m = c.manifest()
            except StoreError as e:
                corpora.append({"name": name, "snapshots": 0, "current_snapshot": None, "documents": 0,
                                "created": None, "stats": {}, "tables": {}, "damaged": str(e)})
                continue
            cur = m.current
            corpora.append({"name": name, "snapshots": len(m.snapshots),
                            "current_snapshot": cur.id if cur else None,
                            "documents": cur.rows if cur else 0,
                            "created": cur.created if cur else None,
                            "stats": cur.stats if cur else {},
                            "tables": m.links,
                            "damaged": _snapshot_damage(self.fs, c, cur)})
        return {"store": self.root, "tables": tables, "corpora": corpora,
                "damaged": [{"path": e.path, "reason": e.reason} for e in damaged]}


def _snapshot_damage(fs: StoreFS, corpus: Corpus, snap) -> str | None:
    """Why the current snapshot's file cannot be read (missing, wrong size), or None; cheap: one stat."""
    if snap is None:
        return None
    size = fs.sizes(f"{corpus.dir}/snapshots").get(snap.file)
    if size is None:
        return f"current snapshot {snap.id} file {snap.file} is missing"
    if size != snap.bytes:
        return f"current snapshot {snap.id} file {snap.file} is {size} bytes, the manifest says {snap.bytes}"
    return None
