"""Compare a store with a clean run's, and find files no manifest accounts for.

"The same as a clean run" means, per table: the same fingerprints and current pointer,
the same spec, the same set of keys, each key committed once (all its rows in one
shard), and equal values. A shard whose set of keys equals one of the clean run's
shards (the same shard plan) must hold bit-identical rows; elsewhere one-row-per-key
tables must agree within 1e-5 on float columns and exactly on the rest (multi-row
tables such as w2v_examples draw their samples per shard, so only their keys compare).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embcache.storage import FeatureStore
from embcache.storage.fs import TMP_PREFIX
from embcache.storage.table import Table, read_current

ATOL = 1e-5


def _is_float_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_fixed_size_list(t)) and pa.types.is_floating(t.value_type)


def _shards(t: Table) -> list[pa.Table]:
    return [t.read_shard(s) for s in t.manifest().shards]


def _owners(shards: list[pa.Table], key: str, where: str) -> dict:
    """key -> index of the one shard holding it; fails if a key was committed twice."""
    owner = {}
    for i, shard in enumerate(shards):
        for k in pc.unique(shard[key]).to_pylist():
            assert k not in owner, f"{where}: key {k!r} committed in two shards ({owner[k]} and {i})"
            owner[k] = i
    return owner


def compare_table(got: Table, want: Table) -> dict:
    where = f"{got.name}@{got.fingerprint[:12]}"
    gm, wm = got.manifest(), want.manifest()
    assert gm.key == wm.key, where
    assert got.saved_spec()["spec"] == want.saved_spec()["spec"], f"{where}: spec differs"
    key = wm.key
    gs, ws = _shards(got), _shards(want)
    g_owner, w_owner = _owners(gs, key, where), _owners(ws, key, f"clean {where}")
    missing, extra = set(w_owner) - set(g_owner), set(g_owner) - set(w_owner)
    assert not missing and not extra, f"{where}: {len(missing)} keys missing, {len(extra)} extra"
    g_rows, w_rows = sum(s.num_rows for s in gs), sum(s.num_rows for s in ws)
    one_per_key = w_rows == len(w_owner)
    if one_per_key:
        assert g_rows == len(g_owner), f"{where}: {g_rows} rows for {len(g_owner)} keys (duplicates)"
    if gm.schema is not None or wm.schema is not None:
        assert gm.arrow_schema().equals(wm.arrow_schema()), f"{where}: schema differs"
    by_keys = {frozenset(pc.unique(s[key]).to_pylist()): s for s in ws}
    stats = {"rows": g_rows, "keys": len(g_owner), "same_plan_keys": 0, "replanned_keys": 0, "max_abs_diff": 0.0}
    replanned = []
    for shard in gs:
        keys = frozenset(pc.unique(shard[key]).to_pylist())
        twin = by_keys.get(keys)
        if twin is not None:      # same shard plan: bit-identical, but floats from another backend (within ATOL)
            if not shard.equals(twin):
                _close(shard, twin.take(pc.index_in(shard[key], value_set=twin[key])), where, stats)
            stats["same_plan_keys"] += len(keys)
        else:
            replanned.append(shard)
            stats["replanned_keys"] += len(keys)
    if replanned and one_per_key:
        g = pa.concat_tables(replanned)
        w = pa.concat_tables(ws)
        _close(g, w.take(pc.index_in(g[key], value_set=w[key])), where, stats)
    return stats


def _close(got: pa.Table, want: pa.Table, where: str, stats: dict) -> None:
    """Rows in the same order: equal, float vectors within ATOL (backend auto may pick torch in
    one run and ONNX in another: speed-only, agreeing within 1e-4)."""
    assert got.schema.equals(want.schema), f"{where}: schema differs"
    for name in want.column_names:
        if _is_float_list(want.schema.field(name).type):
            a = np.stack(got[name].to_numpy(zero_copy_only=False)).astype(np.float64)
            b = np.stack(want[name].to_numpy(zero_copy_only=False)).astype(np.float64)
            np.testing.assert_allclose(a, b, rtol=0, atol=ATOL, err_msg=f"{where}.{name}")
            stats["max_abs_diff"] = max(stats["max_abs_diff"], float(np.abs(a - b).max(initial=0.0)))
        else:
            assert got[name].equals(want[name]), f"{where}.{name}: values differ"


def compare_stores(got_root: Path, want_root: Path, snapshots: str = "exact") -> dict:
    """Assert the store at got_root holds what the clean store at want_root holds; per-table stats.

    snapshots: "exact" = the same number of corpus snapshots as the clean run, each with
    its content; "content" = at least one, every one with the clean current snapshot's content.
    """
    got, want = FeatureStore(got_root), FeatureStore(want_root)
    g = {(t.name, t.fingerprint) for t in got.tables()}
    w = {(t.name, t.fingerprint) for t in want.tables()}
    assert g == w, f"tables differ: missing {sorted(w - g)}, extra {sorted(g - w)}"
    for name in want.table_names():
        assert read_current(got.fs, name) == read_current(want.fs, name), f"current pointer of {name} differs"
    stats = {name: compare_table(Table(got.fs, name, fp), Table(want.fs, name, fp)) for name, fp in sorted(w)}
    assert got.corpora() == want.corpora()
    for name in want.corpora():
        gm, wm = got.corpus(name).manifest(), want.corpus(name).manifest()
        assert gm.links == wm.links, f"corpus {name}: links {gm.links} != clean {wm.links}"
        clean = want.corpus(name).read()
        if snapshots == "exact":
            assert len(gm.snapshots) == len(wm.snapshots), f"corpus {name}: {len(gm.snapshots)} snapshots"
        assert gm.snapshots, f"corpus {name} has no snapshot"
        for snap in gm.snapshots:
            assert snap.sha256 == wm.current.sha256, f"corpus {name}: snapshot {snap.id} has other content"
            assert got.corpus(name).read(snap.id).equals(clean)
        stats[f"corpus:{name}"] = {"snapshots": len(gm.snapshots), "documents": clean.num_rows}
    return stats


def committed_subset(got_root: Path, want_root: Path) -> dict[str, int]:
    """After a crash: every committed key is one the clean run has (none invented). Shards per table."""
    got, want = FeatureStore(got_root), FeatureStore(want_root)
    out = {}
    for t in got.tables():
        have = Table(got.fs, t.name, t.fingerprint)
        keys = set(have.keys().to_pylist())
        clean = set(Table(want.fs, t.name, t.fingerprint).keys().to_pylist()) if (t.name, t.fingerprint) in {
            (x.name, x.fingerprint) for x in want.tables()} else set()
        assert keys <= clean, f"{t.name}: {len(keys - clean)} committed keys the clean run does not have"
        out[t.name] = t.shards
    return out


def interrupted_commits(root: Path) -> list[str]:
    """What an interrupted commit leaves: temp files, shards or snapshots no manifest lists."""
    store = FeatureStore(root)
    found = [p.relative_to(root).as_posix() for p in Path(root).rglob(f"{TMP_PREFIX}*")]
    for name in store.table_names():
        for fp in store.fingerprints(name):
            t = Table(store.fs, name, fp)
            listed = {s.file for s in t.manifest().shards} if t.exists() else set()
            if not t.exists() and (Path(t.dir) / "spec.json").exists():
                found.append(f"{name}/{fp[:8]}/spec.json without a manifest")
            shards = Path(t.dir) / "shards"
            if shards.is_dir():
                found += [f"{name}/{fp[:8]}/shards/{f}" for f in os.listdir(shards)
                          if not f.startswith(TMP_PREFIX) and f not in listed]
    for name in os.listdir(Path(root) / "corpora") if (Path(root) / "corpora").is_dir() else []:
        c = store.corpus(name)
        listed = {s.file for s in c.manifest().snapshots}
        snaps = Path(c.dir) / "snapshots"
        if snaps.is_dir():
            found += [f"corpora/{name}/snapshots/{f}" for f in os.listdir(snaps)
                      if not f.startswith(TMP_PREFIX) and f not in listed]
    return sorted(found)


def unaccounted_files(root: Path) -> list[str]:
    """Files that are neither a manifest, spec, pointer, lock, nor a listed shard or snapshot."""
    store = FeatureStore(root)
    allowed = set()
    for name in store.table_names():
        allowed.add(store.fs.path("tables", name, "current.json"))
        for fp in store.fingerprints(name):
            t = Table(store.fs, name, fp)
            allowed.update(f"{t.dir}/{f}" for f in ("spec.json", "manifest.json", ".lock"))
            if t.exists():
                allowed.update(t.shard_path(s) for s in t.manifest().shards)
    for name in store.corpora():
        c = store.corpus(name)
        allowed.update(f"{c.dir}/{f}" for f in ("manifest.json", ".lock"))
        allowed.update(c.snapshot_path(s) for s in c.manifest().snapshots)
        allowed.update(f"{c.dir}/sources/{s.file}" for s in c.manifest().snapshots)   # stages/source_state.py
    # derived/ (the store's ONNX exports) and tables/<name>/<fp>/derived/ (a table's matrix and
    # index): rebuildable caches, each checked against its own checksums before use
    return sorted(p.relative_to(root).as_posix() for p in Path(root).rglob("*")
                  if p.is_file() and str(p) not in allowed and "derived" not in p.relative_to(root).parts)
