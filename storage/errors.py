"""Named errors of the feature store. Each carries the path it concerns and why."""

from __future__ import annotations

import difflib
from typing import Iterable


def did_you_mean(name: str, known: Iterable[str]) -> str | None:
    """The name of `known` closest to a mistyped `name` (difflib's ratio >= 0.6), or None.

    >>> did_you_mean("tweet", ["bbc", "tweets"]), did_you_mean("max_lenght", ["max_length", "pooling"])
    ('tweets', 'max_length')
    """
    close = difflib.get_close_matches(name, [k for k in known if k != name], n=1, cutoff=0.6)
    return close[0] if close else None


class StoreError(Exception):
    """Base class: something about the store at `path` is wrong, for `reason`."""

    def __init__(self, path: str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class FingerprintError(StoreError):
    """A config or spec could not be hashed canonically (never falls back to a random key)."""


class InvalidName(StoreError):
    """A table, corpus or file name that is not allowed (it could escape the store root)."""


class FormatError(StoreError):
    """A manifest, spec or snapshot file has a format version or layout this code does not read."""


class CorruptShard(StoreError):
    """A committed shard is missing, truncated, or its bytes do not match the manifest checksum."""

    def __init__(self, path: str, reason: str):
        super().__init__(path, reason)
        if "/tables/" in self.path or "/corpora/" in self.path:   # what `embcache repair` can fix
            self.args = (f"{self.path}: {reason} (`embcache repair` moves it aside; the next run recomputes "
                         "what it held)",)


class SchemaMismatch(StoreError):
    """Rows written to a table do not have the schema its first shard fixed."""


class NotFound(StoreError):
    """A table, fingerprint, corpus, snapshot or key that the store does not have."""


class LockTimeout(StoreError):
    """Another writer held the lock longer than we were willing to wait."""


class LockLost(StoreError):
    """An object-store lease ran out while held (its holder stalled past it) and another writer took it."""


class QueryRefused(StoreError):
    """A SQL statement that is not a read-only query over the store."""


class QueryLimit(QueryRefused):
    """A SQL statement that ran past its time, memory or row limit (storage.sql.QueryLimits)."""
