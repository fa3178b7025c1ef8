"""Issue 18, items 4 and 5: `repair` moves damaged files aside, drops them from their
manifests under the lock, rebuilds what can be rebuilt; `status` shows damage and the rest.

Real Parquet shards written through Table.write; damage is made by changing bytes on disk."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from embcache.storage import CorruptShard
from embcache.storage.maintenance import gc, verify
from embcache.storage.repair import repair

from .conftest import feature_rows, sha


def flip(path: str) -> None:
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0x10
    Path(path).write_bytes(bytes(data))


def sorted_rows(table) -> list[dict]:
    rows = table.read()
    return rows.take(pc.sort_indices(rows, [("text_sha", "ascending")])).to_pylist()


def four_shards(store, features_spec):
    t = store.table("bert_features", features_spec)
    for lo in (0, 10, 20, 30):
        t.write(feature_rows(range(lo, lo + 10)))
    return t


@pytest.mark.parametrize("how", ["bit-flipped", "truncated", "deleted"])
def test_damaged_shard_is_moved_aside_and_its_rows_recomputed_to_a_clean_store(store, features_spec, how,
                                                                                 tmp_path):
    t = four_shards(store, features_spec)
    clean = sorted_rows(t)
    victim = t.manifest().shards[1]
    path = t.shard_path(victim)
    original = Path(path).read_bytes()
    if how == "bit-flipped":
        flip(path)
    elif how == "truncated":
        Path(path).write_bytes(original[:100])
    else:
        os.remove(path)
    damaged = Path(path).read_bytes() if how != "deleted" else None
    with pytest.raises(CorruptShard):          # before: a read through the manifest stops at it
        t.read()

    report = repair(store)
    assert report.ok and not os.path.exists(path)
    assert [p for p, what in report.actions] == [store.fs.relative(path)] and "10 rows" in report.actions[0][1]
    if damaged is not None:                    # evidence kept, byte for byte
        kept = Path(store.root) / report.aside / store.fs.relative(path)
        assert kept.read_bytes() == damaged
        assert json.loads((Path(store.root) / report.aside / "repair.json").read_text())["format"] == \
            "embcache.repair_report"
    assert verify(store).ok
    lost = [sha(i) for i in range(10, 20)]
    assert t.missing([sha(i) for i in range(40)]).to_pylist() == lost      # exactly the lost rows
    t.write(feature_rows(range(0, 40)))                                   # the next run: only those commit
    assert sorted_rows(t) == clean
    assert repair(store).actions == []                                    # nothing left to repair


def test_truncated_manifest_is_rebuilt_from_its_shards(store, features_spec):
    t = four_shards(store, features_spec)
    before = t.manifest()
    clean = sorted_rows(t)
    text = Path(t.manifest_path).read_text()
    Path(t.manifest_path).write_text(text[: len(text) // 3])
    assert not verify(store).ok

    report = repair(store)
    assert report.ok, report.unrepaired
    m = t.manifest()
    assert [s.file for s in m.shards] == [s.file for s in before.shards]
    assert [(s.rows, s.bytes, s.sha256) for s in m.shards] == [(s.rows, s.bytes, s.sha256) for s in before.shards]
    assert m.key == "text_sha" and m.arrow_schema().equals(before.arrow_schema())
    assert {c: (v["codec"], v["encoding"]) for c, v in m.codecs.items()} == \
        {c: (v["codec"], v["encoding"]) for c, v in before.codecs.items()}
    assert sorted_rows(t) == clean and verify(store).ok
    assert (Path(store.root) / report.aside / store.fs.relative(t.manifest_path)).read_text() == text[: len(text) // 3]


def test_rebuilt_manifest_leaves_out_an_orphan_whose_keys_are_committed(store, features_spec):
    t = four_shards(store, features_spec)
    orphan = t.shard_path("part-orphan.parquet")
    Path(orphan).write_bytes(Path(t.shard_path(t.manifest().shards[0])).read_bytes())   # same keys again
    os.utime(orphan, (2e9, 2e9))                                                       # newest
    Path(t.manifest_path).write_text("{")
    assert repair(store).ok
    assert t.manifest().rows == 40 and "part-orphan.parquet" not in {s.file for s in t.manifest().shards}
    assert len(set(t.keys().to_pylist())) == 40


def test_damaged_pointer_is_pointed_at_the_committed_table(store, features_spec):
    t = four_shards(store, features_spec)
    pointer = Path(store.fs.path("tables", "bert_features", "current.json"))
    pointer.write_text(pointer.read_text()[:10])
    assert repair(store).ok
    assert store.open("bert_features").fingerprint == t.fingerprint and verify(store).ok


def test_damaged_snapshot_is_dropped_and_ids_are_never_reused(store):
    c = store.corpus("news")
    for n in (1, 2, 3):
        c.commit_snapshot(pa.table({"doc_id": [f"d{i}" for i in range(n)], "text_sha": [sha(i) for i in range(n)]}))
    middle = c.manifest().snapshots[1]
    flip(c.snapshot_path(middle))
    report = repair(store)
    assert report.ok and [s.id for s in c.manifest().snapshots] == ["000001", "000003"]
    assert verify(store).ok
    snap = c.commit_snapshot(pa.table({"doc_id": ["x"], "text_sha": [sha(9)]}))
    assert snap.id == "000004"
    flip(c.snapshot_path(snap))                       # the last one: its id is not given again either
    assert repair(store).ok and c.snapshot().id == "000003"
    assert c.commit_snapshot(pa.table({"doc_id": ["y"], "text_sha": [sha(8)]})).id == "000005"


def test_unreadable_corpus_manifest_is_rebuilt_from_its_snapshot_files(store):
    c = store.corpus("news")
    for n in (1, 2):
        c.commit_snapshot(pa.table({"doc_id": [f"d{i}" for i in range(n)], "text_sha": [sha(i) for i in range(n)]}))
        os.utime(c.snapshot_path(c.snapshot()), (1e9 + n, 1e9 + n))
    Path(c.manifest_path).write_text("not json")
    assert repair(store).ok
    assert [s.rows for s in c.manifest().snapshots] == [1, 2] and c.read().num_rows == 2 and verify(store).ok


def test_dry_run_changes_nothing(store, features_spec):
    t = four_shards(store, features_spec)
    flip(t.shard_path(t.manifest().shards[0]))
    listing = sorted(p for p in Path(store.root).rglob("*"))
    report = repair(store, dry_run=True)
    assert report.actions and sorted(p for p in Path(store.root).rglob("*")) == listing
    assert not verify(store).ok


def test_gc_keeps_what_repair_moved_aside(store, features_spec):
    t = four_shards(store, features_spec)
    flip(t.shard_path(t.manifest().shards[0]))
    report = repair(store)
    gc(store, grace_seconds=0)
    assert (Path(store.root) / report.aside / "repair.json").exists()


# -- status (item 5) ---------------------------------------------------------------------------
def test_status_shows_damaged_tables_and_the_rest(store, features_spec):
    t = four_shards(store, features_spec)
    other = store.table("documents", {"stage": "documents", "version": 1}, key="text_sha")
    other.write(feature_rows(range(3)))
    store.corpus("news").commit_snapshot(pa.table({"doc_id": ["a"], "text_sha": [sha(0)]}))
    Path(t.manifest_path).write_text("{")
    s = store.status()
    by_name = {r["name"]: r for r in s["tables"]}
    assert by_name["documents"]["rows"] == 3 and not by_name["documents"]["damaged"]
    assert "not valid JSON" in by_name["bert_features"]["damaged"]
    assert s["corpora"][0]["documents"] == 1


def test_status_notices_a_deleted_shard_file(store, features_spec):
    t = four_shards(store, features_spec)
    os.remove(t.shard_path(t.manifest().shards[2]))
    row = store.status()["tables"][0]
    assert row["rows"] == 40 and "1 of 4 shard files missing" in row["damaged"]


def test_status_shows_a_damaged_pointer_and_corpus(store, features_spec):
    four_shards(store, features_spec)
    c = store.corpus("news")
    c.commit_snapshot(pa.table({"doc_id": ["a"], "text_sha": [sha(0)]}))
    Path(c.manifest_path).write_text("{")
    pointer = Path(store.fs.path("tables", "bert_features", "current.json"))
    pointer.write_text("{")
    s = store.status()
    assert "not valid JSON" in s["corpora"][0]["damaged"]
    assert s["tables"][0]["rows"] == 40 and s["tables"][0]["current"] is None
    assert [d["path"] for d in s["damaged"]] == [str(pointer)]


class _Process:
    """The real `embcache` console script as store_watch.run_watched drives a child: by pidfd."""

    def __init__(self, args: list[str]):
        import subprocess
        import sys
        import time
        self.args = args
        self.proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "embcache"), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.pidfd = os.pidfd_open(self.proc.pid)
        self.started, self.ended = time.monotonic(), None

    def kill(self) -> None:
        self.proc.kill()

    def output(self) -> str:
        return ""

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)


def test_a_killed_repair_keeps_its_record(store, features_spec):
    """Issue 26 item 7: repair killed after its first manifest write left damaged/<stamp>/ without
    repair.json, and a re-run said "nothing to repair": the record of why files moved was lost."""
    from tests.reliability.store_watch import Trigger, run_watched
    t = four_shards(store, features_spec)
    others = [store.table(name, {**features_spec, "name": name}) for name in ("clusters", "labels", "projections")]
    for other in others:
        for lo in (0, 10, 20):
            other.write(feature_rows(range(lo, lo + 10)))
    victims = [t.shard_path(t.manifest().shards[1])] + [o.shard_path(o.manifest().shards[0]) for o in others]
    for path in victims:
        flip(path)
    root = Path(store.root)
    w = run_watched(lambda: _Process(["--store", str(root), "repair"]), root, Trigger("manifest:bert_features"))
    assert w.killed, "repair ended before the kill: nothing tested"
    (aside,) = (root / "damaged").iterdir()
    journal = json.loads((aside / "repair.json").read_text())
    moved = [path for path, what in journal["actions"] if what.startswith("moved aside")]
    assert os.path.relpath(victims[0], root) in moved and journal["complete"] is False
    for path in moved:
        assert (aside / path).exists() or (root / path).exists()       # moved, or about to be (re-run does it)
    report = repair(store)                                             # the re-run finishes the job
    assert report.ok and verify(store).ok
    assert (aside / "repair.json").exists()                            # and the first record stays
