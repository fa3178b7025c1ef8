"""Issue 18, item 8: shard tasks do not retry what cannot pass on a retry (a damaged
committed file, a full or read-only disk); they still retry what may (a flaky link).
Real Prefect engine, real store reads of a really damaged shard."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from prefect import flow, task

from embcache.flows.featurize_flows import encode_task, tokenize_task
from embcache.flows.retry import final, retryable
from embcache.flows.word2vec_flows import examples_task
from embcache.storage import CorruptShard, FeatureStore, StoreError
from tests.storage.conftest import feature_rows


def test_every_shard_task_uses_the_retry_condition():
    for t in (tokenize_task, encode_task, examples_task):
        assert t.retries == 1 and t.retry_condition_fn is retryable, t.name


def test_final_errors_follow_the_cause_chain():
    full = OSError(errno.ENOSPC, "No space left on device")
    wrapped = StoreError("/s/x", "write failed: No space left on device")
    wrapped.__cause__ = full
    assert final(wrapped) and final(OSError(errno.EROFS, "Read-only file system"))
    assert final(CorruptShard("/s/x", "sha256 mismatch"))
    assert not final(ConnectionError("reset by peer")) and not final(OSError(errno.EIO, "I/O error"))


def test_a_damaged_shard_fails_at_once_and_a_flaky_error_is_retried(tmp_path, prefect_engine):
    store = FeatureStore(tmp_path / "store")
    t = store.table("bert_features", {"stage": "encode", "version": 1})
    t.write(feature_rows(range(10)))
    path = Path(t.shard_path(t.manifest().shards[0]))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    calls = {"damaged": 0, "flaky": 0}

    @task(retries=1, retry_delay_seconds=0, retry_condition_fn=retryable)
    def read_damaged() -> int:
        calls["damaged"] += 1
        return FeatureStore(tmp_path / "store").open("bert_features").read().num_rows

    @task(retries=1, retry_delay_seconds=0, retry_condition_fn=retryable)
    def flaky() -> int:
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise ConnectionError("connection reset by peer")
        return 1

    @flow
    def both() -> int:
        assert flaky() == 1
        return read_damaged()

    with pytest.raises(CorruptShard, match=str(path)):
        both()
    assert calls == {"damaged": 1, "flaky": 2}
