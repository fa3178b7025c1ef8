"""Sources in object stores and other fsspec filesystems: s3://, gs://, az://, memory://.

A source path with a protocol names objects, not local files: one object, a prefix (every
object under it, as a directory source is every file under it), or a glob over keys
("s3://bucket/news/**/*.jsonl": "**" is any number of folders, as in local globs). Names
starting with "." are skipped at any depth, as local walks skip hidden files and folders.
fsspec finds the filesystem (s3fs for s3://: `pip install 'embcache[s3]'`), and s3fs its
credentials and endpoint where botocore looks (AWS_PROFILE, AWS_ACCESS_KEY_ID...,
AWS_ENDPOINT_URL_S3, ~/.aws). One listing gives each object's size and version (its
VersionId when listed with one, else its ETag): what change detection records
(stages/source_state.py), so an unchanged object is neither opened nor read again.

    >>> find_objects("s3://bucket/news/**/*.jsonl")                        # doctest: +SKIP
    ('s3://bucket/news', [Listed(path='s3://bucket/news/2024/a.jsonl', rel='2024/a.jsonl',
                                 state=ObjectState(size=812, mtime_ns=..., version='etag:"9b2c…"'))])

Listings are never cached (a long-lived process, `embcache schedule`, must see new
objects), and what `datasets` opens goes through the same uncached filesystem
(`STORAGE_OPTIONS`).
"""

from __future__ import annotations

import functools
import glob
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Iterator, NamedTuple

import fsspec

from .errors import SourceNotFound, SourceUnavailable
from .walk import hidden, matches

LOCAL_PROTOCOLS = (None, "file", "local")
STORAGE_OPTIONS = {"use_listings_cache": False}   # every filesystem made here, and datasets' (readers.py)
EXTRAS = {"s3": "embcache[s3]", "s3a": "embcache[s3]"}   # the extra that installs a protocol's filesystem
VERSION_KEYS = ("VersionId", "version_id", "generation")   # S3 (version-aware), Azure, GCS
ETAG_KEYS = ("ETag", "etag", "md5Hash")
MTIME_KEYS = ("LastModified", "last_modified", "mtime", "updated", "created")
HEAD_BYTES = 8192                   # an object's first bytes, fetched once for every probe of them


@dataclass(frozen=True)
class ObjectState:
    """What identifies one version of an object: recorded with the snapshot that read it."""

    size: int                      # bytes
    mtime_ns: int                  # last modified, ns since the epoch (0: the store gives none)
    version: str | None            # "version:<VersionId>" or "etag:<ETag>"; None: the store gives
                                   # neither (memory://), so (size, mtime_ns) stands for it


class Listed(NamedTuple):
    path: str                      # the object's URL, spelled as the source spells its base
    rel: str                       # relative to that base, "/"-separated
    state: ObjectState


def is_url(path: str | os.PathLike) -> bool:
    """A path with a protocol other than the local filesystem's ("s3://b/k", not "data/x", "C:/x")."""
    protocol, _ = fsspec.core.split_protocol(os.fspath(path))
    return protocol not in LOCAL_PROTOCOLS and len(protocol or "") > 1      # "C:" is a Windows drive


def filesystem(url: str):
    """(fsspec filesystem, path without protocol) of a source URL; SourceUnavailable if its
    filesystem is not installed or not known."""
    try:
        return fsspec.core.url_to_fs(url, **dict(STORAGE_OPTIONS))
    except ImportError as e:         # fsspec names the package ("Install s3fs to access S3")
        protocol = fsspec.core.split_protocol(url)[0]
        extra = f": pip install '{EXTRAS[protocol]}'" if protocol in EXTRAS else ""
        raise SourceUnavailable(url, f"{protocol}:// sources need a filesystem that is not installed "
                                     f"({e}){extra}") from None
    except ValueError as e:          # "Protocol not known: foo"
        raise SourceUnavailable(url, f"{e}: not a filesystem fsspec knows") from None


def _remote_errors() -> tuple[type[BaseException], ...]:
    """What listing or reading an object can raise besides OSError: botocore's own errors
    (no credentials, an endpoint that does not answer), when botocore is installed."""
    try:
        from botocore.exceptions import BotoCoreError
    except ImportError:
        return (OSError,)
    return (OSError, BotoCoreError)


@contextmanager
def answering(url: str) -> Iterator[None]:
    """Turn what an object store raises into SourceNotFound / SourceUnavailable naming `url`."""
    try:
        yield
    except FileNotFoundError as e:
        raise SourceNotFound(url, f"no such bucket or object ({e})") from None
    except PermissionError as e:
        raise SourceUnavailable(url, f"access denied: {e}") from None
    except _remote_errors() as e:
        name = type(e).__name__
        if name == "NoCredentialsError":
            raise SourceUnavailable(url, "no credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                                         "or AWS_PROFILE (any botocore credential source works); "
                                         "AWS_ENDPOINT_URL_S3 for an S3-compatible server") from None
        raise SourceUnavailable(url, f"cannot list or read the object store ({name}: {e}); check the "
                                     "endpoint (AWS_ENDPOINT_URL_S3) and the network") from None


