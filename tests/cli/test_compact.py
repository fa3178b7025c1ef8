"""`embcache compact [TABLE]`: one line per table compacted; a missing table is one line, exit 4."""

from typer.testing import CliRunner

from embcache.cli.main import app
from embcache.storage import FeatureStore
from tests.storage.test_compact import many_shards

runner = CliRunner()


def test_compact_command_merges_and_names_what_it_did(tmp_path):
    from embcache.storage import spec
    store = FeatureStore(tmp_path / "store")
    many_shards(store, spec("encode", 1, {"pooling": "mean"}), 30)
    before = store.open("bert_features").read()
    r = runner.invoke(app, ["--store", str(store.root), "compact", "bert_features", "--max-rows", "100"])
    assert r.exit_code == 0, r.output
    assert "30 shards -> 3" in r.output and "compacted 30 shards" in r.output
    assert store.open("bert_features").read().equals(before)
    r = runner.invoke(app, ["--store", str(store.root), "compact"])          # every table, default targets
    assert r.exit_code == 0 and "3 shards -> 1" in r.output
    r = runner.invoke(app, ["--store", str(store.root), "compact"])
    assert r.exit_code == 0 and "nothing to compact" in r.output
    assert store.open("bert_features").read().equals(before)
    r = runner.invoke(app, ["--store", str(store.root), "compact", "nosuch"])
    assert r.exit_code == 4 and "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
