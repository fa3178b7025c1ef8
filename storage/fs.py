"""The store's view of its root: one fsspec filesystem, names that cannot escape it,
and writes that are atomic (a reader sees the old file or the new one, never half).

Local roots get temp-file + fsync + os.replace; object stores (s3://, gs://, memory://)
get a single PUT, which those stores already make atomic per object.
"""

from __future__ import annotations

import io
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

import fsspec
from fsspec.implementations.local import LocalFileSystem

from .errors import InvalidName, NotFound, StoreError

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
FINGERPRINT_RE = re.compile(r"^[0-9a-f]{64}$")
FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")   # a file a manifest lists: one plain name
TMP_PREFIX = ".tmp-"


def check_name(kind: str, name: str) -> str:
    """Table and corpus names are short identifiers: safe as paths and as SQL view names."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidName(str(name), f"{kind} name must match {NAME_RE.pattern} "
                                     "(lowercase letters, digits, underscores)")
    return name


def check_fingerprint(fp: str) -> str:
    if not isinstance(fp, str) or not FINGERPRINT_RE.match(fp):
        raise InvalidName(str(fp), "fingerprint must be 64 lowercase hex digits")
    return fp


class StoreFS:
    """Paths relative to the store root, on whatever filesystem the root URL names."""

    def __init__(self, root: str | os.PathLike):
        root = os.fspath(root)
        protocol, _ = fsspec.core.split_protocol(root)
        # Other processes (writers, Dask workers) change a shared store: an object store's
        # listing cache would answer "no such manifest" after another process wrote one.
        options = {} if protocol in (None, "file", "local") else {"use_listings_cache": False}
        try:
            self.fs, path = fsspec.core.url_to_fs(root, **options)
        except ImportError as e:   # fsspec names the package, e.g. "Install s3fs to access S3"
            raise StoreError(root, f"{e} (pip install 'embcache[s3]' for s3://)") from None
        self.local = isinstance(self.fs, LocalFileSystem)
        self.root = os.path.abspath(path) if self.local else path.rstrip("/")
        self.url = self.root if self.local else self.fs.unstrip_protocol(self.root)

    # -- paths -----------------------------------------------------------
    def path(self, *parts: str) -> str:
        """Absolute path of a store-relative location; parts never contain '..' or '/'-tricks."""
        for p in parts:
            if not p or p in (".", "..") or "\\" in p or p.startswith("/") or "/.." in p or "../" in p:
                raise InvalidName(p, "path part would leave the store root")
        return "/".join([self.root, *parts])

    def relative(self, path: str) -> str:
        return path[len(self.root) + 1:] if path.startswith(self.root + "/") else path

    # -- reading ---------------------------------------------------------
    def exists(self, path: str) -> bool:
        return self.fs.exists(path)

    def read_bytes(self, path: str) -> bytes:
        try:
            if not self.local:   # one GET (below s3fs's 50 MB block): a replaced manifest reads old or new
                return self.fs.cat_file(path)
            with self.fs.open(path, "rb") as f:
                return f.read()
        except FileNotFoundError as e:
            raise NotFound(path, "file does not exist") from e

    def listdir(self, path: str) -> list[str]:
        """Base names in a directory; an absent directory is empty."""
        try:
            entries = self.fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def sizes(self, path: str) -> dict[str, int]:
        """{base name: size in bytes} of the files in a directory (one listing); absent: empty."""
        try:
            entries = self.fs.ls(path, detail=True)
        except FileNotFoundError:
            return {}
        return {e["name"].rstrip("/").rsplit("/", 1)[-1]: e.get("size") for e in entries
                if e.get("type") != "directory"}

    def info(self, path: str) -> dict:
        return self.fs.info(path)

    def is_dir(self, path: str) -> bool:
        return self.fs.isdir(path)

    def mtime(self, path: str) -> float:
        info = self.fs.info(path)
        for key in ("mtime", "LastModified", "last_modified", "created"):
            if key in info and info[key] is not None:
                v = info[key]
                return v.timestamp() if hasattr(v, "timestamp") else float(v)
        return 0.0

    # -- writing ---------------------------------------------------------
    def makedirs(self, path: str) -> None:
        self.fs.makedirs(path, exist_ok=True)

    def write_atomic(self, path: str, data: bytes) -> None:
        """Write `data` at `path` so that no reader ever sees a partial file."""
        with self.atomic_writer(path) as f:
            f.write(data)

    @contextmanager
    def atomic_writer(self, path: str) -> Iterator[BinaryIO]:
        """A binary file to write `path` through, streamed: what write_atomic does for bytes.

        Local: a temporary file beside `path`, fsync'd and renamed into place when the block
        ends without an exception (removed otherwise). Object stores: collected in memory,
        then one PUT."""
        parent = path.rsplit("/", 1)[0]
        if not self.local:
            buf = io.BytesIO()
            yield buf
            self.makedirs(parent)
            self.fs.pipe_file(path, buf.getvalue())
            return
        tmp = f"{parent}/{TMP_PREFIX}{uuid.uuid4().hex}-{path.rsplit('/', 1)[1]}"
        try:
            self.makedirs(parent)
            with open(tmp, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            _unlink_quietly(tmp)
            raise StoreError(path, f"write failed: {e.strerror or e}") from e
        except BaseException:
            _unlink_quietly(tmp)
            raise
        _fsync_dir(parent)

    def delete(self, path: str) -> None:
        try:
            self.fs.rm(path, recursive=self.fs.isdir(path))
        except FileNotFoundError:
            pass
        except OSError as e:  # a read-only store, say: name the path, not a traceback
            raise StoreError(path, f"delete failed: {e.strerror or e}") from e

    def move(self, path: str, to: str) -> None:
        """Move a file within the store (repair moves damaged files aside; nothing is deleted)."""
        try:
            self.makedirs(to.rsplit("/", 1)[0])
            if self.local:
                os.replace(path, to)
            else:
                self.fs.mv(path, to)
        except OSError as e:
            raise StoreError(path, f"move to {to} failed: {e.strerror or e}") from e

    def walk_files(self, path: str):
        """Every file under `path` (recursively), as absolute paths."""
        try:
            found = self.fs.find(path)
        except FileNotFoundError:
            return []
        return sorted(found)


def _unlink_quietly(path: str) -> None:
    """Best-effort cleanup after a failed write: on a read-only or full disk the unlink
    itself may fail (EROFS before ENOENT), and must not hide the write's own error."""
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
