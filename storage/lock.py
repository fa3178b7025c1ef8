"""Commit lock: writers serialize manifest updates through it; readers never take it.

On a local root it is an OS file lock (filelock), released by the kernel if the
holder dies, so a SIGKILLed writer never leaves a stale lock. Object stores have
no such primitive: there the store is single-writer per process (documented in
README), and the lock only serializes threads of this process.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import filelock

from .errors import LockTimeout
from .fs import StoreFS

_process_locks: dict[str, threading.Lock] = {}
_guard = threading.Lock()


@contextmanager
def commit_lock(fs: StoreFS, path: str, timeout: float = 120.0):
    """Hold the lock at `path` (a file beside the manifest it protects).

    Threads of this process serialize on an in-process lock first; on a local root the
    OS file lock then serializes processes.
    """
    with _guard:
        tlock = _process_locks.setdefault(path, threading.Lock())
    if not tlock.acquire(timeout=timeout):
        raise LockTimeout(path, f"another thread held the commit lock for over {timeout:.0f} s")
    try:
        if not fs.local:
            yield
            return
        fs.makedirs(path.rsplit("/", 1)[0])
        lock = filelock.FileLock(path, timeout=timeout)
        try:
            lock.acquire()
        except filelock.Timeout as e:
            raise LockTimeout(path, f"another writer held the commit lock for over {timeout:.0f} s") from e
        try:
            yield
        finally:
            lock.release()
    finally:
        tlock.release()
