"""Issue 26 item 5 through the real console script: a damaged vector index is seen by
`embcache index`, `verify` and `status`, and rebuilt (before, `index` said "index cached")."""

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from embcache.storage import FeatureStore, spec

from .test_ann import flip_byte, rows

pytest.importorskip("faiss")
EMBCACHE = str(Path(sys.executable).with_name("embcache"))


def embcache(root, *args):
    r = subprocess.run([EMBCACHE, "--store", str(root), *args], capture_output=True, text=True, timeout=300)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def test_a_flipped_byte_in_the_index_is_found_by_index_verify_and_status(tmp_path):
    root = tmp_path / "store"
    t = FeatureStore(root).table("bert_features", spec("encode", 1, {"n": 1}))
    t.write(rows(range(1200)))
    r = embcache(root, "index", "bert_features", "--min-rows", "0")
    assert r.returncode == 0 and "index built" in r.stdout, r
    base = max(glob.glob(f"{t.dir}/derived/ann-vector-*.faiss"), key=os.path.getsize)
    flip_byte(base)

    r = embcache(root, "status", "--json")
    assert r.returncode == 1 and [d["path"] for d in json.loads(r.stdout)["damaged"]] == [base], r
    r = embcache(root, "verify")
    assert r.returncode == 1 and base in r.stderr and "derived vector index" in r.stderr, r
    r = embcache(root, "index", "bert_features", "--min-rows", "0")
    assert r.returncode == 0 and "damaged" in r.stdout and "index rebuilt" in r.stdout, r
    assert embcache(root, "verify").returncode == 0 and embcache(root, "status").returncode == 0

    flip_byte(max(glob.glob(f"{t.dir}/derived/ann-vector-*.faiss"), key=os.path.getsize))
    r = embcache(root, "verify", "--repair")                  # repair builds it again too
    assert r.returncode == 0 and "rebuilt the damaged vector index of bert_features.vector" in r.stdout, r
