"""A table's vectors as one contiguous float32 matrix, kept beside the table: the warm read path.

    m = WarmMatrices().get(store.open("bert_features"))   # built once per shard set, then loaded
    m.rows_of(["3f2a…", "9bc1…"])                # row positions of keys (binary search)
    rows, scores = m.topk(q, k=10)               # exact cosine, (Q, k) each

A derived artifact, a cache entry like any other: keyed by what it came from, checked
before use, rebuildable, never the only copy. Files under tables/<name>/<fp>/derived/:

    matrix-<column>-<setkey>.json        {"format": "embcache.vector_matrix", "format_version": 2, …,
                                          "meta_sha256": the checksum of the rest of this file}
    matrix-<column>-<setkey>.f32         (N, D) float32, row-major, shards in manifest order
    matrix-<column>-<setkey>.keys.npy    (N,) the key of each row
    matrix-<column>-<setkey>.sorted.npy  (N,) the keys sorted; .order.npy: their rows
    matrix-<column>-<setkey>.norms.npy   (N,) each row's L2 norm

`setkey` hashes the manifest's shard list (file and sha256). A commit that adds shards
makes a new key; the new matrix copies the previous one's rows (its shard list is a
prefix of the new one) and appends the new shards' rows, read through Table.read_shard
and so checked against the manifest. Anything else (compaction, repair) rebuilds. The
.json is written last, lists every file's sha256 and carries a checksum of its own; a
reader checks the .json, then reads each file into memory while hashing it, and a
damaged or edited one is rebuilt from the shards.

Why read, not map: a mapped file that another process truncates kills the reader with
SIGBUS at its next touch of a lost page (issue 26), and Python cannot catch that. A
process's own copy, checked as it is read, cannot change under it: deleting, truncating
or flipping a derived file affects only the next process to load it, which rebuilds it.
The cost is the matrix in private memory (the sha256 pass read every byte already);
benchmarks/serve.py measures it. Object stores and read-only stores get the same matrix
built in memory from the shards.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
import time
import uuid
from collections import OrderedDict

import numpy as np
import pyarrow as pa

from . import manifest as mf
from .sealed import read_sealed, seal
from .errors import CorruptShard, FormatError, InvalidName, NotFound, StoreError
from .fs import TMP_PREFIX
from .lock import commit_lock
from .table import Table
from .verified import CHUNK, file_sha256, stamp
from .vector_matrix import VectorMatrix, as_matrix, key_array  # noqa: F401  (re-exported: the readers' types)

MATRIX_FORMAT = mf.Format("embcache.vector_matrix", 2)          # 2: the .json carries its own checksum (meta_sha256)
PARTS = ("keys", "sorted", "order", "norms")           # the .npy files beside the .f32
COLUMN_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")


def set_key(shards: tuple[mf.Shard, ...]) -> str:
    """What a matrix or index was derived from: the committed shard list, in order."""
    h = hashlib.sha256("\n".join(f"{s.file} {s.sha256}" for s in shards).encode())
    return h.hexdigest()[:16]


# -- building and opening ------------------------------------------------------------------
def derived_dir(t: Table) -> str:
    return f"{t.dir}/derived"


def _name(column: str, setkey: str, part: str) -> str:
    return f"matrix-{column}-{setkey}.{part}"


def _paths(t: Table, column: str, setkey: str) -> dict[str, str]:
    base = f"{derived_dir(t)}/matrix-{column}-{setkey}"
    return {"vectors": f"{base}.f32", **{p: f"{base}.{p}.npy" for p in PARTS}}


def _read_meta(t: Table, path: str) -> dict:
    """The matrix's .json, checked like a shard: format, its own checksum, what it names."""
    return read_sealed(t, path, MATRIX_FORMAT, "vector matrix")


