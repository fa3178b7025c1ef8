"""Exit status of `embcache verify`, run hundreds of times, beside bare pyarrow reads of the same shards.

    flock /tmp/embcache-bench.lock python benchmarks/verify_exit.py [--runs 300] [--jobs 2]
                                                                     [--out benchmarks/results/verify_exit.json]

Issue 18 item 9: a command that succeeded sometimes aborted as its process exited (status
134, "terminate called without an active exception"): `verify` 4 of 240 runs; bare
`pyarrow.parquet.read_table` on the same shards 5 of 150, and 0 of 150 with
use_threads=False (apache/arrow#34314, pyarrow 26.0.1). embcache now decodes shards on the
calling thread (storage/shards.py READ_THREADS). This script builds a small store (several
tables and shards, a corpus), then runs in fresh processes, interleaved, `--runs` times each:

- project:   `embcache verify` (the console script), which reads every shard and snapshot
             on one thread and ends with os._exit after Python's own shutdown (cli/main.py);
- read_fix:  the same verify through app() with a normal interpreter exit (read path only);
- before:    that, with shards decoded on Arrow's thread pool: verify as it was (the baseline);
- baseline:  a bare Python process reading the same files with pq.read_table at its
             default (use_threads=True), as the issue measured;
- control:   the same bare reads with use_threads=False.

It prints each one's non-zero exits (by status) and the ratio of abort rates (project /
before), and times
reading every shard in one process with and without threads, so the cost of the
mitigation is measured, not assumed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embcache.storage import FeatureStore, spec

# `embcache verify` as the console script ran it before this issue: app() and a normal
# interpreter exit, shards decoded on Arrow's thread pool (READ_THREADS) or not.
APP_EXIT = """
import sys
import embcache.storage.shards as shards
shards.READ_THREADS = sys.argv[1] == "threads"
from embcache.cli.main import app
app(args=sys.argv[2:], prog_name="embcache")
"""
BARE_READ = """
import sys, pyarrow.parquet as pq
threads = sys.argv[1] == "threads"
for path in sys.argv[2:]:
    pq.read_table(path, use_threads=threads)
"""


def build_store(root: Path, shards: int = 12, rows: int = 2000, dim: int = 64) -> list[str]:
    """A store like a featurized corpus (vectors, token ids, texts) and its parquet files."""
    rng = np.random.default_rng(0)
    store = FeatureStore(root)
    keys = [f"{i:064x}" for i in range(shards * rows)]
    features = store.table("bert_features", spec("encode", 1, {"dim": dim}))
    tokens = store.table("bert_tokens", spec("tokenize", 1, {"max_length": 32}))
    for s in range(shards):
        part = keys[s * rows:(s + 1) * rows]
        vecs = rng.standard_normal((rows, dim)).astype(np.float32)
        features.write(pa.table({"text_sha": part, "vector": pa.FixedSizeListArray.from_arrays(
            pa.array(vecs.ravel()), dim)}))
        tokens.write(pa.table({"text_sha": part, "input_ids": pa.array(
            [list(rng.integers(0, 30000, rng.integers(5, 32))) for _ in range(rows)], pa.list_(pa.int32()))}))
    store.corpus("bench").commit_snapshot(pa.table({"doc_id": [f"d{i}" for i in range(len(keys))],
                                                    "text_sha": keys}))
    return sorted(str(p) for p in Path(root).rglob("*.parquet"))


def run_once(kind: str, root: Path, files: list[str]) -> tuple[int, str]:
    if kind == "project":
        cmd = [str(Path(sys.executable).with_name("embcache")), "--store", str(root), "verify"]
    elif kind in ("before", "read_fix"):
        cmd = [sys.executable, "-c", APP_EXIT, "threads" if kind == "before" else "single",
               "--store", str(root), "verify"]
    else:
        cmd = [sys.executable, "-c", BARE_READ, "threads" if kind == "baseline" else "single", *files]
    r = subprocess.run(cmd, capture_output=True, text=True)
    code = r.returncode if r.returncode >= 0 else 128 - r.returncode      # -6 (SIGABRT) -> 134, as a shell says
    return code, (r.stderr.strip().splitlines() or [""])[-1][:200]


def read_all(files: list[str], threads: bool, repeat: int = 5) -> float:
    """Best seconds of reading every file in this process."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for f in files:
            pq.read_table(pa.BufferReader(Path(f).read_bytes()), use_threads=threads)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300, help="runs of each kind")
    parser.add_argument("--jobs", type=int, default=2, help="processes at once")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--kinds", default="project,read_fix,before,baseline,control",
                        help="which of project, read_fix, before, baseline, control to run (comma-separated)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="embcache-verify-exit-") as tmp:
        root = Path(tmp) / "store"
        files = build_store(root)
        size = sum(os.path.getsize(f) for f in files)
        print(f"store: {len(files)} parquet files, {size / 1e6:.1f} MB; {args.runs} runs of each kind, "
              f"{args.jobs} at a time; pyarrow {pa.__version__}, {os.cpu_count()} cores, load {os.getloadavg()}")
        kinds = tuple(args.kinds.split(","))
        codes: dict[str, Counter] = {k: Counter() for k in kinds}
        last: dict[str, dict[int, str]] = {k: {} for k in kinds}
        t0 = time.perf_counter()
        order = [k for _ in range(args.runs) for k in kinds]            # interleaved: same load for each
        with ThreadPoolExecutor(args.jobs) as pool:
            for kind, (code, tail) in zip(order, pool.map(lambda k: run_once(k, root, files), order)):
                codes[kind][code] += 1
                if code:
                    last[kind][code] = tail
        wall = time.perf_counter() - t0
        threaded, single = read_all(files, True), read_all(files, False)

    rows = {}
    for kind in kinds:
        bad = sum(n for c, n in codes[kind].items() if c != 0)
        rows[kind] = {"runs": args.runs, "nonzero": bad, "aborted_134": codes[kind][134],
                      "codes": dict(codes[kind]), "last_error": last[kind]}
        print(f"{kind:9} {bad:4d} of {args.runs} non-zero exits ({codes[kind][134]} aborts, status 134)  "
              f"codes {dict(sorted(codes[kind].items()))}  {last[kind] or ''}")
    rate = {k: rows[k]["aborted_134"] / args.runs for k in kinds}
    ratio = (rate["project"] / rate["before"]) if rate.get("before") and "project" in rate else None
    print("abort rate: " + ", ".join(f"{k} {v:.2%}" for k, v in rate.items())
          + (f"; project / before = {ratio:.2f}" if ratio is not None else "; no project / before ratio"))
    print(f"reading all {len(files)} files in one process: threads {threaded * 1e3:.1f} ms, "
          f"one thread {single * 1e3:.1f} ms (x{single / threaded:.2f}); {wall:.0f} s of runs")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"runs": rows, "abort_ratio": ratio, "read_ms_threads": threaded * 1e3,
                                        "read_ms_single": single * 1e3, "python": platform.python_version(),
                                        "pyarrow": pa.__version__, "load": os.getloadavg()}, indent=1))


if __name__ == "__main__":
    main()
