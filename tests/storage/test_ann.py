"""The vector index (storage/ann.py, index_build.py, index_files.py): IVF-SQ8 over a table's
matrix, re-ranked exactly; new rows in delta segments; damage seen and rebuilt."""

import glob
import json
import logging
import os

import numpy as np
import pyarrow as pa
import pytest
from embcache.storage import FeatureStore, spec
from embcache.storage.ann import (
    WARM_INDEXES,
    AnnConfig,
    WarmIndexes,
    build_index,
    search,
)
from embcache.storage.compact import CompactConfig, compact
from embcache.storage.index_files import index_problems
from embcache.storage.matrix import WarmMatrices

WARM = WarmMatrices()            # this module's own matrix cache (each embcache.Store owns one)
from embcache.storage.verified import VERIFIED

from .conftest import sha

faiss = pytest.importorskip("faiss")
DIM, CLUSTERS = 16, 40
CONFIG = AnnConfig(min_rows=0)


def clustered(ids, seed: int = 0) -> np.ndarray:
    """(len(ids), DIM): row i is one of 40 fixed centres plus noise, a function of i only."""
    centres = np.random.default_rng(seed).standard_normal((CLUSTERS, DIM)).astype(np.float32)
    out = np.empty((len(ids), DIM), np.float32)
    for j, i in enumerate(ids):
        rng = np.random.default_rng(1_000 + i)
        out[j] = centres[rng.integers(CLUSTERS)] + 0.5 * rng.standard_normal(DIM)
    return out


def rows(ids) -> pa.Table:
    x = clustered(list(ids))
    return pa.table({"text_sha": pa.array([sha(i) for i in ids], pa.string()),
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), DIM)})


@pytest.fixture
def table(tmp_path):
    t = FeatureStore(tmp_path / "store").table("bert_features", spec("encode", 1, {"n": 1}))
    for lo in range(0, 3000, 500):
        t.write(rows(range(lo, lo + 500)))
    VERIFIED.forget()
    WARM.forget()
    WARM_INDEXES.forget()
    return t


def files(t, pattern="ann-*"):
    return sorted(os.path.basename(p) for p in glob.glob(f"{t.dir}/derived/{pattern}"))


def segment_file(t, role):
    (meta,) = [json.load(open(p)) for p in glob.glob(f"{t.dir}/derived/ann-vector-*.json")]
    return next(f"{t.dir}/derived/{s['file']}" for s in meta["segments"] if s["role"] == role)


def queries(n=30, seed=7):
    """Stored rows plus a little noise: what a query of the same kind of text looks like."""
    rng = np.random.default_rng(seed)
    return clustered(rng.integers(0, 3000, n)) + 0.05 * rng.standard_normal((n, DIM)).astype(np.float32)


def recall(a, b) -> float:
    return float(np.mean([len(set(x) & set(y)) / len(y) for x, y in zip(a, b)]))


def flip_byte(path, at=-100):
    with open(path, "r+b") as f:
        f.seek(at, os.SEEK_END)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0xFF]))


def test_indexed_search_agrees_with_exact_and_scores_are_exact(table):
    done = build_index(table, WARM.get(table), CONFIG)
    assert done["action"] == "built" and done["recall"] >= CONFIG.target_recall and done["nprobe"] < done["nlist"]
    m = WARM.get(table)
    q = queries()
    got, scores, how = search(table, m, q, 10)
    want, _, _ = search(table, m, q, 10, exact=True)
    assert how == "indexed" and recall(got, want) >= 0.95
    qn = m.normalized(q)
    for i in range(len(q)):                          # re-ranked: the exact cosine, best first
        np.testing.assert_allclose(scores[i], m.scores(qn[i:i + 1], got[i])[0], rtol=1e-6)
        assert list(scores[i]) == sorted(scores[i], reverse=True)


