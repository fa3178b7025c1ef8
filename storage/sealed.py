"""The JSON beside a derived file (a vector matrix, an index's segments), sealed with its own
sha256: checked like a shard's bytes before it is trusted, so an edited or damaged one is
damage (rebuilt), never data.

    {"format": …, "table": …, "fingerprint": …, …, "meta_sha256": <sha256 of the rest>}
"""

from __future__ import annotations

import hashlib

from . import manifest as mf
from .errors import CorruptShard


def checksum(meta: dict) -> str:
    """sha256 of the metadata's canonical JSON, its own checksum left out."""
    return hashlib.sha256(mf.dump({k: v for k, v in meta.items() if k != "meta_sha256"})).hexdigest()


def seal(meta: dict) -> dict:
    """`meta` with its checksum, ready to write (mf.dump)."""
    return {**meta, "meta_sha256": checksum(meta)}


def read_sealed(t, path: str, fmt: mf.Format, what: str) -> dict:
    """The parsed metadata at `path` after its format (FormatError), its own checksum and the
    table it names (CorruptShard) are checked; `t`: the table it was derived from."""
    meta = mf.load(path, t.fs.read_bytes(path), fmt, what)
    if meta.get("meta_sha256") != checksum(meta):
        raise CorruptShard(path, f"{what} metadata does not match its own sha256 (edited or damaged)")
    if meta.get("table") != t.name or meta.get("fingerprint") != t.fingerprint:
        raise CorruptShard(path, f"{what} names {meta.get('table')}/{str(meta.get('fingerprint'))[:12]}")
    return meta
