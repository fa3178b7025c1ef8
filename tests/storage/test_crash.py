"""Crash safety and concurrent writers, with real processes and real SIGKILL."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from embcache.storage import FeatureStore
from embcache.storage.maintenance import gc, verify

WRITER = Path(__file__).with_name("writer.py")


def run_writer(store, *args, check=True):
    proc = subprocess.run([sys.executable, str(WRITER), str(store), *args], capture_output=True, text=True,
                          timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def contents(root):
    t = FeatureStore(root).open("bert_features")
    rows = t.read().to_pylist()
    keys = Counter(r["text_sha"] for r in rows)
    assert max(keys.values()) == 1, "a key was committed twice"
    return {r["text_sha"]: r for r in rows}


def files_outside_manifest(root):
    t = FeatureStore(root).open("bert_features")
    listed = {s.file for s in t.manifest().shards}
    on_disk = set(os.listdir(os.path.join(t.dir, "shards")))
    strays = [f for f in os.listdir(t.dir) if f.startswith(".tmp-")]
    return (on_disk - listed) | set(strays)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean") / "store"
    run_writer(root)
    return contents(root)


@pytest.mark.parametrize("point", ["write:1", "write:4", "write:7", "write:12", "commit:1", "commit:3",
                                   "commit:6", "timer:0.9", "timer:1.3"])
def test_sigkill_then_rerun_equals_clean_run(tmp_path, clean_run, point):
    root = tmp_path / "store"
    killed = run_writer(root, "--die-at", point, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    if (root / "tables").exists() and any((root / "tables" / "bert_features").glob("*/manifest.json")):
        assert verify(FeatureStore(root)).ok           # what was committed is intact
    run_writer(root)                                    # the re-run resumes
    assert contents(root) == clean_run                  # exactly the rows of a clean run
    gc(FeatureStore(root), grace_seconds=0)
    assert files_outside_manifest(root) == set()
    assert verify(FeatureStore(root)).ok


def test_concurrent_writers_both_commit(tmp_path):
    """Two processes commit to one table at once: overlapping batches 3..5 are committed once."""
    root = tmp_path / "store"
    start = str(time.time() + 1.5)
    procs = [subprocess.Popen([sys.executable, str(WRITER), str(root), "--batches", b, "--start-at", start, "--pause", "0.02"],
                              stderr=subprocess.PIPE, text=True) for b in ("0:6", "3:10")]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    t = FeatureStore(root).open("bert_features")
    m = t.manifest()
    assert m.generation == len(m.shards)               # every commit listed, none lost
    got = contents(root)
    assert len(got) == 100
    assert verify(FeatureStore(root)).ok
    assert files_outside_manifest(root) == set()
