"""verify (recompute every checksum, name every bad file) and gc (remove what nothing references).

Derived vector indexes are checked too (`index_damage`): verify hashes every file, status
only re-hashes files whose stat changed since they were written; `rebuild_indexes` (run by
`repair` and `verify --repair`) builds a damaged index again from the table's matrix.

gc never touches a file younger than `grace_seconds` (default one hour): a writer
puts its shard in place before it takes the lock to list it, so a young unlisted
file may be a commit in flight, not an orphan.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from .errors import StoreError
from .fingerprint import fingerprint_of
from .fs import TMP_PREFIX, StoreFS
from .index_files import AnnConfig, have_faiss, index_problems, metas
from .lock import commit_lock
from .shards import decode_shard
from .store import FeatureStore
from .table import Table, read_current


@dataclass
class VerifyReport:
    checked: int = 0                                        # files checked
    bad: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    @property
    def ok(self) -> bool:
        return not self.bad


def file_problem(fs: StoreFS, path: str, size: int, sha: str, rows: int) -> str | None:
    """Why a committed shard or snapshot file does not match its manifest entry, or None."""
    try:
        if not fs.exists(path):
            return "missing: the manifest lists it, the file does not exist"
        table = decode_shard(path, fs.read_bytes(path), size, sha)
    except StoreError as e:
        return e.reason
    if table.num_rows != rows:
        return f"{table.num_rows} rows, manifest says {rows}"
    return None


def verify(store: FeatureStore) -> VerifyReport:
    """Re-read every committed shard and snapshot; compare size, sha256, Parquet footer, row count."""
    report = VerifyReport()

    def check(path: str, size: int, sha: str, rows: int) -> None:
        report.checked += 1
        problem = file_problem(store.fs, path, size, sha, rows)
        if problem:
            report.bad.append((path, problem))

    def check_spec(t: Table) -> None:
        """spec.json must still hash to the fingerprint it is filed under."""
        path = f"{t.dir}/spec.json"
        if not store.fs.exists(path):
            return
        try:
            if fingerprint_of(t.saved_spec().get("spec")) != t.fingerprint:
                report.bad.append((path, "spec does not hash to the table's fingerprint (edited or damaged)"))
        except StoreError as e:
            report.bad.append((e.path, e.reason))

    for name in store.table_names():
        try:  # the current pointer must name a committed table (a deleted manifest loses it)
            current = read_current(store.fs, name)
            if current is not None and not Table(store.fs, name, current).exists():
                report.bad.append((store.fs.path("tables", name, "current.json"),
                                   f"names fingerprint {current[:12]}…, which has no manifest.json"))
        except StoreError as e:
            report.bad.append((e.path, e.reason))
        for fp in store.fingerprints(name):
            t = Table(store.fs, name, fp)
            if not t.exists():
                continue
            check_spec(t)
            try:
                m = t.manifest()
            except StoreError as e:
                report.bad.append((e.path, e.reason))
                continue
            for s in m.shards:
                check(t.shard_path(s), s.bytes, s.sha256, s.rows)
            checked, damage = index_damage_of(t, full=True)
            report.checked += checked
            report.bad += damage
    for kind in store.models.kinds():  # every model's current version
        for name in store.models.names(kind):
            try:
                store.models.get(kind, name)
                report.checked += 1
            except StoreError as e:
                report.bad.append((e.path, e.reason))
    for name in store.corpora():
        c = store.corpus(name)
        try:
            snaps = c.manifest().snapshots
        except StoreError as e:
            report.bad.append((e.path, e.reason))
            continue
        for s in snaps:
            check(c.snapshot_path(s), s.bytes, s.sha256, s.rows)
    report.bad += reject_gaps(store)
    return report


def index_damage_of(t: Table, full: bool) -> tuple[int, list[tuple[str, str]]]:
    """(index files checked, [(path, why)]) for one table's derived vector indexes."""
    checked, problems = index_problems(t, full)
    return checked, [(path, f"derived vector index of {t.name}.{column}: {why}; `embcache index {t.name}` "
                            "or `embcache repair` rebuilds it") for path, column, why in problems]