def check_vector_column(m: mf.Manifest, column: str) -> int:
    """The width of `column`, a fixed-size list of floats in the table; a client's error otherwise.

    A wrong column is the caller's mistake (InvalidName, NotFound), never damage.
    """
    if not COLUMN_RE.match(column):
        raise InvalidName(column, "a vector column's name is 1-64 letters, digits and underscores")
    schema = m.arrow_schema()
    vectors = [] if schema is None else [f.name for f in schema if pa.types.is_fixed_size_list(f.type)
                                         and pa.types.is_floating(f.type.value_type)]
    if column not in vectors:
        if schema is None:
            raise NotFound(m.table, f"{m.table} has no committed rows yet")
        raise NotFound(m.table, f"{m.table} has no vector column {column!r} "
                                f"(vector columns: {', '.join(vectors) or 'none'})")
    return schema.field(column).type.list_size


def _read_checked(path: str, entry: dict) -> bytes:
    """The whole file, checked against its entry (bytes, sha256) as it is read; CorruptShard if not."""
    h, parts, size = hashlib.sha256(), [], 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
                parts.append(chunk)
                size += len(chunk)
    except FileNotFoundError as e:
        raise CorruptShard(path, "derived vector matrix file is missing") from e
    if size != entry["bytes"]:
        raise CorruptShard(path, f"derived vector matrix file has {size} bytes, its .json says {entry['bytes']}")
    if h.hexdigest() != entry["sha256"]:
        raise CorruptShard(path, "derived vector matrix file does not match its sha256 (bytes changed on disk)")
    return b"".join(parts)


def _open_files(t: Table, meta: dict, setkey: str, column: str) -> VectorMatrix:
    """Load a built matrix into this process's memory, each file checked as it is read."""
    paths = _paths(t, column, setkey)
    rows, dim = int(meta["rows"]), int(meta["dim"])
    data = _read_checked(paths["vectors"], meta["files"]["vectors"])
    if len(data) != rows * dim * 4:
        raise CorruptShard(paths["vectors"], f"{len(data)} bytes for {rows} × {dim} float32")
    vectors = np.frombuffer(data, np.float32).reshape(rows, dim)                       # (N, D), read-only
    arrays = {p: np.load(io.BytesIO(_read_checked(paths[p], meta["files"][p])), allow_pickle=False)
              for p in PARTS}
    if any(len(a) != rows for a in arrays.values()):
        raise CorruptShard(paths["keys"], f"derived vector matrix parts do not all have {rows} rows")
    return VectorMatrix(t.name, t.fingerprint, column, setkey, tuple(tuple(s) for s in meta["shards"]),
                        vectors, arrays["keys"], arrays["sorted"], arrays["order"], arrays["norms"],
                        files=tuple(paths.values()))


def _shard_arrays(t: Table, shard: mf.Shard, column: str) -> tuple[np.ndarray, np.ndarray]:
    rows = t.read_shard(shard, [t.key, column])                  # checked against the manifest
    return np.ascontiguousarray(as_matrix(rows[column])), key_array(rows[t.key])


def _in_memory(t: Table, m: mf.Manifest, column: str) -> VectorMatrix:
    parts = [_shard_arrays(t, s, column) for s in m.shards]
    dim = check_vector_column(m, column)
    vectors = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, dim), np.float32)
    keys = concat_keys([p[1] for p in parts])
    order = np.argsort(keys, kind="stable")
    return VectorMatrix(t.name, t.fingerprint, column, set_key(m.shards),
                        tuple((s.file, s.sha256, s.rows) for s in m.shards), vectors, keys, keys[order],
                        order, np.linalg.norm(vectors, axis=1).astype(np.float32))


def _prefix(t: Table, m: mf.Manifest, column: str) -> tuple[dict, str] | None:
    """The longest existing matrix whose shards start the current list, with its setkey."""
    best = None
    want = [(s.file, s.sha256) for s in m.shards]
    for base in t.fs.listdir(derived_dir(t)):
        if not (base.startswith(f"matrix-{column}-") and base.endswith(".json")):
            continue
        try:
            meta = _read_meta(t, f"{derived_dir(t)}/{base}")
        except StoreError:
            continue
        have = [(f, sha) for f, sha, _ in meta["shards"]]
        if have == want[:len(have)] and (best is None or len(have) > len(best[0]["shards"])):
            best = (meta, base[len(f"matrix-{column}-"):-len(".json")])
    return best


