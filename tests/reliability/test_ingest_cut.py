"""Issue 18, item 3: an ingest killed between its snapshot and its rejects must not leave a
snapshot whose stats count rejects that `rejected` lacks, even when the sources change
before the re-run. Real `embcache ingest` processes, SIGKILLed at a store event."""

from __future__ import annotations

from pathlib import Path

from embcache.storage import FeatureStore
from embcache.storage.maintenance import reject_gaps, verify

from .store_compare import compare_stores
from .store_watch import Trigger, run_watched


def write_lines(path: Path, extra: str = "") -> Path:
    lines = [f"document number {i} about the market" if i % 6 else "" for i in range(60)]   # 10 empty_text
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def snapshot_rejects(root: Path) -> list[tuple[str, int, int]]:
    """(snapshot id, rejects its stats count, rows `rejected` holds for it) per snapshot."""
    store = FeatureStore(root)
    rows = store.open("rejected").read(["corpus", "snapshot"]).to_pylist()
    return [(s.id, sum(s.stats["rejected"].values()), sum(r["snapshot"] == s.id for r in rows))
            for s in store.corpus("cut").manifest().snapshots]


def test_kill_before_the_rejects_then_changed_sources_loses_no_rejects(embcache_cli, tmp_path):
    source = write_lines(tmp_path / "docs.txt")
    store = tmp_path / "store"
    store.mkdir()
    w = run_watched(lambda: embcache_cli.spawn(store, "ingest", "cut", str(source)), store,
                    Trigger("shard_tmp:rejected", 1, 0.0))
    assert w.killed, "the ingest finished before its rejects were written"
    write_lines(source, extra="a changed source brings a new document\n\n")      # +1 document, +1 reject
    embcache_cli.run(store, "ingest", "cut", str(source), code=3)
    assert reject_gaps(FeatureStore(store)) == []
    assert all(counted == held for _, counted, held in snapshot_rejects(store)), snapshot_rejects(store)
    assert snapshot_rejects(store)[-1][1:] == (11, 11)
    assert verify(FeatureStore(store)).ok


def test_kill_after_the_rejects_then_the_same_sources_ends_as_a_clean_run(embcache_cli, tmp_path):
    source = write_lines(tmp_path / "docs.txt")
    clean = tmp_path / "clean"
    clean.mkdir()
    embcache_cli.run(clean, "ingest", "cut", str(source), code=3)
    store = tmp_path / "store"
    store.mkdir()
    w = run_watched(lambda: embcache_cli.spawn(store, "ingest", "cut", str(source)), store,
                    Trigger("manifest:rejected", 1, 0.0))
    assert w.killed, "the ingest finished before it could be cut"
    embcache_cli.run(store, "ingest", "cut", str(source), code=3)
    embcache_cli.run(store, "gc", "--grace", "0")
    compare_stores(store, clean)
    assert snapshot_rejects(store) == snapshot_rejects(clean) == [("000001", 10, 10)]
