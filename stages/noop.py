"""Is there anything for a run to do? Answered before Prefect starts (flows/run.py, cli/run.py).

A run's stages decide from: the run config, the source files (stages/source_state.py), the
store's corpus manifests, the manifests of the tables linked to each corpus, the training
ledger (runs/stages/), the saved models and the encoder's files. `run_state` digests all of
them; a completed run records the digest it left the store in, and `embcache run` first
compares the digest now with the last run's: equal means every stage would be skipped, so
it writes a run record that says so without starting Prefect (the temporary server alone
costs ~9 s). Anything changed, `--rescan`, `--retrain`, or a file modified within
source_state.RACY_NS of the last ingest: the run goes through the flow as usual.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone

from ..pipeline.ingest import IngestConfig, Source
from ..storage import FeatureStore, StoreError
from . import run_record
from .source_state import COUNTS, SourceState


def run_state(store: FeatureStore, config: dict, corpora: list[tuple[str, tuple[Source, ...]]],
              ingest: IngestConfig, model: str | None) -> str | None:
    """sha256 of what a run decides from; None when some source changed since its last ingest."""
    config = json.loads(json.dumps(config, default=str))
    config.get("ingest", {}).pop("rescan", None)
    parts: dict = {"store": store.root, "config": config, "corpora": {}}
    for name, sources in corpora:
        state = SourceState(store, name, list(sources), ingest)
        if not state.unchanged:
            return None
        c = store.corpus(name)
        links = c.manifest().links
        parts["corpora"][name] = {"manifest": _sha(store, c.manifest_path), "tables": {
            t: _sha(store, store.fs.path("tables", t, fps[-1], "manifest.json")) for t, fps in links.items()}}
    parts["files"] = {d: _listing(store, d) for d in ("runs/stages", "models")}
    parts["model"] = _model_files(model)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def unchanged_run(store: FeatureStore, state: str | None) -> dict | None:
    """The last run record if it completed leaving the store in `state`; else None."""
    if state is None:
        return None
    try:
        last = run_record.load(store, None)
    except StoreError:
        return None
    if last is None or last.get("status") != "completed" or last.get("state") != state:
        return None
    return last


def record_unchanged(store: FeatureStore, last: dict, state: str, seconds: float) -> dict:
    """Save and return the record of a run that found nothing changed since `last`."""
    started = datetime.now(timezone.utc)
    since = last.get("unchanged_since") or last["run_id"]       # the last run that went through the flow
    note = f"nothing changed since run {since} (sources, config, store): Prefect not started"
    stages = [{**s, "seconds": 0.0, "computed": 0, "cached": int(s.get("computed", 0)) + int(s.get("cached", 0)),
               "skipped": True, "note": note} for s in last["stages"] if s["stage"] != "compact"]
    for s in stages:
        if "sources" in s:                    # every file found again, unchanged and not read
            s["sources"] = unchanged_counts(s["sources"])
    record = {k: v for k, v in last.items() if k not in ("format", "format_version")}
    record.update(run_id=run_record.new_run_id(started), flow_run_id=None,
                  started=started.isoformat(), finished=datetime.now(timezone.utc).isoformat(),
                  wall_seconds=round(seconds, 3), stages=stages, state=state, unchanged_since=since,
                  rows_computed=0, rows_cached=sum(s["cached"] for s in stages if s["unit"] in ("texts", "documents")))
    run_record.save(store, record)
    return record


def unchanged_counts(counts: dict) -> dict:
    """An ingest's source counts (SourceState.counts) when it found every file of `counts`'s
    ingest again, unchanged: none added, edited, removed or read."""
    found = sum(counts.get(k, 0) for k in ("files_added", "files_edited", "files_unchanged", "files_reread"))
    return {**dict.fromkeys(COUNTS, 0), "files_unchanged": found, "objects": counts.get("objects", 0)}


def _sha(store: FeatureStore, path: str) -> str | None:
    try:
        return hashlib.sha256(store.fs.read_bytes(path)).hexdigest()
    except StoreError:
        return None


def _listing(store: FeatureStore, folder: str) -> list:
    """(path, size, mtime) of every file under a store folder: the ledger and saved models."""
    root = store.fs.path(*folder.split("/"))
    out = []
    for path in sorted(store.fs.walk_files(root)):
        info = store.fs.info(path)
        out.append((store.fs.relative(path), info.get("size"), store.fs.mtime(path)))
    return out


def _model_files(model: str | None) -> list:
    """(name, size, mtime_ns) of a local encoder's files (None: the packaged MiniLM, whose
    package version names it); a hub id is its own name."""
    if model is None or not os.path.isdir(model):
        return [model]
    return [(e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in sorted(os.scandir(model), key=lambda e: e.name)
            if e.is_file()]
