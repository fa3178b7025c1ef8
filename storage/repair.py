"""repair: move damaged files aside, drop them from their manifests, rebuild what can be rebuilt.

Nothing is deleted. Each damaged file goes to `damaged/<UTC time>-<id>/<its store path>`
(with `repair.json` there saying why), and the manifest that listed it is rewritten
under its lock without it, so the next run computes exactly the rows it held.
repair.json is the journal: it is written (atomically) before each move, so a repair
killed at any point leaves the record of what it moved and why ("complete": false until
it finished); a re-run finds the moved files' manifest entries and finishes the job.

- a shard that is missing, truncated, changed or unreadable: dropped from its table
  (its keys become missing, so `featurize` / `ingest` recompute them);
- a table manifest that cannot be read: rebuilt from the table's shard files, which
  carry their own schema and row counts (keyed as spec.json says; a shard whose keys
  another one already holds is left unlisted, for `gc`);
- a current pointer that cannot be read or names no manifest: pointed at the table's
  newest committed fingerprint (or moved aside when there is none);
- a spec.json that does not hash to its fingerprint: moved aside (the next commit
  writes it again);
- a snapshot that is missing or damaged: dropped from its corpus; when it was the
  current one, the next ingest of the same sources commits it again;
- a corpus manifest that cannot be read: rebuilt from its snapshot files, oldest first
  (their stats and table links are lost: the next ingest and featurize record them again).

    report = repair(FeatureStore("embcache-store"))
    report.actions   # [("tables/bert_features/…/part-….parquet", "moved aside: sha256 …; dropped …: 512 rows …")]
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import manifest as mf
from .errors import StoreError
from .fingerprint import fingerprint_of
from .fs import NAME_RE, TMP_PREFIX
from .lock import commit_lock
from .maintenance import file_problem
from .shards import READ_THREADS
from .store import FeatureStore
from .table import CURRENT_FORMAT, Table, read_current

DAMAGED_DIR = "damaged"       # under the store root; never read, never removed by gc
REPORT_FORMAT = mf.Format("embcache.repair_report", 1)


@dataclass
class RepairReport:
    actions: list[tuple[str, str]] = field(default_factory=list)   # (store-relative path, what was done)
    unrepaired: list[tuple[str, str]] = field(default_factory=list)  # (path, why it could not be)
    aside: str | None = None                                        # where damaged files were moved

    @property
    def ok(self) -> bool:
        return not self.unrepaired


class _Aside:
    """Moves damaged files to damaged/<stamp>/<store path>, created on first use."""

    def __init__(self, store: FeatureStore, report: RepairReport, dry_run: bool):
        self.store, self.report, self.dry_run = store, report, dry_run
        self.dir = store.fs.path(DAMAGED_DIR, f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-"
                                              f"{uuid.uuid4().hex[:8]}")

    def move(self, path: str, why: str) -> None:
        fs = self.store.fs
        relative = fs.relative(path)
        if not fs.exists(path):      # a deleted file: only its manifest entry goes
            self.report.actions.append((relative, why))
            return
        self.report.aside = fs.relative(self.dir)
        self.report.actions.append((relative, f"moved aside: {why}"))
        if not self.dry_run:
            self.write_report(complete=False)        # the journal first: the record outlives a kill
            fs.move(path, f"{self.dir}/{relative}")

    def write_report(self, complete: bool = True) -> None:
        if self.dry_run or self.report.aside is None:
            return
        self.store.fs.write_atomic(f"{self.dir}/repair.json", mf.dump({
            **mf.header(REPORT_FORMAT), "created": mf.utcnow(), "complete": complete,
            "actions": [list(a) for a in self.report.actions],
            "unrepaired": [list(a) for a in self.report.unrepaired]}))


def repair(store: FeatureStore, dry_run: bool = False) -> RepairReport:
    """Make every manifest list only files that verify; see the module docstring."""
    report = RepairReport()
    aside = _Aside(store, report, dry_run)
    for name in store.table_names():
        for fp in store.fingerprints(name):
            _repair_table(store, Table(store.fs, name, fp), aside, dry_run)
        _repair_pointer(store, name, aside, dry_run)
    for name in _corpus_names(store):
        _repair_corpus(store, name, aside, dry_run)
    aside.write_report()
    return report


# -- tables ------------------------------------------------------------------------------------
def _repair_table(store: FeatureStore, t: Table, aside: _Aside, dry_run: bool) -> None:
    fs = store.fs
    _repair_spec(store, t, aside)
    if not t.exists():
        if _pointer_of(store, t.name) == t.fingerprint and _shard_files(t):
            _rebuild_manifest(store, t, aside, dry_run, "manifest.json is missing")
        return
    try:
        m = t.manifest()
    except StoreError as e:
        _rebuild_manifest(store, t, aside, dry_run, e.reason)
        return
    bad = {}
    for s in m.shards:
        problem = file_problem(fs, t.shard_path(s), s.bytes, s.sha256, s.rows)
        if problem:
            bad[s.file] = problem
    if not bad:
        return
    with _lock(fs, t.dir, dry_run):
        m = t.manifest()
        for s in m.shards:
            if s.file in bad:
                aside.move(t.shard_path(s), f"{bad[s.file]}; dropped from {t.name}: "
                                            f"{s.rows} rows for the next run to recompute")
        if not dry_run:
            kept = tuple(s for s in m.shards if s.file not in bad)
            t.fs.write_atomic(t.manifest_path, mf.Manifest(
                table=m.table, fingerprint=m.fingerprint, key=m.key, generation=m.generation + 1,
                schema=m.schema, codecs=m.codecs, shards=kept).to_json())


def _repair_spec(store: FeatureStore, t: Table, aside: _Aside) -> None:
    path = f"{t.dir}/spec.json"
    if not store.fs.exists(path):
        return
    try:
        if fingerprint_of(t.saved_spec().get("spec")) == t.fingerprint:
            return
        why = "spec does not hash to the table's fingerprint (edited or damaged)"
    except StoreError as e:
        why = e.reason
    aside.move(path, f"{why}; the next commit to this table writes it again")


def _rebuild_manifest(store: FeatureStore, t: Table, aside: _Aside, dry_run: bool, why: str) -> None:
    """A manifest from the shard files: each readable one, oldest first, unless its keys are taken."""
    fs = store.fs
    key = _spec_key(t)
    if key is None:
        store_path = t.manifest_path if fs.exists(t.manifest_path) else t.dir
        aside.report.unrepaired.append((fs.relative(store_path), f"{why}; spec.json is missing or damaged too, "
                                        "so the shards' key column is unknown: the table cannot be rebuilt"))
        return
    with _lock(fs, t.dir, dry_run):
        shards, schema, codecs, taken = [], None, {}, None
        for file in _shard_files(t):
            path = t.shard_path(file)
            data = fs.read_bytes(path)
            try:
                rows = pq.read_table(pa.BufferReader(data), use_threads=READ_THREADS)
                rows = rows.replace_schema_metadata(None)
            except (pa.ArrowException, OSError) as e:
                aside.move(path, f"unlisted and not a readable Parquet file ({e})")
                continue
            if key not in rows.column_names or (schema is not None and not rows.schema.equals(schema)):
                continue      # not this table's rows: left for gc
            keys = pc.unique(rows[key])
            if taken is not None and pc.any(pc.is_in(keys, value_set=taken)).as_py():
                continue      # a writer that lost a race (or crashed) left it: gc removes it
            taken = keys if taken is None else pa.concat_arrays([taken, keys])
            if schema is None:
                schema, codecs = rows.schema, _codecs_of(data)
            shards.append(mf.Shard(file=file, rows=rows.num_rows, bytes=len(data),
                                   sha256=_sha256(data), created=_utc(fs.mtime(path))))
        if fs.exists(t.manifest_path):
            aside.move(t.manifest_path, why)
        rebuilt = mf.Manifest(table=t.name, fingerprint=t.fingerprint, key=key, generation=len(shards),
                              schema=mf.schema_to_text(schema) if schema is not None else None,
                              codecs=codecs, shards=tuple(shards))
        if not dry_run:
            fs.write_atomic(t.manifest_path, rebuilt.to_json())
        aside.report.actions.append((fs.relative(t.manifest_path), f"rebuilt from {len(shards)} shard file(s), "
                                     f"{rebuilt.rows} rows"))


def _repair_pointer(store: FeatureStore, name: str, aside: _Aside, dry_run: bool) -> None:
    fs = store.fs
    pointer = fs.path("tables", name, "current.json")
    if not fs.exists(pointer):
        return
    try:
        fp = read_current(fs, name)
        if fp is not None and (dry_run and fs.exists(fs.path("tables", name, fp)) or Table(fs, name, fp).exists()):
            return
        why = f"names fingerprint {fp[:12]}…, which has no manifest.json"
    except StoreError as e:
        why = e.reason
    committed = [f for f in store.fingerprints(name) if Table(fs, name, f).exists()]
    aside.move(pointer, why)
    if not committed:
        return
    newest = max(committed, key=lambda f: fs.mtime(Table(fs, name, f).manifest_path))
    if not dry_run:
        fs.write_atomic(pointer, mf.dump({**mf.header(CURRENT_FORMAT), "fingerprint": newest, "updated": mf.utcnow()}))
    aside.report.actions.append((fs.relative(pointer), f"now names {newest[:12]}…, the newest committed "
                                 f"fingerprint of {name}"))


# -- corpora -----------------------------------------------------------------------------------
def _corpus_names(store: FeatureStore) -> list[str]:
    """Every corpus folder with a manifest or snapshot files (a damaged manifest still counts)."""
    root = store.fs.path("corpora")
    return [n for n in store.fs.listdir(root) if NAME_RE.match(n)
            and (store.corpus(n).exists() or store.fs.listdir(f"{root}/{n}/snapshots"))]


def _repair_corpus(store: FeatureStore, name: str, aside: _Aside, dry_run: bool) -> None:
    fs, c = store.fs, store.corpus(name)
    try:
        m = c.manifest()
    except StoreError as e:
        _rebuild_corpus(store, name, aside, dry_run, e.reason)
        return
    bad = {s.id: p for s in m.snapshots
           if (p := file_problem(fs, c.snapshot_path(s), s.bytes, s.sha256, s.rows))}
    if not bad:
        return
    with _lock(fs, c.dir, dry_run):
        m = c.manifest()
        for s in m.snapshots:
            if s.id in bad:
                current = " (the current one: the next ingest of its sources commits it again)" \
                    if s is m.current else ""
                aside.move(c.snapshot_path(s), f"{bad[s.id]}; snapshot {s.id} dropped from corpus {name}{current}")
        if not dry_run:
            kept = tuple(s for s in m.snapshots if s.id not in bad)
            held = {**m.held, **{s.id: str(s.stats.get("content_sha256", "")) for s in m.snapshots if s.id in bad}}
            fs.write_atomic(c.manifest_path, mf.CorpusManifest(name, kept, m.links, held).to_json())


def _rebuild_corpus(store: FeatureStore, name: str, aside: _Aside, dry_run: bool, why: str) -> None:
    fs, c = store.fs, store.corpus(name)
    with _lock(fs, c.dir, dry_run):
        snaps = []
        folder = f"{c.dir}/snapshots"
        files = [f for f in fs.listdir(folder) if f.endswith(".parquet") and not f.startswith(TMP_PREFIX)]
        for file in sorted(files, key=lambda f: fs.mtime(f"{folder}/{f}")):
            data = fs.read_bytes(f"{folder}/{file}")
            try:
                rows = pq.read_metadata(pa.BufferReader(data)).num_rows
            except (pa.ArrowException, OSError) as e:
                aside.move(f"{folder}/{file}", f"not a readable Parquet file ({e})")
                continue
            snaps.append(mf.Snapshot(id=f"{len(snaps) + 1:06d}", file=file, rows=rows, bytes=len(data),
                                     sha256=_sha256(data), created=_utc(fs.mtime(f"{folder}/{file}")),
                                     note="recovered by embcache repair (stats lost)"))
        if fs.exists(c.manifest_path):
            aside.move(c.manifest_path, why)
        if not dry_run:
            fs.write_atomic(c.manifest_path, mf.CorpusManifest(name, tuple(snaps)).to_json())
        aside.report.actions.append((fs.relative(c.manifest_path), f"rebuilt from {len(snaps)} snapshot file(s); "
                                     "their stats and table links were lost (the next ingest and featurize "
                                     "record them again)"))


# -- helpers -----------------------------------------------------------------------------------
class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _lock(fs, directory: str, dry_run: bool):
    return _NoLock() if dry_run else commit_lock(fs, f"{directory}/.lock")


def _pointer_of(store: FeatureStore, name: str) -> str | None:
    try:
        return read_current(store.fs, name)
    except StoreError:        # a damaged pointer: _repair_pointer deals with it
        return None


def _shard_files(t: Table) -> list[str]:
    """Shard files on disk, oldest first (the order they were committed in, as far as can be told)."""
    folder = f"{t.dir}/shards"
    files = [f for f in t.fs.listdir(folder) if f.endswith(".parquet") and not f.startswith(TMP_PREFIX)]
    return sorted(files, key=lambda f: (t.fs.mtime(f"{folder}/{f}"), f))


def _spec_key(t: Table) -> str | None:
    try:
        spec = t.saved_spec()
    except StoreError:
        return None
    if fingerprint_of(spec.get("spec")) != t.fingerprint:
        return None
    return spec.get("key")


def _codecs_of(data: bytes) -> dict[str, dict]:
    """Each column's codec and encoding, as its first row group was written (trials are not known)."""
    meta = pq.read_metadata(pa.BufferReader(data))
    if meta.num_row_groups == 0:
        return {}
    group, out = meta.row_group(0), {}
    for i in range(group.num_columns):
        col = group.column(i)
        name = col.path_in_schema.split(".")[0]
        if name in out:
            continue
        encodings = set(col.encodings)
        encoding = ("byte_stream_split" if "BYTE_STREAM_SPLIT" in encodings else
                    "dictionary" if encodings & {"PLAIN_DICTIONARY", "RLE_DICTIONARY"} else "plain")
        codec = col.compression.lower()
        out[name] = {"codec": "none" if codec == "uncompressed" else codec, "encoding": encoding,
                     "recovered": True}
    return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))

