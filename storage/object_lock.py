"""The commit lock on S3-compatible object stores: a lease held through conditional writes.

Object stores have no rename and no flock, but S3 (since 2024) and S3-compatible servers
(MinIO, moto) refuse a PUT with `If-None-Match: *` when the object exists, and a PUT or
DELETE with `If-Match: <etag>` when the object changed since. That is enough for a lease:

    acquire   PUT  .lock  If-None-Match: *     created: held (body: owner, host, pid, renewal)
              else HEAD .lock → etag; when the same etag has stood for `lease` seconds by
              the waiter's own clock (the holder stopped renewing: it died), take it over
              with PUT If-Match: etag. Only one waiter can win: the etag changes.
    hold      a thread renews every lease/4 s: PUT If-Match: <our etag> (a new body, a new etag)
    release   DELETE .lock  If-Match: <our etag>

No clocks are compared across machines: a waiter only measures how long the lock object
stayed unchanged. A holder stalled for longer than the lease can lose the lock; it finds
out when a renewal or the release fails and raises LockLost. The store stays consistent
even then (a manifest is replaced whole and lists only shards written before it), so at
worst one of two overlapping commits is dropped and its keys are computed again by the
next run.

    >>> with s3_lease(store_fs, store_fs.path("tables", "t", fp, ".lock"), timeout=60):  # doctest: +SKIP
    ...     pass  # read the manifest, append a shard, write it back
"""

from __future__ import annotations

import functools
import json
import os
import random
import socket
import threading
import time
import uuid
from contextlib import contextmanager

from .errors import LockLost, LockTimeout, StoreError
from .fs import StoreFS

LEASE_SECONDS = 30.0   # a dead holder's lock is taken over after this long without renewal
POLL_SECONDS = (0.05, 0.5)   # waiters retry after a random pause in this range (no lockstep)


def _s3_code(exc: BaseException) -> str | None:
    """The S3 error code behind an s3fs exception (s3fs keeps botocore's error as the cause)."""
    while exc is not None:
        response = getattr(exc, "response", None)
        if isinstance(response, dict) and "Error" in response:
            return str(response["Error"].get("Code"))
        exc = exc.__cause__ or exc.__context__
    return None


def _contended(exc: BaseException) -> bool:
    """Someone else holds or just changed the lock object (not a network or permission error)."""
    return isinstance(exc, FileExistsError) or _s3_code(exc) in (
        "PreconditionFailed", "412", "ConditionalRequestConflict", "409", "NoSuchKey", "404")


@functools.lru_cache(maxsize=1)
def _conditional_writes_known() -> bool:
    """Does this botocore know the conditional parameters? s3fs silently drops unknown ones,
    which would turn every conditional write into a plain one."""
    import botocore.session
    model = botocore.session.get_session().get_service_model("s3")
    put = model.operation_model("PutObject").input_shape.members
    delete = model.operation_model("DeleteObject").input_shape.members
    return {"IfNoneMatch", "IfMatch"} <= set(put) and "IfMatch" in delete


class S3Lease:
    """One lock object; `acquire` / `release` as described in the module docstring."""

    def __init__(self, fs: StoreFS, path: str, lease: float):
        if not _conditional_writes_known():
            raise StoreError(path, "this botocore cannot send conditional writes (If-None-Match/If-Match), "
                                   "which the commit lock on S3 needs: pip install 'embcache[s3]'")
        self.s3 = fs.fs
        self.path = path
        self.bucket, self.key, _ = self.s3.split_path(path)
        self.lease = lease
        self.owner = uuid.uuid4().hex
        self.etag: str | None = None
        self.lost = False
        self._renewals = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps({"format": "embcache.lock", "format_version": 1, "owner": self.owner,
                           "host": socket.gethostname(), "pid": os.getpid(), "lease_seconds": self.lease,
                           "renewal": self._renewals}).encode()

    def _put(self, **condition) -> str:
        out = self.s3.call_s3("put_object", Bucket=self.bucket, Key=self.key, Body=self._body(), **condition)
        return out["ETag"]

    def acquire(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        seen, since = None, 0.0
        while True:
            try:
                self.etag = self._put(IfNoneMatch="*")
                break
            except OSError as e:
                if not _contended(e):
                    raise StoreError(self.path, f"cannot create the lock object: {e}") from e
            try:
                etag = self.s3.call_s3("head_object", Bucket=self.bucket, Key=self.key)["ETag"]
            except FileNotFoundError:
                continue                                        # released meanwhile: try again now
            if etag != seen:
                seen, since = etag, time.monotonic()
            elif time.monotonic() - since > self.lease:        # unchanged for a whole lease: holder is gone
                try:
                    self.etag = self._put(IfMatch=etag)
                    break
                except OSError as e:
                    if not _contended(e):
                        raise StoreError(self.path, f"cannot take over the lock object: {e}") from e
                    seen = None                                 # another waiter won: watch its lease
            if time.monotonic() > deadline:
                raise LockTimeout(self.path, f"another writer held the commit lock for over {timeout:.0f} s "
                                             f"(lock object s3://{self.bucket}/{self.key})")
            time.sleep(random.uniform(*POLL_SECONDS))
        self._thread = threading.Thread(target=self._renew, name=f"lease-{self.key}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.lease / 4):
            self._renewals += 1
            try:
                self.etag = self._put(IfMatch=self.etag)
            except OSError as e:
                if _contended(e):
                    self.lost = True
                    return
                # a transient error: the next renewal tries again, well within the lease

    def release(self, raise_lost: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if not self.lost:
            try:
                self.s3.call_s3("delete_object", Bucket=self.bucket, Key=self.key, IfMatch=self.etag)
            except OSError as e:
                if not _contended(e):
                    raise StoreError(self.path, f"cannot delete the lock object: {e}") from e
                self.lost = True
        if self.lost and raise_lost:
            raise LockLost(self.path, f"the commit lock's lease ({self.lease:.0f} s) ran out while held and "
                                      "another writer took it; this commit may be dropped and recomputed")


@contextmanager
def s3_lease(fs: StoreFS, path: str, timeout: float, lease: float | None = None):
    """Hold the lock object at `path` for the block (see the module docstring)."""
    lock = S3Lease(fs, path, LEASE_SECONDS if lease is None else lease)
    lock.acquire(timeout)
    try:
        yield lock
    except BaseException:
        lock.release(raise_lost=False)   # the block's own error is the one to report
        raise
    lock.release()