def index_damage(store: FeatureStore, full: bool = False) -> list[tuple[str, str]]:
    """(path, why) for every damaged derived vector index file in the store (status: full=False)."""
    out = []
    for name in store.table_names():
        for fp in store.fingerprints(name):
            t = Table(store.fs, name, fp)
            if t.exists():
                out += index_damage_of(t, full)[1]
    return out


def rebuild_indexes(store: FeatureStore, dry_run: bool = False) -> list[tuple[str, str]]:
    """Build again every damaged vector index, with the settings it was built with where its
    .json is readable: [(table directory, what was done)]. Without faiss the damaged files
    are removed (queries are exact until `embcache index`)."""
    from .index_build import build_index
    from .matrix import open_matrix
    done = []
    for name in store.table_names():
        for fp in store.fingerprints(name):
            t = Table(store.fs, name, fp)
            if not t.exists():
                continue
            for column in sorted({c for _, c, _ in index_problems(t, full=True)[1]}):
                where = store.fs.relative(t.dir)
                if dry_run:
                    done.append((where, f"would rebuild the {column} vector index"))
                elif not have_faiss():
                    for path, c, _ in index_problems(t, full=True)[1]:
                        if c == column:
                            store.fs.delete(path)
                    done.append((where, f"removed the damaged {column} vector index (faiss is not installed)"))
                else:
                    good = metas(t, column)[0]
                    config = AnnConfig(**good[0][1]["config"]) if good else AnnConfig()
                    try:
                        result = build_index(t, open_matrix(t, column), config, rebuild=True)
                    except StoreError as e:          # e.g. a shard repair could not fix: verify names it
                        done.append((where, f"could not rebuild the {column} vector index: {e.reason}"))
                        continue
                    done.append((where, f"rebuilt the damaged vector index of {t.name}.{column} ({result['rows']:,} rows)"))
    return done


def reject_gaps(store: FeatureStore, table: str = "rejected") -> list[tuple[str, str]]:
    """Snapshots whose stats count more rejected rows than `table` holds for them: (corpus
    manifest, why). An ingest commits its rejects before its snapshot; a store written
    before that order was kept can have a snapshot whose ingest was cut in between."""
    try:
        t = store.open(table)
        if not {"corpus", "snapshot"} <= set(t.manifest().arrow_schema().names):
            return []
        held = Counter()
        for part in t.iter_shards(columns=["corpus", "snapshot"]):
            held.update(zip(part["corpus"].to_pylist(), part["snapshot"].to_pylist()))
    except (StoreError, AttributeError):   # no such table, or damage that verify names on its own
        return []
    gaps = []
    for name in store.corpora():
        c = store.corpus(name)
        try:
            snaps = c.manifest().snapshots
        except StoreError:
            continue
        for s in snaps:
            counted = s.stats.get("rejected")
            want = sum(counted.values()) if isinstance(counted, dict) else 0
            if held[(name, s.id)] < want:
                gaps.append((c.manifest_path, f"snapshot {s.id} counts {want:,} rejected rows but `{table}` holds "
                                              f"{held[(name, s.id)]:,} for it: the ingest that made it was cut "
                                              "before committing them (re-ingest the same sources to restore them)"))
    return gaps


@dataclass
class GcReport:
    removed: list[str] = field(default_factory=list)   # store-relative paths (files or table dirs)
    freed_bytes: int = 0
    kept_young: int = 0                                # orphans left alone: younger than the grace


