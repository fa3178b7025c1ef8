"""backend="auto" on a CPU: torch or ONNX Runtime, whichever ran this corpus's batches faster here.

The first encode shard on a machine times both on a sample of its own batches
(pipeline.backends.time_backends, a few seconds) and keeps the answer in the store, so every
later shard, run and worker with the same key reads it instead of measuring again:

    derived/backend/<key>.json   key = sha256 of {machine, model digests, threads}
    {"format": "embcache.backend-choice", "format_version": 1, "backend": "torch",
     "machine": {"host": …, "cpu": …, "arch": …, "torch": …, "onnxruntime": …},
     "model": <weights + config digests>, "threads": 2,
     "measured": {"seconds": {"torch": 0.61, "onnx": 0.66}, "texts": 16, "tokens": 4096, "rounds": 2}}

Machine means host name, CPU model and the library versions: a new onnxruntime or torch
measures again. A file that does not parse or does not match its key is measured again
and replaced (a derived artifact: STYLE.md habit 10). Delete derived/backend/ to measure anew.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable

from ..pipeline.cores import available_cores
from ..storage import FeatureStore
from ..storage.errors import StoreError

FORMAT, FORMAT_VERSION = "embcache.backend-choice", 1
FOLDER = ("derived", "backend")


@functools.cache
def machine() -> dict:
    """What makes one machine's timings another's: host, CPU model, architecture, library versions."""
    import torch
    try:
        import onnxruntime
        ort = onnxruntime.__version__
    except ModuleNotFoundError:
        ort = None
    return {"host": platform.node(), "cpu": _cpu_model(), "arch": platform.machine(),
            "torch": torch.__version__, "onnxruntime": ort}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def choice_key(model: str, threads: int | None, host: dict | None = None) -> str:
    """The cache key: machine (this one unless given), model digests, torch/ONNX threads."""
    threads = threads or available_cores()
    blob = json.dumps({"machine": host or machine(), "model": model, "threads": threads}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


_CHOSEN: dict[tuple, dict] = {}      # this process's answers: (store, key) -> record


def choose(store_root: str | None, model: str, threads: int | None,
           measure: Callable[[], dict] | None) -> dict | None:
    """The record for (this machine, model, threads): from this process, the store, or measure().

    measure() returns pipeline.backends.time_backends' dict; it runs once per key and store.
    None for measure: only what is on record (None if nothing).
    Without a store the answer is kept in this process only. The record says where it came from
    in "source": "measured" (now), "store" (an earlier run's), "process" (this process's).
    """
    threads = threads or available_cores()
    key = choice_key(model, threads)
    if (store_root, key) in _CHOSEN:
        return {**_CHOSEN[(store_root, key)], "source": "process"}
    store = FeatureStore(store_root) if store_root else None
    record = _read(store, key) if store is not None else None
    if record is None and measure is None:
        return None
    if record is None:
        measured = measure()
        record = {"format": FORMAT, "format_version": FORMAT_VERSION, "key": key,
                  "backend": measured["fastest"], "machine": machine(), "model": model, "threads": threads,
                  "measured": {k: v for k, v in measured.items() if k != "fastest"},
                  "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  # a loaded machine favours ONNX (torch's thread pool suffers most): delete the file to re-measure
                  "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}
        if store is not None:
            _write(store, key, record)
        source = "measured"
    else:
        source = "store"
    _CHOSEN[(store_root, key)] = record
    return {**record, "source": source}


def recorded(store_root: str, model: str) -> list[dict]:
    """Every valid choice the store holds for `model` (any machine, any threads), newest first."""
    store = FeatureStore(store_root)
    found = []
    for name in store.fs.listdir(store.fs.path(*FOLDER)):
        if name.endswith(".json"):
            record = _read(store, name[:-len(".json")])
            if record is not None and record["model"] == model:
                found.append(record)
    return sorted(found, key=lambda r: r.get("measured_at", ""), reverse=True)


def describe(record: dict) -> str:
    """'onnx (torch 0.612 s, onnx 0.548 s on 16 texts, 4,096 tokens; host at 2 threads)'."""
    m = record["measured"]
    times = ", ".join(f"{k} {v:.3f} s" for k, v in m["seconds"].items())
    return (f"{record['backend']} ({times} on {m['texts']:,} texts, {m['tokens']:,} tokens; "
            f"{record['machine']['host']} at {record['threads']} threads)")


def _path(store: FeatureStore, key: str) -> str:
    return store.fs.path(*FOLDER, f"{key}.json")


def _read(store: FeatureStore, key: str) -> dict | None:
    """The record under `key`, or None when absent, unreadable, of another format or not this key's."""
    try:
        record = json.loads(store.fs.read_bytes(_path(store, key)))
    except (StoreError, OSError, ValueError):
        return None
    ok = (isinstance(record, dict) and record.get("format") == FORMAT
          and record.get("format_version") == FORMAT_VERSION and record.get("key") == key
          and record.get("backend") in ("torch", "onnx") and isinstance(record.get("measured"), dict)
          and choice_key(record.get("model"), record.get("threads"), record.get("machine")) == key)
    return record if ok else None


def _write(store: FeatureStore, key: str, record: dict) -> None:
    try:
        store.fs.write_atomic(_path(store, key), json.dumps(record, indent=1, sort_keys=True).encode())
    except StoreError:
        pass          # a read-only store: the answer stays in this process, and the next one measures again
