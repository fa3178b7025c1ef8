"""A real writer process for crash and concurrency tests (run as a script, not imported by pytest).

    python writer.py STORE --batches 0:8 [--die-at write:3|commit:2|timer:0.4] [--start-at EPOCH]

Each batch i holds documents 10*i .. 10*i+9. Like a pipeline run, it commits only the
keys the table is missing. --die-at sends SIGKILL to this very process:
  write:K   during the K-th atomic write (shard or manifest), after half the bytes hit the temp file
  commit:K  on taking the commit lock for the K-th time (shard written, manifest not yet updated)
  timer:S   S seconds after start, wherever it is
"""

import argparse
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from embcache.storage import FeatureStore, spec  # noqa: E402
from embcache.storage import fs as store_fs, table as store_table  # noqa: E402
from tests.storage.conftest import feature_rows, sha  # noqa: E402

SPEC = spec("encode", 1, {"pooling": "mean"})


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str) -> None:
    kind, _, arg = point.partition(":")
    if kind == "timer":
        threading.Timer(float(arg), die).start()
        return
    count = {"n": 0}
    if kind == "write":
        real = store_fs.StoreFS.write_atomic

        def write_atomic(self, path, data):
            count["n"] += 1
            if count["n"] == int(arg):
                parent, base = path.rsplit("/", 1)
                os.makedirs(parent, exist_ok=True)
                with open(f"{parent}/{store_fs.TMP_PREFIX}dying-{base}", "wb") as f:
                    f.write(data[: len(data) // 2])
                die()
            return real(self, path, data)
        store_fs.StoreFS.write_atomic = write_atomic
    elif kind == "commit":
        real_lock = store_table.commit_lock

        def commit_lock(*a, **kw):
            count["n"] += 1
            if count["n"] == int(arg):
                die()
            return real_lock(*a, **kw)
        store_table.commit_lock = commit_lock


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("--batches", default="0:8")
    ap.add_argument("--die-at")
    ap.add_argument("--start-at", type=float)
    ap.add_argument("--pause", type=float, default=0.0)
    args = ap.parse_args()
    if args.die_at:
        arm(args.die_at)
    lo, hi = map(int, args.batches.split(":"))
    table = FeatureStore(args.store).table("bert_features", SPEC)
    if args.start_at:
        time.sleep(max(0.0, args.start_at - time.time()))
    for b in range(lo, hi):
        ids = range(10 * b, 10 * b + 10)
        todo = set(table.missing([sha(i) for i in ids]).to_pylist())
        table.write(feature_rows([i for i in ids if sha(i) in todo]))
        time.sleep(args.pause)


if __name__ == "__main__":
    main()
