"""SQL reads only through the checked views (issue 18.2, 18.5) and within its limits."""

import glob
import os
import shutil

import pyarrow as pa
import pytest

from embcache.storage import CorruptShard, FormatError, QueryLimit, QueryRefused, StoreError, spec
from embcache.storage.query import QueryLimits, sql
from embcache.storage.verified import VERIFIED

from .conftest import feature_rows, sha


@pytest.fixture
def filled(store, features_spec):
    t = store.table("bert_features", features_spec)
    t.write(feature_rows(range(0, 40)))
    t.write(feature_rows(range(40, 100)))
    other = store.table("lengths", spec("length", 1, {}), key="text_sha")
    other.write(pa.table({"text_sha": [sha(i) for i in range(5)], "n": list(range(5))}))
    store.corpus("news").commit_snapshot(pa.table({"doc_id": [f"d{i}" for i in range(100)],
                                                   "text_sha": [sha(i) for i in range(100)]}))
    VERIFIED.forget()
    return store


def shard_files(store, table):
    return sorted(glob.glob(f"{store.root}/tables/{table}/*/shards/*.parquet"))


@pytest.mark.parametrize("statement", [
    "SELECT count(*) AS n FROM read_parquet('{shard}')",
    "SELECT count(*) AS n FROM parquet_scan(['{shard}'])",
    "SELECT count(*) AS n FROM '{shard}'",
    "SELECT * FROM parquet_metadata('{shard}')",
    "SELECT count(*) AS n FROM query('SELECT * FROM read_parquet(''{shard}'')')",
    "WITH x AS (SELECT * FROM read_parquet('{root}/tables/*/*/shards/*.parquet')) SELECT count(*) FROM x",
    "SELECT (SELECT count(*) FROM read_parquet('{shard}')) AS n",
])
def test_table_functions_over_store_files_are_refused(filled, statement):
    query = statement.format(shard=shard_files(filled, "bert_features")[0], root=filled.root)
    with pytest.raises(QueryRefused, match="sandbox"):
        sql(filled, query)


def test_query_table_reads_only_the_checked_views(filled):
    assert sql(filled, "SELECT count(*) AS n FROM query_table('bert_features')")["n"].to_pylist() == [100]
    with pytest.raises(StoreError):
        sql(filled, f"SELECT * FROM query_table('{shard_files(filled, 'bert_features')[0]}')")


def test_an_orphan_shard_is_not_counted_and_cannot_be_read(filled):
    shard = shard_files(filled, "bert_features")[0]
    orphan = shard.rsplit("/", 1)[0] + "/part-orphan.parquet"
    shutil.copy(shard, orphan)                               # an uncommitted file beside the shards
    assert sql(filled, "SELECT count(*) AS n FROM bert_features")["n"].to_pylist() == [100]
    with pytest.raises(QueryRefused):
        sql(filled, f"SELECT count(*) FROM read_parquet('{orphan}')")


def flip_a_byte(path: str, offset: int = 200) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def test_a_damaged_shard_fails_the_query_that_reads_it(filled):
    flip_a_byte(shard_files(filled, "bert_features")[0])
    with pytest.raises(CorruptShard):
        sql(filled, "SELECT count(*) FROM bert_features")
    assert sql(filled, "SELECT count(*) AS n FROM lengths")["n"].to_pylist() == [5]


def test_a_shard_damaged_after_its_first_check_is_caught_at_the_next_statement(filled):
    assert sql(filled, "SELECT count(*) AS n FROM bert_features")["n"].to_pylist() == [100]
    path = shard_files(filled, "bert_features")[0]
    st = os.stat(path)
    flip_a_byte(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))   # the write moved mtime, however coarse
    with pytest.raises(CorruptShard):
        sql(filled, "SELECT count(*) FROM bert_features")


@pytest.mark.parametrize("damaged", ["manifest.json", "current.json"])
def test_a_damaged_manifest_fails_only_the_queries_that_read_that_table(filled, damaged):
    (path,) = glob.glob(f"{filled.root}/tables/lengths/**/{damaged}", recursive=True)
    with open(path, "w") as f:
        f.write('{"format": "embcache.table_ma')                          # truncated
    assert sql(filled, "SELECT count(*) AS n FROM bert_features")["n"].to_pylist() == [100]
    assert sql(filled, "SELECT count(*) AS n FROM corpora.news")["n"].to_pylist() == [100]
    with pytest.raises(FormatError):
        sql(filled, "SELECT * FROM lengths")
    cat = sql(filled, "SELECT name, rows, error FROM embcache_tables ORDER BY name").to_pylist()
    assert cat[0] == {"name": "bert_features", "rows": 100, "error": None}
    assert cat[1]["name"] == "lengths" and damaged in cat[1]["error"]


def test_a_damaged_corpus_manifest_fails_only_queries_of_that_corpus(filled):
    with open(f"{filled.root}/corpora/news/manifest.json", "w") as f:
        f.write("not json")
    assert sql(filled, "SELECT count(*) AS n FROM bert_features")["n"].to_pylist() == [100]
    with pytest.raises(FormatError):
        sql(filled, "SELECT * FROM corpora.news")
    got = sql(filled, "SELECT corpus, error FROM embcache_snapshots").to_pylist()
    assert got[0]["corpus"] == "news" and "manifest.json" in got[0]["error"]


def test_a_self_cross_join_is_bounded(filled):
    cross = "SELECT a.text_sha, b.vector FROM bert_features a, bert_features b, bert_features c"
    with pytest.raises(QueryLimit, match="more than 1,000 rows"):
        sql(filled, cross, QueryLimits(max_rows=1000))
    slow = "SELECT count(*) FROM bert_features a, bert_features b, bert_features c, range(100000) r"
    with pytest.raises(QueryLimit, match="time limit"):
        sql(filled, slow, QueryLimits(timeout_s=0.5))
