"""Store and query commands against a real store on disk (typer's runner in-process; one real subprocess)."""

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from embcache.cli.main import app
from embcache.storage import FeatureStore, spec
from embcache.storage.query import as_matrix
from tests.storage.conftest import feature_rows, sha

runner = CliRunner()


@pytest.fixture
def root(tmp_path):
    store = FeatureStore(tmp_path / "store")
    t = store.table("bert_features", spec("encode", 1, {"pooling": "mean"}))
    t.write(feature_rows(range(6)))
    store.corpus("news").commit_snapshot(pa.table({"doc_id": [f"d{i}" for i in range(6)],
                                                   "text_sha": [sha(i) for i in range(6)],
                                                   "label": list("aabbcc")}))
    return str(tmp_path / "store")


def cli(root, *args):
    return runner.invoke(app, ["--store", root, *args])


def test_status_json_lists_tables_and_corpora(root):
    r = cli(root, "status", "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert [(t["name"], t["rows"], t["shards"]) for t in s["tables"]] == [("bert_features", 6, 1)]
    assert set(s["tables"][0]) >= {"name", "fingerprint", "rows", "shards", "bytes"}
    assert s["corpora"][0]["name"] == "news" and s["corpora"][0]["documents"] == 6


def test_store_from_environment(root, monkeypatch):
    monkeypatch.setenv("EMBCACHE_STORE", root)
    r = runner.invoke(app, ["status", "--json"])
    assert json.loads(r.stdout)["store"] == os.path.abspath(root)


def test_query_sql_formats(root):
    r = cli(root, "query", "sql", "SELECT label, count(*) AS n FROM corpora.news GROUP BY 1 ORDER BY 1",
            "--format", "json")
    assert json.loads(r.stdout) == [{"label": "a", "n": 2}, {"label": "b", "n": 2}, {"label": "c", "n": 2}]
    r = cli(root, "query", "sql", "SELECT text_sha, vector FROM bert_features LIMIT 1", "--format", "csv")
    header, row = r.stdout.strip().splitlines()
    assert header == '"text_sha","vector"' and json.loads(json.loads(row.split(",", 1)[1]))
    r = cli(root, "query", "sql", "SELECT count(*) AS n FROM bert_features")
    assert r.exit_code == 0 and "6" in r.stdout


def test_query_sql_refuses_writes_with_a_clear_message(root):
    r = cli(root, "query", "sql", f"COPY bert_features TO '{root}/x.csv'")
    assert r.exit_code == 2
    assert "COPY statements are refused" in r.stderr
    assert not os.path.exists(f"{root}/x.csv")


def test_query_features_by_doc_id_and_by_key(root, tmp_path):
    r = cli(root, "query", "features", "bert_features", "--corpus", "news", "--ids", "d4,d1")
    rows = json.loads(r.stdout)
    assert [x["doc_id"] for x in rows] == ["d4", "d1"]
    assert [x["text_sha"] for x in rows] == [sha(4), sha(1)]
    out = tmp_path / "v.npy"
    r = cli(root, "query", "features", "bert_features", "--ids", sha(2), "--ids", sha(0), "--format", "npy",
            "-o", str(out))
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(np.load(out), as_matrix(feature_rows([2, 0])["vector"]))
    out = tmp_path / "v.parquet"
    cli(root, "query", "features", "bert_features", "--ids", sha(3), "--format", "parquet", "-o", str(out))
    assert pq.read_table(out)["text_sha"].to_pylist() == [sha(3)]


def test_query_features_unknown_ids(root):
    r = cli(root, "query", "features", "bert_features", "--corpus", "news", "--ids", "nope")
    assert r.exit_code == 4 and "nope" in r.stderr
    r = cli(root, "query", "features", "bert_features", "--ids", "nope")
    assert r.exit_code == 4 and "1 key(s) not in bert_features" in r.stderr


def test_verify_and_gc(root):
    r = cli(root, "verify")
    assert r.exit_code == 0 and "0 bad" in r.stdout
    t = FeatureStore(root).open("bert_features")
    shard = t.shard_path(t.manifest().shards[0])
    with open(shard, "r+b") as f:
        f.seek(100)
        f.write(b"\xff")
    r = cli(root, "verify")
    assert r.exit_code == 1 and shard in r.stderr.replace("\n", "")
    open(t.shard_path("part-orphan.parquet"), "wb").write(b"x")
    r = cli(root, "gc", "--grace", "0", "--dry-run")
    assert "would remove" in r.stdout and "part-orphan.parquet" in r.stdout
    assert os.path.exists(t.shard_path("part-orphan.parquet"))
    r = cli(root, "gc", "--grace", "0")
    assert r.exit_code == 0 and not os.path.exists(t.shard_path("part-orphan.parquet"))


def test_console_script_runs_without_importing_prefect(root):
    code = ("import sys; from embcache.cli.main import app; "
            "sys.argv = ['embcache', '--store', sys.argv[1], 'status', '--json']\n"
            "try:\n    app()\nexcept SystemExit:\n    pass\n"
            "assert 'prefect' not in sys.modules, 'query commands must not start Prefect'")
    r = subprocess.run([sys.executable, "-c", code, root], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["tables"][0]["rows"] == 6
