"""A run that finds nothing changed answers without Prefect; anything changed runs the flow.
Also: a run compacts a corpus's tables once small shards pile up (real engine, tiny BERT)."""

import json
import os
import time

import pytest

from tests.run_configs import write_run_config
from typer.testing import CliRunner

from embcache.cli.main import app
from embcache.storage import FeatureStore

pytestmark = pytest.mark.usefixtures("prefect_engine")
runner = CliRunner()
HOUR_AGO = time.time() - 3600


def write_docs(folder, name, texts):
    path = folder / name
    path.write_text("".join(json.dumps({"text": t, "topic": t.split()[0]}) + "\n" for t in texts))
    os.utime(path, (HOUR_AGO, HOUR_AGO))      # older than the ingest's racy window


def run(config, *extra):
    r = runner.invoke(app, ["run", str(config), "--json", *extra])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_bert):
    tmp = tmp_path_factory.mktemp("unchanged")
    docs = tmp / "docs"
    docs.mkdir()
    for i in range(3):
        write_docs(docs, f"part-{i}.jsonl", [f"{w} market news item {i} {j}" for j in range(4) for w in ("sport", "tech")])
    config = tmp / "run.toml"
    write_run_config(config, store=tmp / "store", model=tiny_bert, corpus="news",
                     sources=[{"path": f"{docs}/*.jsonl", "format": "jsonl", "label_column": "topic"}],
                     word2vec={"min_count": 1, "dim": 8, "evaluate": False})
    return tmp, docs, config, run(config)


def test_nothing_changed_answers_without_prefect(setup):
    tmp, _, config, first = setup
    assert first["state"] and "unchanged_since" not in first
    again = run(config)
    assert again["unchanged_since"] == first["run_id"] and again["flow_run_id"] is None
    assert all(s["computed"] == 0 and s["skipped"] for s in again["stages"])
    assert again["summary"] == first["summary"]
    store = FeatureStore(tmp / "store")
    assert store.fs.exists(store.fs.path("runs", f"{again['run_id']}.json"))
    assert run(config)["unchanged_since"] == first["run_id"]
    forced = run(config, "--rescan")                      # on demand: the flow runs, computes nothing
    assert "unchanged_since" not in forced and forced["flow_run_id"]
    assert all(s["computed"] == 0 for s in forced["stages"])


def test_the_flow_itself_skips_its_stages_when_nothing_changed(setup):
    from embcache.flows.run import pipeline_flow          # what a scheduled run calls
    _, _, config, first = setup
    r = pipeline_flow(config_path=str(config))
    assert r["unchanged_since"] and r["unchanged_since"] != first["run_id"]   # the --rescan run, the last through the flow
    assert all(s["computed"] == 0 for s in r["stages"])


def test_a_new_file_runs_the_flow_for_its_rows_only(setup):
    _, docs, config, first = setup
    write_docs(docs, "part-9.jsonl", ["sport brand new text"])
    r = run(config)
    stages = {s["stage"]: s for s in r["stages"]}
    assert "unchanged_since" not in r
    assert (stages["ingest"]["computed"], stages["featurize-bert"]["computed"]) == (1, 1)


def test_small_shards_are_compacted_by_the_run(setup):
    tmp, docs, config, _ = setup
    store = FeatureStore(tmp / "store")
    compacted = []
    for i in range(20):                                   # a day's drops: a shard per run and table
        write_docs(docs, f"drop-{i}.jsonl", [f"tech drop {i} text"])
        compacted += [s for s in run(config)["stages"] if s["stage"] == "compact"]
    features = store.open("bert_features", store.resolve_linked("news", "bert_features"))
    assert len(features.manifest().shards) < 16
    assert features.manifest().rows == len(set(store.corpus("news").read()["text_sha"].to_pylist()))
    assert compacted and "bert_features" in compacted[0]["note"] and compacted[0]["computed"] >= 16
