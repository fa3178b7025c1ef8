"""Issue 18, items 4 and 5 through the real pipeline: a store made by `embcache ingest` and
`featurize bert` (Prefect, a tiny real BERT) is damaged; `status` shows the damage and the
rest, featurize and ingest are blocked; `embcache repair` moves the damaged files aside;
the next ingest and featurize recompute exactly the lost rows, and the store ends equal
to the clean one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from embcache.storage import FeatureStore
from embcache.storage.maintenance import verify

from .store_compare import compare_stores
from .test_store_faults import (MAX_LENGTH, cli, damage, one_line, pipeline_store, store_copy,  # noqa: F401
                                stored_vectors)


def test_repair_then_rerun_recomputes_exactly_the_lost_rows(store_copy, pipeline_store, tiny_bert):  # noqa: F811
    root, docs = store_copy, Path(pipeline_store).parent / "docs"
    store = FeatureStore(root)
    before = stored_vectors(root)
    features, documents, corpus = store.open("bert_features"), store.open("documents"), store.corpus("news")
    lost_features = features.manifest().shards[1]
    lost_texts = documents.manifest().shards[0]
    victims = {"feature shard": Path(features.shard_path(lost_features)),
               "documents shard": Path(documents.shard_path(lost_texts)),
               "snapshot": Path(corpus.snapshot_path(corpus.snapshot()))}
    damage(victims["feature shard"], "bit-flipped")
    damage(victims["documents shard"], "truncated")
    damage(victims["snapshot"], "deleted")

    r = cli(root, "status")                       # the damage is shown, and so is the rest
    assert r.exit_code == 1 and "DAMAGED" in r.output and "bert_tokens" in r.output, r.output
    status = json.loads(cli(root, "status", "--json").stdout)
    assert {t["name"]: bool(t["damaged"]) for t in status["tables"]} == \
        {"documents": True, "bert_tokens": False, "bert_features": False}    # a flipped bit: verify's job
    assert [t["rows"] for t in status["tables"] if t["name"] == "bert_tokens"] == [24]
    assert "missing" in status["corpora"][0]["damaged"]
    r = cli(root, "featurize", "bert", "news", "--model", tiny_bert, "--max-length", str(MAX_LENGTH))
    assert r.exit_code != 0 and "repair" in one_line(r.stderr), r.output    # blocked, and told the cure

    r = cli(root, "repair")
    assert r.exit_code == 0, r.output
    aside = next((Path(root) / "damaged").iterdir())
    assert (aside / victims["feature shard"].relative_to(root)).exists()
    assert (aside / victims["documents shard"].relative_to(root)).exists()
    assert cli(root, "verify").exit_code == 0
    clean_keys = FeatureStore(pipeline_store).open("bert_features").keys()
    assert len(features.missing(clean_keys)) == lost_features.rows        # exactly the lost rows

    r = cli(root, "ingest", "news", str(docs), "--format", "folder")
    assert r.exit_code == 0 and "snapshot 000001" in r.stdout and f"({lost_texts.rows} new texts)" in r.stdout, r.output
    r = cli(root, "featurize", "bert", "news", "--model", tiny_bert, "--max-length", str(MAX_LENGTH),
            "--shard-docs", "8")
    assert r.exit_code == 0 and f"encoded {lost_features.rows} (cached {24 - lost_features.rows})" in r.stdout, r.output

    after = stored_vectors(root)
    assert after.keys() == before.keys()
    np.testing.assert_allclose(np.stack([after[k] for k in before]), np.stack(list(before.values())), atol=1e-5)
    assert cli(root, "gc", "--grace", "0").exit_code == 0
    compare_stores(root, pipeline_store)
    assert verify(store).ok and (aside / "repair.json").exists()         # gc kept the evidence


def test_status_and_verify_repair_through_the_cli(store_copy):  # noqa: F811
    root = store_copy
    store = FeatureStore(root)
    tokens = store.open("bert_tokens")
    text = Path(tokens.manifest_path).read_text()
    Path(tokens.manifest_path).write_text(text[: len(text) // 2])
    r = cli(root, "status")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "DAMAGED" in r.output and "bert_features" in r.output and "documents" in r.output
    r = cli(root, "verify", "--repair")
    assert r.exit_code == 0 and "rebuilt" in r.stdout and "after repair" in r.stdout, r.output
    assert store.open("bert_tokens").manifest().rows == 24
    assert cli(root, "status").exit_code == 0 and cli(root, "verify").exit_code == 0
