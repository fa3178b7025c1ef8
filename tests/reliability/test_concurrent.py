"""Two real `embcache` processes writing the same corpus and tables at once.

Both start together (forked within milliseconds) on the same store: two `ingest` of
the same sources, two `featurize bert`, two `featurize word2vec`. Each must finish, or
fail with a clear message about the commit lock. Then the store must equal one clean
run's: the same keys, each committed once; bit-identical rows wherever a shard has the
clean run's keys (a writer that plans after the other committed some shards may group
the rest otherwise: word2vec examples are then other draws, vectors agree within 1e-5);
one snapshot, with the clean run's content (two ingests of the same content at once
used to commit two); no file left behind even before gc; `embcache verify` clean.
"""

from __future__ import annotations

import re
import select
import time
from collections import Counter

import pytest

from embcache.storage import FeatureStore

from .store_compare import compare_stores, interrupted_commits, unaccounted_files
from .store_watch import StoreWatch

# The tables each command writes, and the one whose commits both processes race for.
RACED = {"ingest": "manifest:documents", "bert": "manifest:bert_features", "word2vec": "manifest:w2v_examples"}
LOCK_MESSAGE = "held the commit lock"   # storage.errors.LockTimeout, as the CLI prints it
# The table whose rows each command reports committing, and how its summary line says so.
COUNTED = {"ingest": ("documents", r"\(([\d,]+)\s+new\s+texts\)"),
           "bert": ("bert_features", r"encoded\s+([\d,]+)\s+\(cached"),
           "word2vec": ("w2v_examples", r"cached\):\s+([\d,]+)\s+rows")}


@pytest.mark.parametrize("command", ["ingest", "bert", "word2vec"])
def test_two_writers_at_once_equal_one_clean_run(command, fault_runs, embcache_cli, tmp_path):
    args = fault_runs.commands[command]
    store = fault_runs.fresh_store(command, tmp_path / "store")
    watch = StoreWatch(store)
    procs = [embcache_cli.spawn(store, *args), embcache_cli.spawn(store, *args)]
    commits, ended, events = [], {}, Counter()
    try:
        deadline = time.monotonic() + 300
        while len(ended) < 2 and time.monotonic() < deadline:
            live = [p for p in procs if p.pid not in ended]
            ready = select.select([watch.fd, *(p.pidfd for p in live)], [], [], 1.0)[0]
            now = time.monotonic()
            for name in watch.read():
                events[name] += 1
                if name == RACED[command]:
                    commits.append(now)
            for p in live:
                if p.pidfd in ready:
                    ended[p.pid] = now
    finally:
        watch.close()
    codes = [p.wait(60) for p in procs]
    outputs = [p.output() for p in procs]

    # Both finish, or one fails saying that the other held the lock; never both fail.
    ok = [code == fault_runs.codes[command] for code in codes]
    for code, out, fine in zip(codes, outputs, ok):
        if not fine:
            assert code == 4 and LOCK_MESSAGE in out, f"exit {code}, not a lock message:\n{out[-3000:]}"
    assert any(ok), outputs
    # They really overlapped: both were running when the raced table got its first commit.
    assert commits, f"no commit of {RACED[command]} was seen"
    assert all(p.started < commits[0] < ended[p.pid] for p in procs), (
        f"not concurrent: started {[p.started for p in procs]}, first commit {commits[0]}, ended {ended}")

    # Every row was committed by exactly one of them: the rows each says it committed add
    # up to the table's. (Whether both also computed some shard, the loser's copy dropped
    # under the lock, depends on how far apart the two got: reported, not asserted.)
    table, pattern = COUNTED[command]
    counted = [int(re.search(pattern, out).group(1).replace(",", "")) for out in outputs]
    final = FeatureStore(store).open(table).manifest().rows
    assert sum(counted) == final, f"the two say they committed {counted} rows of {table}, which has {final}"
    tables = {name.split(":", 1)[1] for name in events if name.startswith("manifest:")}
    raced = [t for t in sorted(tables) if events[f"shard:{t}"] > events[f"manifest:{t}"]]
    print(f"{command}: exit {codes}, {table} rows committed {counted}, same shard computed by both "
          f"in {raced or 'no table'}")

    assert interrupted_commits(store) == [], "a writer that lost a race left its files behind"
    assert unaccounted_files(store) == []
    compare_stores(store, fault_runs.clean[command])           # one snapshot, as a clean run commits
    embcache_cli.run(store, "gc", "--grace", "0")
    _, out = embcache_cli.run(store, "verify")
    assert " 0 bad" in out, out
    compare_stores(store, fault_runs.clean[command])


def test_a_snapshot_checked_under_the_lock_is_committed_once(tmp_path):
    """The interleaving behind two snapshots: both ingests saw no current snapshot, then
    both commit the same content; the second must get the first's snapshot back."""
    import pyarrow as pa

    corpus = FeatureStore(tmp_path / "store").corpus("faults")
    docs = pa.table({"doc_id": ["a", "b"], "text_sha": ["1" * 64, "2" * 64]})
    stats = {"content_sha256": "same"}
    first = corpus.commit_snapshot(docs, stats=stats, same_as_current="content_sha256")
    second = corpus.commit_snapshot(docs, stats=stats, same_as_current="content_sha256")
    assert second == first and len(corpus.manifest().snapshots) == 1
    assert interrupted_commits(tmp_path / "store") == []          # the loser's file is gone
    other = corpus.commit_snapshot(docs, stats={"content_sha256": "changed"}, same_as_current="content_sha256")
    assert other.id == "000002"