def live_tables(store: FeatureStore) -> set[tuple[str, str]]:
    """(name, fingerprint) pairs something refers to: current pointers, corpus links, and their inputs."""
    live: set[tuple[str, str]] = set()
    for name in store.table_names():
        fp = read_current(store.fs, name)
        if fp:
            live.add((name, fp))
        else:   # a writer killed between a table's first manifest and its pointer: keep what it committed
            live.update((name, f) for f in store.fingerprints(name) if Table(store.fs, name, f).exists())
    for corpus in store.corpora():
        for name, fps in store.corpus(corpus).manifest().links.items():
            live.update((name, fp) for fp in fps)
    all_fps = {fp: name for name in store.table_names() for fp in store.fingerprints(name)}
    todo = list(live)
    while todo:  # inputs of live tables are live
        name, fp = todo.pop()
        table = Table(store.fs, name, fp)
        if not store.fs.exists(f"{table.dir}/spec.json"):
            continue
        inputs = table.saved_spec()["spec"].get("inputs", {})
        for value in inputs.values():
            if isinstance(value, str) and value in all_fps and (all_fps[value], value) not in live:
                live.add((all_fps[value], value))
                todo.append((all_fps[value], value))
    return live


def gc(store: FeatureStore, grace_seconds: float = 3600.0, dry_run: bool = False,
       unreferenced_tables: bool = True) -> GcReport:
    """Remove temp files, unlisted shards and snapshots, and (optionally) unreferenced tables."""
    fs = store.fs
    report = GcReport()
    cutoff = time.time() - grace_seconds

    def remove(path: str, size: int) -> None:
        report.removed.append(fs.relative(path))
        report.freed_bytes += size
        if not dry_run:
            fs.delete(path)

    def old(path: str) -> bool:
        if fs.mtime(path) <= cutoff:
            return True
        report.kept_young += 1
        return False

    live = live_tables(store) if unreferenced_tables else None
    for name in store.table_names():
        for fp in store.fingerprints(name):
            t = Table(fs, name, fp)
            files = fs.walk_files(t.dir)
            if live is not None and (name, fp) not in live:
                with commit_lock(fs, f"{t.dir}/.lock"):
                    if read_current(fs, name) != fp and all(fs.mtime(f) <= cutoff for f in files
                                                            if not f.endswith("/.lock")):
                        report.removed.append(fs.relative(t.dir))
                        report.freed_bytes += sum(fs.info(f).get("size", 0) for f in files)
                        if not dry_run:
                            fs.delete(t.dir)
                        continue
            listed = {s.file for s in t.manifest().shards} if t.exists() else set()
            for f in files:
                base = f.rsplit("/", 1)[1]
                unlisted_shard = f.startswith(t.dir + "/shards/") and base not in listed
                if (base.startswith(TMP_PREFIX) or unlisted_shard) and old(f):
                    remove(f, fs.info(f).get("size", 0))
    for name in store.corpora():
        c = store.corpus(name)
        listed = {s.file for s in c.manifest().snapshots}
        for f in fs.walk_files(c.dir):
            base = f.rsplit("/", 1)[1]
            unlisted = f.startswith(c.dir + "/snapshots/") and base not in listed
            if (base.startswith(TMP_PREFIX) or unlisted) and old(f):
                remove(f, fs.info(f).get("size", 0))
    for kind in store.models.kinds():  # model versions that are not current (retrained, old checkpoints)
        for name in fs.listdir(fs.path("models", kind)):
            where = fs.path("models", kind, name)
            current = store.models.current(kind, name) if store.models.exists(kind, name) else None
            for base in fs.listdir(where):
                f = f"{where}/{base}"
                stale = len(base) == 64 and base != current
                if (stale or base.startswith(TMP_PREFIX)) and all(old(x) for x in fs.walk_files(f) or [f]):
                    remove(f, sum(fs.info(x).get("size", 0) for x in fs.walk_files(f) or [f]))
    for name in store.table_names():  # temp files of current pointers, beside the fingerprints
        for base in fs.listdir(fs.path("tables", name)):
            f = fs.path("tables", name, base)
            if base.startswith(TMP_PREFIX) and old(f):
                remove(f, fs.info(f).get("size", 0))
    return report
