"""Issue 31 item 2: a mistyped corpus, table, head or config key gets "did you mean ...?",
never an invitation to create the misspelled thing; through the real console script, each a
one-line error before Prefect starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from embcache.cli.app import EXIT_STORE, EXIT_USAGE
from embcache.storage import FeatureStore

EMBCACHE = str(Path(sys.executable).with_name("embcache"))      # the console script


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A store with the corpus `tweets`, the table `bert_features` and the head `topics`."""
    root = tmp_path_factory.mktemp("names") / "s"
    fs = FeatureStore(root)
    fs.corpus("tweets").commit_snapshot(pa.table({"doc_id": ["d1"], "text_sha": ["a" * 64]}))
    fs.table("bert_features", {"test": "names"}).write(pa.table({"text_sha": ["a" * 64], "vector": [[0.5, 1.0]]}))
    fs.models.put("head", "topics", {"head.json": b"{}"}, {"corpus": "tweets"})
    (root.parent / "run.toml").write_text('[bert]\nmax_lenght = 128\n')
    return root


@pytest.mark.parametrize("args, code, says", [
    (["featurize", "bert", "tweet"], EXIT_STORE, "no corpus 'tweet' in this store; did you mean 'tweets'?"),
    (["compact", "bert_feature"], EXIT_STORE, "no table named 'bert_feature'"),
    (["evaluate", "head", "topic"], EXIT_STORE, "no saved head named 'topic'; did you mean 'topics'?"),
    (["run", "run.toml"], EXIT_USAGE, "[bert]: unknown key(s) ['max_lenght']: did you mean 'max_length'?"),
], ids=["corpus", "table", "head", "config key"])
def test_a_close_name_is_suggested(store, args, code, says):
    r = subprocess.run([EMBCACHE, "--store", str(store), *args], cwd=store.parent, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == code, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and says in r.stderr, r.stderr
    assert "ingest it first" not in r.stderr and "Traceback" not in r.stderr
    if args[0] == "compact":
        assert "did you mean 'bert_features'?" in r.stderr


def test_a_name_like_none_keeps_the_plain_advice(store):
    r = subprocess.run([EMBCACHE, "--store", str(store), "featurize", "bert", "news"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == EXIT_STORE
    assert "ingest it first (embcache ingest news SOURCES...); corpora here: tweets" in r.stderr, r.stderr
    assert "did you mean" not in r.stderr