def state_of(info: dict) -> ObjectState:
    """An object's ObjectState from its listing entry (s3fs, gcsfs, adlfs, memory spell them apart)."""
    version = next((f"version:{info[k]}" for k in VERSION_KEYS if info.get(k)), None)
    version = version or next((f"etag:{info[k]}" for k in ETAG_KEYS if info.get(k)), None)
    modified = next((info[k] for k in MTIME_KEYS if info.get(k) is not None), None)
    if hasattr(modified, "timestamp"):
        mtime_ns = int(modified.timestamp() * 1e9)
    else:
        mtime_ns = int(float(modified) * 1e9) if modified is not None else 0
    return ObjectState(int(info.get("size") or 0), mtime_ns, version)


def find_objects(url: str) -> tuple[str, list[Listed]]:
    """(base URL, sorted non-hidden objects) of an object, a prefix or a glob; SourceNotFound
    if nothing matches. The base is what ids are relative to, by the local rule: an object's
    folder, the prefix itself, a glob's folders before its first wildcard. An object whose
    name looks like a glob ("a[1].txt") is that object, as a local file is."""
    url = url.rstrip("/")
    fs, path = filesystem(url)
    with answering(url):
        info = _info(fs, path)
        if info is not None and info.get("type") != "directory":
            base = url.rsplit("/", 1)[0]
            return base, [Listed(url, url[len(base) + 1:], state_of(info))]
        if glob.has_magic(path):
            base, pattern = _glob_split(url)
            found = _under(fs, base, lambda parts: matches(parts, pattern))
        else:
            base, found = url, _under(fs, url, lambda parts: True)
    if not found:
        raise SourceNotFound(url, "matches no object")
    return base, found


def _info(fs, path: str) -> dict | None:
    try:
        return fs.info(path)
    except FileNotFoundError:
        return None


def _glob_split(url: str) -> tuple[str, list[str]]:
    """("s3://b/news", ["**", "*.jsonl"]) of "s3://b/news/**/*.jsonl"."""
    protocol, rest = url.split("://", 1)
    parts = rest.split("/")
    first = next(k for k, part in enumerate(parts) if glob.has_magic(part))
    if first == 0:
        raise SourceNotFound(url, "a glob cannot name the bucket: give the bucket, then the pattern")
    return f"{protocol}://{'/'.join(parts[:first])}", [p for p in parts[first:] if p]


def _under(fs, base: str, keep) -> list[Listed]:
    """The non-hidden objects under the prefix `base` whose relative parts `keep` accepts: one
    flat listing (s3fs pages through it, 1,000 keys a request, with no request per folder)."""
    root = fs._strip_protocol(base).rstrip("/")
    out = []
    for name, info in fs.find(root, detail=True).items():
        rel = name[len(root) + 1:] if name.startswith(root + "/") else None
        if info.get("type") == "directory" or not rel or name.endswith("/"):
            continue                 # "folder/" marker objects some tools write
        parts = rel.split("/")
        if any(hidden(p) for p in parts) or not keep(parts):
            continue
        out.append(Listed(f"{base}/{rel}", rel, state_of(info)))
    return sorted(out)


def has_subfolders(url: str) -> bool:
    """A prefix with a non-hidden folder directly under it (a folder source, as for a directory)."""
    url = url.rstrip("/")
    fs, path = filesystem(url)
    if glob.has_magic(path):
        return False
    with answering(url):
        try:
            entries = fs.ls(path, detail=True)
        except FileNotFoundError:
            return False
    return any(e.get("type") == "directory" and not hidden(e["name"].rstrip("/").rsplit("/", 1)[-1])
               for e in entries)


# ---------------------------------------------------------------- reading


@contextmanager
def open_binary(path: str, block_size: int | None = None) -> Iterator[IO[bytes]]:
    """A local file or an object, opened for reading bytes; an object is fetched `block_size`
    bytes at a time (None: its filesystem's default, 50 MB read-ahead for s3fs)."""
    if not is_url(path):
        with open(path, "rb") as f:
            yield f
        return
    fs, stripped = filesystem(path)
    options = {} if block_size is None else {"block_size": block_size}
    with answering(path), fs.open(stripped, "rb", **options) as f:
        yield f


def read_head(path: str, n: int, state: object = None) -> bytes:
    """The first `n` bytes of a local file or an object. An object's first HEAD_BYTES are one
    ranged GET, kept per (URL, `state`): the probes of one object version share it."""
    if not is_url(path):
        with open(path, "rb") as f:
            return f.read(n)
    if n <= HEAD_BYTES:
        return _object_head(path, state)[:n]
    fs, stripped = filesystem(path)
    with answering(path):
        return fs.cat_file(stripped, start=0, end=n)


@functools.lru_cache(maxsize=64)
def _object_head(url: str, state: object) -> bytes:
    if getattr(state, "size", None) == 0:
        return b""                   # S3 answers a range of an empty object with 416
    fs, stripped = filesystem(url)
    with answering(url):
        return fs.cat_file(stripped, start=0, end=HEAD_BYTES)


def read_objects(urls: list[str]) -> dict[str, bytes]:
    """Whole objects, fetched concurrently (fsspec's cat): {url: bytes}."""
    if not urls:
        return {}
    fs, _ = filesystem(urls[0])
    stripped = {fs._strip_protocol(u): u for u in urls}
    with answering(urls[0]):
        got = fs.cat(list(stripped), on_error="raise")
    return {stripped[k]: v for k, v in got.items()}
