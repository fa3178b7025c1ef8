"""The CLI's query commands answer from the warm path without importing what they do not need."""

import json
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
