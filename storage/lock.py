"""Commit lock: writers serialize manifest updates through it; readers never take it.

On a local root it is an OS file lock (filelock), released by the kernel if the
holder dies, so a SIGKILLed writer never leaves a stale lock. On S3 (s3://, any
S3-compatible server) it is a lease on a lock object held through conditional writes
(storage/object_lock.py): processes on any machine serialize, and a dead holder's lock
is taken over after the lease. memory:// lives in one process, where the thread lock
is the whole story. Other object stores (gs://, az://, …) get only the thread lock:
there the store is single-writer (one process at a time), as README says.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import filelock

from .errors import LockTimeout, StoreError
from .fs import StoreFS

_process_locks: dict[str, threading.Lock] = {}
_guard = threading.Lock()


@contextmanager
def commit_lock(fs: StoreFS, path: str, timeout: float = 120.0):
    """Hold the lock at `path` (a file beside the manifest it protects).

    Threads of this process serialize on an in-process lock first; then the OS file lock
    (local root) or the S3 lease (s3://) serializes processes.
    """
    with _guard:
        tlock = _process_locks.setdefault(path, threading.Lock())
    if not tlock.acquire(timeout=timeout):
        raise LockTimeout(path, f"another thread held the commit lock for over {timeout:.0f} s")
    try:
        if not fs.local:
            protocols = fs.fs.protocol if isinstance(fs.fs.protocol, tuple) else (fs.fs.protocol,)
            if "s3" in protocols:
                from .object_lock import s3_lease
                with s3_lease(fs, path, timeout):
                    yield
            else:
                yield
            return
        lock = filelock.FileLock(path, timeout=timeout)
        try:
            fs.makedirs(path.rsplit("/", 1)[0])
            lock.acquire()
        except filelock.Timeout as e:
            raise LockTimeout(path, f"another writer held the commit lock for over {timeout:.0f} s") from e
        except OSError as e:  # a read-only or full store: the lock file cannot be created
            raise StoreError(path, f"cannot take the commit lock: {e.strerror or e}") from e
        try:
            yield
        finally:
            lock.release()
    finally:
        tlock.release()
