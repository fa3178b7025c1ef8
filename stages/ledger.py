"""The run ledger: each training stage's last identity and result, per store, corpus and name.

    runs/stages/<stage>--<corpus>--<name>.json   {"format": "embcache.stage_ledger", "format_version": 1,
                                                  "identity": "<sha256>", "result": {...}}

A stage whose identity (stages.stage.Stage.identity: its version, config and inputs) equals
the one recorded, and whose model is still the current version, is skipped and its recorded
result reused. An entry of another format is ignored (the stage runs again): it is a cache.
"""

from __future__ import annotations

import json

from ..storage import FeatureStore, StoreError

FORMAT, FORMAT_VERSION = "embcache.stage_ledger", 1


def _path(fs: FeatureStore, stage: str, corpus: str, name: str) -> str:
    return fs.fs.path("runs", "stages", f"{stage}--{corpus}--{name}.json")


def recall(fs: FeatureStore, stage: str, corpus: str, name: str, identity: str,
           model_kind: str | None) -> dict | None:
    """The stored result of this stage if it last ran with `identity` and its model is still current."""
    path = _path(fs, stage, corpus, name)
    if not fs.fs.exists(path):
        return None
    try:
        entry = json.loads(fs.fs.read_bytes(path))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if (not isinstance(entry, dict) or entry.get("format") != FORMAT or entry.get("format_version") != FORMAT_VERSION
            or entry.get("identity") != identity):
        return None
    if model_kind is not None:
        try:
            if fs.models.info(model_kind, name).version != entry["result"].get("version"):
                return None                   # trained again by hand since: not what the ledger saw
        except StoreError:
            return None
    return entry["result"]


def remember(fs: FeatureStore, stage: str, corpus: str, name: str, identity: str, result: dict) -> None:
    body = json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, "identity": identity,
                       "result": result}, default=str).encode()
    fs.fs.write_atomic(_path(fs, stage, corpus, name), body)
