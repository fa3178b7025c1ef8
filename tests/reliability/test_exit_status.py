"""Issue 18 item 9: the console script's exit status is the command's, and nothing it wrote
is lost by ending with os._exit (cli/main.py run). The abort itself is rare (~1 %): it is
counted over hundreds of runs by benchmarks/verify_exit.py, not here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa

from embcache.storage import FeatureStore

EMBCACHE = str(Path(sys.executable).with_name("embcache"))


def test_status_output_and_errors_survive_the_exit(tmp_path):
    store = FeatureStore(tmp_path / "s")
    store.corpus("news").commit_snapshot(pa.table({"doc_id": [f"d{i}" for i in range(3)],
                                                   "text_sha": [f"{i:064x}" for i in range(3)]}))
    r = subprocess.run([EMBCACHE, "--store", str(tmp_path / "s"), "verify"], capture_output=True, text=True)
    assert r.returncode == 0 and "checked 1 files: 0 bad" in r.stdout, r
    r = subprocess.run([EMBCACHE, "--store", str(tmp_path / "none"), "status"], capture_output=True, text=True)
    assert r.returncode == 4 and "no embcache store here" in r.stderr and "Traceback" not in r.stderr, r
    r = subprocess.run(f"{EMBCACHE} --store {tmp_path / 's'} status --json | head -c 1", shell=True,
                       capture_output=True, text=True)
    assert r.stdout == "{" and "Traceback" not in r.stderr, r
