"""Retrain policies: what a change of the corpus alone does to a training stage."""

import pyarrow as pa
import pytest

from embcache.flows.errors import ConfigError
from embcache.flows.run_config import load_config
from embcache.stages import ledger
from embcache.stages.retrain import decide, decide_policy, staleness
from embcache.storage import FeatureStore


def test_policies_decide_from_the_share_of_changed_documents():
    assert decide_policy("changed", 0.05, changed=5, documents=100, force=False)[0] is False
    assert decide_policy("changed", 0.05, changed=6, documents=100, force=False)[0] is True
    assert decide_policy("always", 0.05, changed=1, documents=100, force=False)[0] is True
    never = decide_policy("never", 0.05, changed=90, documents=100, force=False)
    assert never[0] is False and "--retrain" in never[1]
    assert decide_policy("never", 0.05, changed=0, documents=100, force=True) == (True, "--retrain")


def snapshot(store, docs):
    return store.corpus("c").commit_snapshot(pa.table({
        "doc_id": [d for d, _, _ in docs], "text_sha": [s for _, s, _ in docs], "label": [l for _, _, l in docs]}))


def test_staleness_counts_added_edited_and_removed_documents(tmp_path):
    store = FeatureStore(tmp_path)
    first = snapshot(store, [("a", "1", "x"), ("b", "2", "x"), ("c", "3", "y")])
    snapshot(store, [("a", "1", "x"), ("b", "2*", "x"), ("c", "3", "z"), ("d", "4", "y")])   # edit, relabel, add
    s = staleness(store, "c", first.id)
    assert (s.added, s.removed, s.documents) == (3, 2, 4)


def test_decide_trains_when_the_basis_changed_and_keeps_a_small_change(tmp_path):
    store = FeatureStore(tmp_path)
    first = snapshot(store, [(f"d{i}", str(i), "x") for i in range(100)])
    ledger.remember(store, "train-head", "c", "head", "id-1", {"version": 1}, basis="b-1", snapshot=first.id)
    snapshot(store, [(f"d{i}", str(i), "x") for i in range(101)])
    kept = decide(store, "train-head", "c", "head", "b-1", "changed", 0.05, False, None)
    assert not kept.train and kept.previous == {"version": 1} and kept.stale.added == 1
    assert decide(store, "train-head", "c", "head", "b-2", "changed", 0.05, False, None).train
    assert decide(store, "train-head", "c", "other", "b-1", "changed", 0.05, False, None).reason == "not trained yet"


def test_run_configs_take_a_policy_per_training_stage():
    cfg = load_config({"word2vec": {"retrain": "never"}, "head": {"retrain": "always"},
                       "static": {"retrain_threshold": 0.2}})
    assert (cfg.word2vec.retrain, cfg.head_section.retrain, cfg.static_section.retrain_threshold) == \
        ("never", "always", 0.2)
    assert load_config(None).head_section.retrain == "changed"
    with pytest.raises(ConfigError, match="retrain"):
        load_config({"head": {"retrain": "weekly"}})
    with pytest.raises(ConfigError, match="retrain_threshold"):
        load_config({"head": {"retrain_threshold": 2}})


def test_the_report_says_how_stale_a_kept_model_is():
    from embcache.stages.report import stage_table
    html = stage_table([{"stage": "train-head", "computed": 0, "cached": 1, "unit": "models", "skipped": True,
                         "seconds": 0.1, "note": 'stored result kept: retrain policy "changed": …',
                         "stale": {"trained_snapshot": "000003", "added": 22, "removed": 0, "documents": 2246}}])
    assert "stale: 22 documents added, 0 removed since snapshot 000003 (2,246 now)" in html