def test_new_rows_go_to_a_delta_and_the_base_is_never_rewritten(table):
    build_index(table, WARM.get(table), CONFIG)
    base = segment_file(table, "base")
    before = os.stat(base)
    table.write(rows(range(3000, 3030)))                       # +1 %
    m = WARM.get(table)
    new = clustered([3012])
    got, _, how = search(table, m, new, 1)                     # not indexed yet: scanned exactly beside it
    assert how == "indexed" and m.key_of(got[0]) == [sha(3012)]
    done = build_index(table, m, CONFIG)
    assert (done["action"], done["added"], done["segments"]) == ("extended", 30, 2)
    after = os.stat(base)
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    WARM_INDEXES.forget()
    ann = WARM_INDEXES.get(table, m)
    assert ann.rows == 3030 and [s.ntotal for s in ann.segments] == [3000, 30]     # base, delta
    assert m.key_of(search(table, m, new, 1)[0][0]) == [sha(3012)]
    got, _, how = search(table, m, new, 3, rows=np.arange(0, 3030, 2))        # both segments, restricted
    assert how == "indexed" and m.key_of(got[0])[0] == sha(3012) and set(got[0]) <= set(range(0, 3030, 2))
    table.write(rows(range(3030, 4000)))                        # deltas past merge_fraction: one new base
    done = build_index(table, WARM.get(table), CONFIG)
    assert (done["action"], done["segments"]) == ("merged", 1)
    assert not os.path.exists(base) and len(files(table, "ann-vector-seg-*")) == 2   # template + base


def test_compaction_keeps_the_index_when_rows_keep_their_order(table):
    build_index(table, WARM.get(table), CONFIG)
    segments = files(table, "ann-vector-seg-*")
    assert compact(table, CompactConfig(min_small=2)).merged == 6
    m = WARM.get(table)
    assert build_index(table, m, CONFIG)["action"] == "reused"
    assert files(table, "ann-vector-seg-*") == segments and len(files(table, "ann-vector-*.json")) == 1
    assert search(table, m, queries(3), 5)[2] == "indexed"


@pytest.mark.parametrize("share", [0.02, 0.5])
def test_a_restricted_search_returns_only_allowed_rows(table, share):
    build_index(table, WARM.get(table), CONFIG)
    m = WARM.get(table)
    allowed = np.sort(np.random.default_rng(3).choice(len(m), int(len(m) * share), replace=False))
    q = queries(10)
    got, _, how = search(table, m, q, 5, rows=allowed)
    want, _ = m.topk(q, 5, allowed)
    assert set(got.ravel()) <= set(allowed) and recall(got, want) >= 0.9
    assert how == ("exact" if share < 0.05 else "indexed")       # a few rows: scanning them is cheaper


def test_a_changed_index_file_is_seen_searched_around_and_rebuilt(table, caplog):
    build_index(table, WARM.get(table), CONFIG)
    base = segment_file(table, "base")
    flip_byte(base)
    assert [(os.path.basename(p), why) for p, _, why in index_problems(table, full=False)[1]] == \
        [(os.path.basename(base), "sha256 does not match the index (bytes changed on disk)")]
    VERIFIED.forget()
    m = WARM.get(table)
    with caplog.at_level(logging.WARNING, "embcache.storage.ann"):
        assert search(table, m, queries(2), 3, indexes=WarmIndexes())[2] == "exact"
    assert "damaged" in caplog.text and os.path.basename(base) in caplog.text
    done = build_index(table, m, CONFIG)                       # no --rebuild needed
    assert done["action"] == "rebuilt" and "sha256" in done["damaged"]
    assert index_problems(table, full=True)[1] == [] and not os.path.exists(base)
    assert search(table, m, queries(2), 3, indexes=WarmIndexes())[2] == "indexed"


def test_an_edited_index_json_is_damage(table):
    build_index(table, WARM.get(table), CONFIG)
    (path,) = glob.glob(f"{table.dir}/derived/ann-vector-*.json")
    meta = json.load(open(path))
    meta["rows"] -= 2
    open(path, "w").write(json.dumps(meta))
    (bad,) = index_problems(table, full=False)[1]
    assert bad[0] == path and "own sha256" in bad[2]
    m = WARM.get(table)
    assert search(table, m, queries(2), 3, indexes=WarmIndexes())[2] == "exact"
    assert build_index(table, m, CONFIG)["action"] == "rebuilt"
    assert index_problems(table, full=True)[1] == []


def test_an_index_of_the_older_format_is_replaced_not_reported(table):
    m = WARM.get(table)
    old = f"{table.dir}/derived/ann-vector-{m.setkey}"
    open(f"{old}.json", "w").write(json.dumps({"format": "embcache.ann_index", "format_version": 1}))
    open(f"{old}.faiss", "wb").write(b"hnsw")
    assert index_problems(table)[1] == [] and search(table, m, queries(1), 3)[2] == "exact"
    assert build_index(table, m, CONFIG)["action"] == "built"
    assert not os.path.exists(f"{old}.faiss") and len(files(table, "ann-vector-*.json")) == 1
