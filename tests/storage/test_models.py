"""Models in the store: versioned, checksummed file sets with a current pointer."""

import os
import time

import pytest

from embcache.storage import CorruptShard, FeatureStore, InvalidName, NotFound
from embcache.storage.maintenance import gc, verify


def test_put_get_round_trip_and_versions(tmp_path):
    store = FeatureStore(tmp_path)
    a = store.models.put("head", "topics", {"head.safetensors": b"\x00weights-a", "head.json": b"{}"},
                         {"features": "ab" * 32})
    files, info = store.models.get("head", "topics")
    assert files == {"head.safetensors": b"\x00weights-a", "head.json": b"{}"}
    assert info.meta == {"features": "ab" * 32} and info.version == a.version and info.bytes == 12
    b = store.models.put("head", "topics", {"head.safetensors": b"weights-b", "head.json": b"{}"})
    assert b.version != a.version and store.models.current("head", "topics") == b.version
    assert store.models.get("head", "topics", a.version)[0]["head.safetensors"] == b"\x00weights-a"
    same = store.models.put("head", "topics", {"head.json": b"{}", "head.safetensors": b"weights-b"})
    assert same.version == b.version                                      # content-addressed
    assert sorted(store.models.versions("head", "topics")) == sorted([a.version, b.version])
    assert [m.name for m in store.models.list()] == ["topics"]


def test_unknown_model_and_bad_names(tmp_path):
    store = FeatureStore(tmp_path)
    store.models.put("head", "topics", {"head.json": b"{}"})
    with pytest.raises(NotFound, match="known: topics"):
        store.models.get("head", "other")
    with pytest.raises(InvalidName):
        store.models.put("head", "../escape", {"head.json": b"{}"})
    with pytest.raises(InvalidName):
        store.models.put("head", "ok", {"../x": b""})
    with pytest.raises(ValueError):
        store.models.put("head", "ok", {"model.json": b"{}"})


def test_corrupt_file_is_named_by_get_and_verify(tmp_path):
    store = FeatureStore(tmp_path)
    info = store.models.put("static", "glove", {"model.safetensors": b"x" * 100, "static.json": b"{}"})
    path = tmp_path / "models" / "static" / "glove" / info.version / "model.safetensors"
    path.write_bytes(b"x" * 99 + b"y")                                    # same size, one byte flipped
    with pytest.raises(CorruptShard, match="model.safetensors") as e:
        store.models.get("static", "glove")
    assert "checksum failed" in e.value.reason and "sha256" in e.value.reason   # not only the size (issue 18)
    report = verify(store)
    assert not report.ok and any("model.safetensors" in p for p, _ in report.bad)
    path.write_bytes(b"x" * 90)                                             # truncated: the size says so
    with pytest.raises(CorruptShard, match="90 bytes, its listing says 100"):
        store.models.get("static", "glove")


def test_gc_removes_old_versions_after_the_grace_only(tmp_path):
    store = FeatureStore(tmp_path)
    old = store.models.put("checkpoint", "run", {"model.safetensors": b"step-1"})
    new = store.models.put("checkpoint", "run", {"model.safetensors": b"step-2"})
    assert gc(store).removed == []                                        # young: kept
    past = time.time() - 7200
    for root, _, files in os.walk(tmp_path / "models"):
        for f in files:
            os.utime(os.path.join(root, f), (past, past))
    report = gc(store)
    assert report.removed == [f"models/checkpoint/run/{old.version}"]
    assert store.models.versions("checkpoint", "run") == [new.version]
    assert store.models.get("checkpoint", "run")[0] == {"model.safetensors": b"step-2"}
