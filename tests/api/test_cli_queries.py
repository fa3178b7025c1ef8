"""The CLI's query commands answer from the warm path without importing what they do not need."""

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

PROBE = """
import sys
from typer.testing import CliRunner
from embcache.cli.main import app
r = CliRunner().invoke(app, sys.argv[1:])
heavy = sorted(m for m in ("torch", "transformers", "gensim", "prefect", "duckdb") if m in sys.modules)
print("RESULT", r.exit_code, ",".join(heavy))
print(r.output)
"""


def run(root, *args):
    done = subprocess.run([sys.executable, "-c", PROBE, "--store", root, *args], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    line = next(l for l in done.stdout.splitlines() if l.startswith("RESULT"))
    _, code, heavy = (line.split(" ") + [""])[:3]
    return int(code), set(filter(None, heavy.split(","))), done.stdout


@pytest.mark.parametrize("args, allowed", [
    (["query", "neighbours", "game", "--k", "3", "--json"], set()),
    (["query", "neighbors", "game", "--k", "3", "--json"], set()),
    (["query", "features", "bert_features", "--corpus", "bbc", "--ids", "tech/001.txt"], set()),
    (["query", "sql", "SELECT count(*) AS n FROM corpora.bbc", "--format", "json"], {"duckdb"}),
    (["query", "similar", "bbc", "the team won", "--k", "2", "--json"], set()),     # the ONNX export, no torch
])
def test_query_commands_import_only_what_they_need(built_store, args, allowed):
    code, heavy, out = run(built_store[0], *args)
    assert code == 0, out
    assert heavy <= allowed, f"{args[:2]} imported {heavy - allowed}"


def test_query_neighbors_matches_gensim(built_store):
    from embcache.stages.word2vec_eval import keyed_vectors, neighbours
    from embcache.storage import FeatureStore
    code, _, out = run(built_store[0], "query", "neighbors", "game", "--k", "4", "--json")
    got = json.loads(out.split("\n", 1)[1])
    want = neighbours(keyed_vectors(FeatureStore(built_store[0])), "game", 4)
    assert [g["word"] for g in got] == [w for w, _ in want]


EMBCACHE = os.path.join(os.path.dirname(sys.executable), "embcache")     # the console script


def console(root, *args):
    return subprocess.run([EMBCACHE, "--store", str(root), *args], capture_output=True, text=True, timeout=300)


def test_edited_matrix_metadata_is_rebuilt_not_a_crash(built_store, tmp_path):
    """Issue 26 item 6: "rows" edited in derived/matrix-vector-*.json made `query similar` exit 70 (IndexError)."""
    root = tmp_path / "store"
    shutil.copytree(built_store[0], root)
    before = console(root, "query", "similar", "bbc", "the team won", "--k", "3", "--json")
    assert before.returncode == 0, before.stderr
    (meta,) = glob.glob(f"{root}/tables/bert_features/*/derived/matrix-vector-*.json")
    text = open(meta).read()
    rows = json.loads(text)["rows"]
    open(meta, "w").write(text.replace(f'"rows": {rows}', f'"rows": {rows - 2}'))
    after = console(root, "query", "similar", "bbc", "the team won", "--k", "3", "--json")
    assert after.returncode == 0 and after.stdout == before.stdout, after.stderr
    assert json.load(open(glob.glob(f"{root}/tables/bert_features/*/derived/matrix-vector-*.json")[0]))["rows"] == rows


def test_a_damaged_shard_is_the_same_error_on_every_path(built_store, tmp_path):
    """Issue 27 item 1: the CLI read Parquet itself, Store.lookup fell back, the server did not."""
    import embcache
    root = tmp_path / "store"
    shutil.copytree(built_store[0], root)
    store = embcache.open(root)
    f = store.features("bbc")
    t = store.feature_store.open("bert_features")
    for path in glob.glob(f"{root}/tables/bert_features/*/derived/*"):
        os.unlink(path)                                   # the matrix must come from the shards again
    shard = t.manifest().shards[0]
    with open(t.shard_path(shard), "r+b") as out:
        out.seek(64)
        out.write(b"\x00\x01\x02")
    fresh = embcache.open(root)
    with pytest.raises(embcache.CorruptShard):
        fresh.similar("bbc", vector=f.vectors[0])
    with pytest.raises(embcache.CorruptShard):
        fresh.lookup(f.doc_ids[:1].tolist(), corpus="bbc")
    for args in (["query", "similar", "bbc", "the team won"],
                 ["query", "features", "bert_features", "--corpus", "bbc", "--ids", f.doc_ids[0]],
                 ["query", "features", "bert_features", "--corpus", "bbc", "--ids", f.doc_ids[0], "--format", "npy",
                  "-o", str(tmp_path / "v.npy")]):
        done = console(root, *args)
        assert done.returncode == 4, (args, done.stderr)                # store damage: exit 4, one line
        assert "Traceback" not in done.stderr and "repair" in done.stderr


def test_unusable_sql_exits_2_with_duckdbs_whole_message(built_store):
    """Issue 31 item 2: an unknown column exited 4 (store) and lost DuckDB's candidate bindings and caret."""
    done = console(built_store[0], "query", "sql", "SELECT nosuch FROM corpora.bbc")
    assert done.returncode == 2, done.stderr
    assert "nosuch" in done.stderr and "Candidate bindings" in done.stderr and "^" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert console(built_store[0], "query", "sql", "SELECT * FROM no_such_table").returncode == 2
