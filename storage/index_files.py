"""The vector index on disk: its config, its files, and how they are checked.

An index is a cache entry like the matrix beside it (storage/matrix.py): keyed by the rows
it covers, checked before use, rebuildable. Files under tables/<name>/<fp>/derived/:

    ann-<column>-<setkey>.json          the index of the matrix of shard set <setkey>:
        {"format": "embcache.ann_index", "format_version": 2, "rows": N, "shards": [...],
         "nprobe": 24, "segments": [{"file", "role", "lo", "hi", "bytes", "sha256",
         "keys_sha256", "stamp"}, ...], ..., "meta_sha256": "<sha256 of the rest>"}
    ann-<column>-seg-<id>.faiss         one segment: faiss.write_index of an IVF-SQ8 index whose
                                        ids are matrix rows lo..hi-1 (role "base" or "delta"),
                                        or the trained, empty index ("template") deltas start from

Segments are written once and never rewritten: a commit that adds rows adds a delta
segment and a new .json listing the old segments plus it; a merge writes one new base.
Every segment's sha256 and size are in the .json, and the .json carries the sha256 of
its own other fields, so an edited or damaged .json or segment is seen before use
(once per process, storage/verified.py), by `embcache index`, `verify` and `status`.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from typing import Literal

import numpy as np

from . import manifest as mf
from .sealed import read_sealed, seal
from .errors import FormatError, NotFound, StoreError
from .fs import TMP_PREFIX
from .matrix import derived_dir
from .table import Table
from .verified import VERIFIED, file_sha256, stamp

ANN_FORMAT = ("embcache.ann_index", 2)
Role = Literal["template", "base", "delta"]


@dataclass(frozen=True)
class AnnConfig:
    """The IVF-SQ8 index and how queries use it (faiss's names in brackets).

    Chosen by measurement (`benchmarks/query.py --recall`): on GloVe-400k (held-out queries)
    it reached HNSW's (M 32) recall in about the same time per query or less, with an index
    a seventh of HNSW's (27 MB against 188 MB: 8-bit codes, no float32 copy, no graph),
    built in a fifth of the time, and takes new rows without touching the rows it has.
    """
    nlist: int = 0                  # clusters [nlist]; 0: 4·√rows rounded to a power of 2, ≥ 39 rows each
    nprobe: int = 0                 # clusters scanned per query [nprobe]; 0: the smallest that reaches
                                    #   target_recall on stored rows, measured when the index is built
    target_recall: float = 0.96     # recall@10 the measured nprobe must reach on 256 stored rows: 0.95
                                    #   plus a margin for queries that are not stored rows
    rerank: int = 4                 # k × rerank candidates re-scored exactly from the matrix
    min_rows: int = 20_000          # smaller tables are searched exactly (fast enough, exact)
    merge_fraction: float = 0.25    # deltas past this share of the base's rows are merged into a new base
    search_threads: int = 1         # OpenMP threads per query: 1 is 4x faster on 2 busy cores
    build_threads: int = 0          # OpenMP threads while building (0: faiss's default, all)

    def __post_init__(self):
        if self.nlist < 0 or self.nprobe < 0 or self.rerank < 1 or self.min_rows < 0 \
                or not 0 < self.target_recall <= 1 or self.merge_fraction < 0:
            raise ValueError(f"bad AnnConfig {self}: counts must be ≥ 0, rerank ≥ 1, target_recall in (0, 1]")

    def built_alike(self, other: AnnConfig) -> bool:
        """Whether an index built under `other` is what this config would build."""
        return (self.nlist, self.nprobe, self.target_recall) == (other.nlist, other.nprobe, other.target_recall)


def require_faiss():
    try:
        import faiss
    except ImportError:
        raise StoreError("faiss", "a vector index needs faiss: pip install 'embcache[ann]'") from None
    return faiss


def have_faiss() -> bool:
    try:
        require_faiss()
        return True
    except StoreError:
        return False


def padded(dim: int) -> int:
    """Index width: faiss's SIMD scalar-quantizer code needs a multiple of 8 (GloVe's 50 -> 56:
    zero columns change no inner product; the scalar fallback was 5x slower, BENCHMARKS.md)."""
    return -(-dim // 8) * 8


def pad(x: np.ndarray, width: int) -> np.ndarray:
    """(N, D) float32 rows widened with zero columns to (N, width), C-contiguous."""
    x = np.asarray(x, dtype=np.float32)
    if x.shape[1] == width:
        return np.ascontiguousarray(x)
    out = np.zeros((len(x), width), np.float32)
    out[:, :x.shape[1]] = x
    return out


def keys_sha256(keys: np.ndarray) -> str:
    """What rows a segment holds, in order: sha256 of the matrix keys (dtype and bytes)."""
    keys = np.ascontiguousarray(keys)
    return hashlib.sha256(keys.dtype.str.encode() + b"\0" + keys.tobytes()).hexdigest()


# -- paths and metadata --------------------------------------------------------------------------
def meta_path(t: Table, column: str, setkey: str) -> str:
    return f"{derived_dir(t)}/ann-{column}-{setkey}.json"


def segment_path(t: Table, name: str) -> str:
    return f"{derived_dir(t)}/{name}"


def read_meta(t: Table, path: str) -> dict:
    """The parsed .json after its format, its own checksum and its table are checked."""
    return read_sealed(t, path, ANN_FORMAT, "vector index")


def write_meta(t: Table, path: str, meta: dict) -> dict:
    meta = seal(meta)
    t.fs.write_atomic(path, mf.dump(meta))
    return meta


def metas(t: Table, column: str) -> tuple[list[tuple[str, dict]], list[tuple[str, str]]]:
    """([(setkey, meta)] readable, [(path, why)] damaged) for the column's index .json files.
    A .json of an older format (version 1: the HNSW index) is neither: `build_index` replaces it."""
    good, bad = [], []
    prefix = f"ann-{column}-"
    for base in t.fs.listdir(derived_dir(t)):
        if base.startswith(prefix) and base.endswith(".json") and not base.startswith(prefix + "seg-"):
            path = f"{derived_dir(t)}/{base}"
            try:
                good.append((base[len(prefix):-len(".json")], read_meta(t, path)))
            except FormatError as e:
                if _older_format(t, path) is None:
                    bad.append((path, e.reason))
            except StoreError as e:
                bad.append((path, e.reason))
    return good, bad


def _older_format(t: Table, path: str) -> int | None:
    try:
        obj = json.loads(t.fs.read_bytes(path))
        version = obj.get("format_version") if obj.get("format") == ANN_FORMAT[0] else None
    except (StoreError, ValueError, AttributeError):
        return None
    return version if isinstance(version, int) and version < ANN_FORMAT[1] else None


def write_segment(t: Table, column: str, index, role: Role, lo: int, hi: int, keys: np.ndarray | None) -> dict:
    """Write a faiss index as a new segment file (temp name, then renamed); its entry for the .json."""
    faiss = require_faiss()
    name = f"ann-{column}-seg-{uuid.uuid4().hex[:16]}.faiss"
    path = segment_path(t, name)
    tmp = f"{derived_dir(t)}/{TMP_PREFIX}{name}"
    try:
        faiss.write_index(index, tmp)
        size, sha = file_sha256(t.fs, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    VERIFIED.note(t.fs, path, size, sha)
    return {"file": name, "role": role, "lo": lo, "hi": hi, "bytes": size, "sha256": sha,
            "keys_sha256": None if keys is None else keys_sha256(keys), "stamp": list(stamp(t.fs, path))}


def read_segment(t: Table, seg: dict):
    """The faiss index of a segment, after its bytes are checked (once per process)."""
    faiss = require_faiss()
    path = segment_path(t, seg["file"])
    VERIFIED.check(t.fs, path, seg["bytes"], seg["sha256"], "derived vector index segment")
    return faiss.read_index(path)


def segment_problem(t: Table, seg: dict, full: bool) -> str | None:
    """Why a segment file does not match its entry, or None. full=False (status) hashes only a
    file whose size, mtime or inode changed since it was written; full=True (verify) always."""
    path = segment_path(t, seg["file"])
    try:
        now = stamp(t.fs, path)
    except NotFound:
        return "missing: the index lists it, the file does not exist"
    if now[0] != seg["bytes"]:
        return f"size {now[0]} bytes, the index says {seg['bytes']} (truncated?)"
    if not full and list(now) == seg.get("stamp"):
        return None
    if file_sha256(t.fs, path)[1] != seg["sha256"]:
        return "sha256 does not match the index (bytes changed on disk)"
    return None


def index_problems(t: Table, full: bool = True) -> tuple[int, list[tuple[str, str, str]]]:
    """(files checked, [(path, column, why)]) for a table's index files, every column: unreadable
    or edited .json files, missing, truncated or changed segments. An index of an older format
    is not damage (it is not used, and the next `build_index` replaces it)."""
    checked, out = 0, []
    if not t.fs.local or not t.fs.exists(derived_dir(t)):
        return checked, out
    columns = {b[len("ann-"):].split("-", 1)[0] for b in t.fs.listdir(derived_dir(t))
               if b.startswith("ann-") and b.endswith(".json")}
    for column in sorted(columns):
        good, bad = metas(t, column)
        checked += len(good) + len(bad)
        out += [(p, column, why) for p, why in bad]
        for _, meta in good:
            for seg in meta["segments"]:
                checked += 1
                why = segment_problem(t, seg, full)
                if why:
                    out.append((segment_path(t, seg["file"]), column, why))
    return checked, out


def remove_unreferenced(t: Table, column: str, keep: dict) -> None:
    """Every index file of the column that `keep` (the current .json) does not use: older .json
    files and their segments (a process that loaded them keeps them in memory: unlinking is safe)."""
    used = {seg["file"] for seg in keep["segments"]}
    current = os.path.basename(meta_path(t, column, keep["setkey"]))
    for base in t.fs.listdir(derived_dir(t)):
        if base.startswith(f"ann-{column}-") and base not in used and base != current:
            t.fs.delete(f"{derived_dir(t)}/{base}")
