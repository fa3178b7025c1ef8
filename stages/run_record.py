"""Run records, runs/<run_id>.json: what one end-to-end run did, per stage; written by
flows.run.pipeline_flow, read by the report. Its format is declared here once.

    {"format": "embcache.run", "format_version": 1, "run_id": "20261121T130501Z-3fa2c1", "status": "completed",
     "stages": [{"stage": "ingest", "corpus": "bbc", "seconds": 1.5, "computed": 57, "cached": 3, ...}], ...}
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timezone

from ..common.formats import Format, HeaderMismatch, header, parse_json
from ..storage import FeatureStore, NotFound
from ..storage.errors import FormatError

FORMAT = Format("embcache.run", 1)
RUN_ID_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,127}$")


def new_run_id(started: datetime) -> str:
    """A run's id: its UTC start to the microsecond, then 6 random hex digits.

    Ids sort in start order (the newest run is the greatest), also for runs that start
    within the same second, as no-op runs do (20261204T181657.123456Z-3a31bc).
    """
    return f"{started.astimezone(timezone.utc):%Y%m%dT%H%M%S.%fZ}-{uuid.uuid4().hex[:6]}"


def save(fs: FeatureStore, record: dict) -> None:
    """Write (or replace) runs/<run_id>.json atomically, with the format header."""
    body = json.dumps({**header(FORMAT), **record}, indent=1, default=str)
    fs.fs.write_atomic(fs.fs.path("runs", f"{record['run_id']}.json"), body.encode())


def load(store: FeatureStore, run_id: str | None) -> dict | None:
    """runs/<run_id>.json (the newest when run_id is None; None when there is none), format checked."""
    if run_id is None:
        ids = [n[:-5] for n in store.fs.listdir(store.fs.path("runs")) if n.endswith(".json")
               and RUN_ID_RE.match(n[:-5])]
        if not ids:
            return None
        run_id = max(ids)
    if not RUN_ID_RE.match(run_id):
        raise NotFound(run_id, "not a run id (letters, digits, '.', '_', '-')")
    path = store.fs.path("runs", f"{run_id}.json")
    if not store.fs.exists(path):
        raise NotFound(path, f"no run record {run_id!r}")
    try:
        run = parse_json(store.fs.read_bytes(path), FORMAT, "a run record")
    except HeaderMismatch as e:
        raise FormatError(path, str(e)) from None
    if not isinstance(run.get("stages", []), list):
        raise FormatError(path, "run record must have a 'stages' list")
    return {"run_id": run_id, **run}