def _copy_checked(src: str, entry: dict, out) -> None:
    """Append `src` to `out`, hashing as it goes; CorruptShard (nothing trusted) if it is not `entry`."""
    h, size = hashlib.sha256(), 0
    with open(src, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            out.write(chunk)
            size += len(chunk)
    if size != entry["bytes"] or h.hexdigest() != entry["sha256"]:
        raise CorruptShard(src, "derived vector matrix file changed on disk")


def _build(t: Table, m: mf.Manifest, column: str, setkey: str) -> dict:
    """Write the matrix files for the manifest's shards (extending a prefix when there is one)."""
    fs, ddir = t.fs, derived_dir(t)
    fs.makedirs(ddir)
    try:
        return _write(t, m, column, setkey, _prefix(t, m, column))
    except (CorruptShard, KeyError, ValueError) as e:
        if isinstance(e, CorruptShard) and "/shards/" in e.path:
            raise                                               # a committed shard: not ours to fix
        return _write(t, m, column, setkey, None)              # the prefix was damaged: from the shards


def _write(t: Table, m: mf.Manifest, column: str, setkey: str, base: tuple[dict, str] | None) -> dict:
    fs, ddir = t.fs, derived_dir(t)
    tmp = {p: f"{ddir}/{TMP_PREFIX}{uuid.uuid4().hex}-{os.path.basename(path)}"
           for p, path in _paths(t, column, setkey).items()}
    keys, norms, done, dim = [], [], 0, check_vector_column(m, column)
    try:
        with open(tmp["vectors"], "wb") as out:
            if base is not None:                            # earlier rows: copied, checked on the way
                meta, old = base
                old_paths = _paths(t, column, old)
                _copy_checked(old_paths["vectors"], meta["files"]["vectors"], out)
                for part, into in (("keys", keys), ("norms", norms)):
                    into.append(np.load(io.BytesIO(_read_checked(old_paths[part], meta["files"][part])),
                                        allow_pickle=False))
                done = len(meta["shards"])
            for s in m.shards[done:]:
                vectors, k = _shard_arrays(t, s, column)
                out.write(vectors.tobytes())
                keys.append(k)
                norms.append(np.linalg.norm(vectors, axis=1).astype(np.float32))
            out.flush()
            os.fsync(out.fileno())
        all_keys = concat_keys(keys)
        order = np.argsort(all_keys, kind="stable")
        for part, arr in (("keys", all_keys), ("sorted", all_keys[order]), ("order", order.astype(np.int64)),
                          ("norms", np.concatenate(norms) if norms else np.zeros(0, np.float32))):
            np.save(tmp[part], arr, allow_pickle=False)
        files = {}
        for part, path in tmp.items():
            size, sha = file_sha256(fs, path)
            files[part] = {"file": os.path.basename(_paths(t, column, setkey)[part]), "bytes": size, "sha256": sha}
        for part, path in tmp.items():
            os.replace(path, _paths(t, column, setkey)[part])
    finally:
        for path in tmp.values():
            if os.path.exists(path):
                os.unlink(path)
    meta = {**mf.header(MATRIX_FORMAT), "table": t.name, "fingerprint": t.fingerprint, "column": column,
            "key": m.key, "rows": int(sum(len(k) for k in keys)), "dim": dim, "dtype": "float32",
            "shards": [[s.file, s.sha256, s.rows] for s in m.shards], "files": files, "created": mf.utcnow()}
    meta = seal(meta)
    fs.write_atomic(f"{ddir}/{_name(column, setkey, 'json')}", mf.dump(meta))
    _remove_stale(t, column, setkey)
    return meta


def concat_keys(keys: list[np.ndarray]) -> np.ndarray:
    """Key arrays of shards as one array; fixed-width bytes keys widened to the widest."""
    keys = [k for k in keys if len(k)]
    if not keys:
        return np.zeros(0, "S1")
    if keys[0].dtype.kind == "S":
        width = max(k.dtype.itemsize for k in keys)
        return np.concatenate([k.astype(f"S{width}") for k in keys])
    return np.concatenate(keys)


def _remove_stale(t: Table, column: str, keep: str) -> None:
    """Older shard sets' matrices (readers hold their own copies: removing is safe)."""
    for base in t.fs.listdir(derived_dir(t)):
        if base.startswith(f"matrix-{column}-") and not base.startswith(f"matrix-{column}-{keep}."):
            t.fs.delete(f"{derived_dir(t)}/{base}")


# What a damaged or absent derived matrix raises while it is opened: rebuild it from the shards.
_DAMAGED = (NotFound, CorruptShard, FormatError, KeyError, ValueError, TypeError)


def open_matrix(t: Table, column: str = "vector", m: mf.Manifest | None = None) -> VectorMatrix:
    """The table's matrix for its current shard set: loaded if built, else built (or extended) first.

    InvalidName / NotFound for a column that is not one of the table's vector columns.
    """
    m = m or t.manifest()
    check_vector_column(m, column)
    setkey = set_key(m.shards)
    if not t.fs.local:
        return _in_memory(t, m, column)
    meta_path = f"{derived_dir(t)}/{_name(column, setkey, 'json')}"
    try:
        return _open_files(t, _read_meta(t, meta_path), setkey, column)
    except _DAMAGED:
        pass                                        # absent, or damaged: rebuild from the shards
    try:
        with commit_lock(t.fs, f"{derived_dir(t)}/.lock"):
            try:
                return _open_files(t, _read_meta(t, meta_path), setkey, column)   # another process built it
            except _DAMAGED:
                meta = _build(t, m, column, setkey)
            return _open_files(t, meta, setkey, column)
    except CorruptShard as e:
        if "/shards/" in e.path:
            raise                                   # a damaged committed shard: an error on every path
        return _in_memory(t, m, column)             # the files changed again under us: from the shards
    except (OSError, StoreError):      # e.g. a read-only store: the same matrix, in memory (which
        return _in_memory(t, m, column)  # raises again any error that is not about writing)


class WarmMatrices:
    """Each table's matrix, loaded once per shard set and reloaded only when its manifest changes.

    One per `embcache.Store` (the store's read path owns it; nothing here is process-wide).
    The manifest's stat is re-checked at most every `recheck_s` seconds: 0 (every call) by
    default; `embcache serve`, answering thousands of lookups a second, sets 0.05 and sees a
    commit that late. A loaded matrix is this process's own copy: derived files changed on
    disk afterwards do not change it (the next process to load them checks and rebuilds).
    """

    def __init__(self, recheck_s: float = 0.0, max_entries: int = 16):
        self.recheck_s = recheck_s
        self.max_entries = max_entries
        self._cache: OrderedDict[tuple, tuple] = OrderedDict()     # key -> (manifest stat, matrix, checked at)
        self._lock = threading.Lock()

    def get(self, t: Table, column: str = "vector") -> VectorMatrix:
        key = (t.fs.url, t.name, t.fingerprint, column)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and time.monotonic() - hit[2] < self.recheck_s:
            return hit[1]
        now = stamp(t.fs, t.manifest_path) if t.fs.local else None
        if hit is not None and now is not None and hit[0] == now:
            matrix = hit[1]
        else:
            m = t.manifest()
            matrix = hit[1] if hit is not None and hit[1].setkey == set_key(m.shards) else open_matrix(t, column, m)
        with self._lock:
            self._cache[key] = (now, matrix, time.monotonic())
            self._cache.move_to_end(key)
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        return matrix

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()
