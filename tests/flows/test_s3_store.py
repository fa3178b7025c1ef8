"""ingest → featurize bert → query, all through the CLI against s3://bucket/store on a local moto server."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from embcache.cli.main import app
from tests.flows.test_featurize import TEXTS, stored_vectors, write_corpus
from tests.s3server import moto_s3

pytestmark = pytest.mark.usefixtures("prefect_engine")
runner = CliRunner()


def cli(store, *args):
    r = runner.invoke(app, ["--store", store, *args])
    assert r.exit_code == 0, r.output
    return r.stdout


def test_ingest_featurize_and_query_an_s3_store(tmp_path, tiny_bert):
    docs = tmp_path / "docs"
    write_corpus(docs, TEXTS)
    local = str(tmp_path / "local")
    with moto_s3("bucket"):
        for store in ("s3://bucket/store", local):
            cli(store, "ingest", "news", str(docs), "--format", "files")
            out = cli(store, "featurize", "bert", "news", "--model", tiny_bert, "--max-length", "16",
                      "--shard-docs", "2")
            assert "encoded 5" in out
        s3 = "s3://bucket/store"
        got, want = stored_vectors(s3), stored_vectors(local)
        assert got.keys() == want.keys()
        for doc in want:
            np.testing.assert_array_equal(got[doc], want[doc])             # same code, same bytes
        rows = json.loads(cli(s3, "query", "features", "bert_features", "--corpus", "news", "--ids", "c.txt,a.txt"))
        assert [r["doc_id"] for r in rows] == ["c.txt", "a.txt"]
        np.testing.assert_array_equal(np.asarray(rows[0]["vector"], np.float32), want["c.txt"])
        counts = json.loads(cli(s3, "query", "sql", "SELECT count(*) AS n FROM corpora.news c JOIN bert_features f "
                                                    "USING (text_sha)", "--format", "json"))
        assert counts == [{"n": 5}]
        hits = json.loads(cli(s3, "query", "similar", "news", "the cat sat on the mat", "--k", "2", "--json"))
        assert hits[0]["doc_id"] == "a.txt" and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
        status = json.loads(cli(s3, "status", "--json"))
        assert status["store"] == s3 and {t["name"] for t in status["tables"]} >= {"bert_features", "documents"}
        assert "0 bad" in cli(s3, "verify")
        again = cli(s3, "featurize", "bert", "news", "--model", tiny_bert, "--max-length", "16")
        assert "encoded 0 (cached 5)" in again                              # the cache works on S3 too
