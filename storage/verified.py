"""Which files this process has already checked against their manifests: verify once, then trust.

A shard is immutable once committed, so hashing it on every read only costs time: the
memo below remembers each file whose bytes matched (path, sha256, size) for the life
of the process. On a local disk it also remembers the file's stat (size, mtime, inode)
and re-hashes whenever that changes, so a shard replaced, truncated or rewritten after
its first check is caught at the next read. The trade-off: bit rot that leaves the
stat untouched goes unnoticed until the process restarts or `embcache verify` runs
(which always re-hashes everything); object stores are trusted by (path, sha256, size)
alone, since a HEAD per shard per query would cost more than the read.

    verified = Verified()                    # one per reader: embcache.Store keeps its own
    verified.check(fs, path, size, sha256)   # hashes the file the first time, then stats it

VERIFIED below is the storage layer's own memo: Table.read_shard notes each shard whose
bytes it has just checked, and storage/ann.py checks index files with it. The public read
path (embcache.Store) does not share it.
"""

from __future__ import annotations

import hashlib
import os
import threading

from .errors import CorruptShard, NotFound
from .fs import StoreFS

CHUNK = 1 << 22   # 4 MiB reads while hashing: a 1.5 GB matrix never sits in memory twice


def stamp(fs: StoreFS, path: str) -> tuple | None:
    """(size, mtime_ns, inode) of a local file; None on object stores; NotFound when it is gone."""
    if not fs.local:
        return None
    try:
        st = os.stat(path)
    except FileNotFoundError as e:
        raise NotFound(path, "file does not exist") from e
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def file_sha256(fs: StoreFS, path: str) -> tuple[int, str]:
    """(size, sha256) of a file, read in chunks."""
    h, size = hashlib.sha256(), 0
    try:
        with fs.fs.open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
                size += len(chunk)
    except FileNotFoundError as e:
        raise NotFound(path, "file does not exist") from e
    return size, h.hexdigest()


class Verified:
    """A memo: (path, sha256, size) -> the stat the file had when its bytes matched."""

    def __init__(self):
        self._seen: dict[tuple[str, str, int], tuple | None] = {}
        self._stat: dict[str, tuple | None] = {}          # path -> stat when last verified
        self._lock = threading.Lock()

    def check(self, fs: StoreFS, path: str, size: int, sha256: str, kind: str = "committed shard") -> None:
        """Raise CorruptShard unless the file at `path` has `size` bytes hashing to `sha256`."""
        key = (path, sha256, size)
        try:
            now = stamp(fs, path)
            with self._lock:
                if key in self._seen and self._seen[key] == now:
                    return
            actual_size, actual = file_sha256(fs, path)
        except NotFound as e:
            raise CorruptShard(path, f"{kind} is missing: the manifest lists it, the file does not exist") from e
        if actual_size != size:
            raise CorruptShard(path, f"size {actual_size} bytes, manifest says {size} (truncated?)")
        if actual != sha256:
            raise CorruptShard(path, f"sha256 {actual[:12]}… does not match manifest {sha256[:12]}… "
                                     "(bytes changed on disk)")
        self.note(fs, path, size, sha256, now)

    def note(self, fs: StoreFS, path: str, size: int, sha256: str, when: tuple | None = ...) -> None:
        """Record a file whose bytes a caller has just checked (e.g. a shard read in full)."""
        try:
            when = stamp(fs, path) if when is ... else when
        except NotFound:
            return
        with self._lock:
            self._seen[(path, sha256, size)] = when
            self._stat[path] = when

    def is_current(self, fs: StoreFS, path: str) -> bool:
        """The file still has the stat it had when verified (always True on object stores)."""
        with self._lock:
            known = self._stat.get(path, ...)
        return known is not ... and known == stamp(fs, path)

    def forget(self) -> None:
        """Drop every entry: the next read of each file hashes it again (tests, `verify`)."""
        with self._lock:
            self._seen.clear()
            self._stat.clear()


VERIFIED = Verified()
