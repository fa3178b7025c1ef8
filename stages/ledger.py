"""The run ledger: each training stage's last identity and result, per store, corpus and name.

    runs/stages/<stage>--<corpus>--<name>.json   {"format": "embcache.stage_ledger", "format_version": 1,
                                                  "identity": "<sha256>", "result": {...},
                                                  "basis": "<sha256>", "snapshot": "000003"}   (optional)

A stage whose identity (stages.stage.Stage.identity: its version, config and inputs) equals
the one recorded, and whose model is still the current version, is skipped and its recorded
result reused. An entry of another format is ignored (the stage runs again): it is a cache.
"""

from __future__ import annotations

import json

from ..common.formats import Format, HeaderMismatch, header, parse_json
from ..storage import FeatureStore, StoreError

FORMAT = Format("embcache.stage_ledger", 1)


def _path(fs: FeatureStore, stage: str, corpus: str, name: str) -> str:
    return fs.fs.path("runs", "stages", f"{stage}--{corpus}--{name}.json")


def _entry(fs: FeatureStore, stage: str, corpus: str, name: str) -> dict | None:
    """The stage's ledger entry if there is one of this format; None otherwise."""
    path = _path(fs, stage, corpus, name)
    if not fs.fs.exists(path):
        return None
    try:
        return parse_json(fs.fs.read_bytes(path), FORMAT, "a stage ledger entry")
    except HeaderMismatch:
        return None


def _model_current(fs: FeatureStore, entry: dict, name: str, model_kind: str | None) -> bool:
    """Whether the entry's model is still the current version (not trained again by hand since)."""
    if model_kind is None:
        return True
    try:
        return fs.models.info(model_kind, name).version == entry["result"].get("version")
    except StoreError:
        return False


def recall(fs: FeatureStore, stage: str, corpus: str, name: str, identity: str,
           model_kind: str | None) -> dict | None:
    """The stored result of this stage if it last ran with `identity` and its model is still current."""
    entry = _entry(fs, stage, corpus, name)
    if entry is None or entry.get("identity") != identity or not _model_current(fs, entry, name, model_kind):
        return None
    return entry["result"]


def last(fs: FeatureStore, stage: str, corpus: str, name: str, model_kind: str | None) -> dict | None:
    """The stage's ledger entry whatever its identity ({"identity", "basis", "snapshot",
    "result"}), if its model is still current; None otherwise (stages/retrain.py)."""
    entry = _entry(fs, stage, corpus, name)
    return entry if entry is not None and _model_current(fs, entry, name, model_kind) else None


def remember(fs: FeatureStore, stage: str, corpus: str, name: str, identity: str, result: dict,
             basis: str | None = None, snapshot: str | None = None) -> None:
    """basis: the identity without the corpus snapshot; snapshot: the one trained on (retrain policies)."""
    body = json.dumps({**header(FORMAT), "identity": identity,
                       "basis": basis, "snapshot": snapshot, "result": result}, default=str).encode()
    fs.fs.write_atomic(_path(fs, stage, corpus, name), body)
