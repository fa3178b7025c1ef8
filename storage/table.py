"""One feature table under one fingerprint: shards committed through a manifest.

Layout under the store root:

    tables/<name>/current.json                 which fingerprint `<name>` means by default
    tables/<name>/<fingerprint>/spec.json      what the fingerprint was computed from
    tables/<name>/<fingerprint>/manifest.json  the committed shards (the only truth)
    tables/<name>/<fingerprint>/shards/part-<uuid>.parquet

Rows are keyed by content (e.g. `text_sha`): all rows of a key live in one shard and
a key is committed at most once, so a document is never computed twice per fingerprint,
whichever writer got there first.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from . import manifest as mf
from .errors import CorruptShard, NotFound, SchemaMismatch, StoreError
from .fingerprint import fingerprint_of
from .fs import StoreFS, check_fingerprint, check_name
from .lock import commit_lock
from .shards import choose_codecs, decode_shard, encode_shard
from .keyset import read_key_column
from .verified import VERIFIED

CURRENT_FORMAT = ("embcache.current", 1)   # tables/<name>/current.json


class ShardKeys:
    """Process-wide cache: a shard's key column, by (file path, sha256). Shards are immutable,
    so an entry never goes stale; flows make a new Table handle per task, and without this
    every task would re-read (and re-hash) every shard of its input tables to plan a lookup."""

    def __init__(self, max_shards: int = 1024):
        self.max_shards = max_shards
        self._cache: OrderedDict[tuple[str, str], pa.Array] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str, sha256: str) -> pa.Array | None:
        with self._lock:
            keys = self._cache.get((path, sha256))
            if keys is not None:
                self._cache.move_to_end((path, sha256))
            return keys

    def put(self, path: str, sha256: str, keys: pa.Array) -> None:
        with self._lock:
            self._cache[(path, sha256)] = keys
            while len(self._cache) > self.max_shards:
                self._cache.popitem(last=False)


SHARD_KEYS = ShardKeys()            # each shard's key column in row order (lookups)
SHARD_DISTINCT_KEYS = ShardKeys()   # each shard's distinct keys (what is committed; many rows may share a key)


class Table:
    """Handle on tables/<name>/<fingerprint>; cheap to create, reads files lazily."""

    def __init__(self, fs: StoreFS, name: str, fingerprint: str, key: str = "key",
                 spec: dict | None = None, meta: dict | None = None):
        self.fs = fs
        self.name = check_name("table", name)
        self.fingerprint = check_fingerprint(fingerprint)
        self.key = key
        self.spec = spec
        self.meta = meta
        self.dir = fs.path("tables", name, fingerprint)

    def __repr__(self) -> str:
        return f"Table({self.name!r}, {self.fingerprint[:12]}…)"

    # -- manifest --------------------------------------------------------
    @property
    def manifest_path(self) -> str:
        return f"{self.dir}/manifest.json"

    def exists(self) -> bool:
        return self.fs.exists(self.manifest_path)

    def manifest(self) -> mf.Manifest:
        """The last committed manifest (an empty one if nothing was committed yet)."""
        if not self.fs.exists(self.manifest_path):
            return mf.Manifest(table=self.name, fingerprint=self.fingerprint, key=self.key)
        m = mf.Manifest.from_json(self.manifest_path, self.fs.read_bytes(self.manifest_path))
        if m.fingerprint != self.fingerprint or m.table != self.name:
            raise StoreError(self.manifest_path, f"manifest names {m.table}/{m.fingerprint[:12]}, "
                                                 f"expected {self.name}/{self.fingerprint[:12]}")
        self.key = m.key
        return m

    def saved_spec(self) -> dict:
        """spec.json as committed: {"spec": what was hashed, "meta": how to reproduce, …}."""
        path = f"{self.dir}/spec.json"
        return mf.load(path, self.fs.read_bytes(path), mf.SPEC_FORMAT, "table spec")

    def shard_path(self, shard: mf.Shard | str) -> str:
        return f"{self.dir}/shards/{shard if isinstance(shard, str) else shard.file}"

    # -- writing ---------------------------------------------------------
    def create(self) -> mf.Manifest:
        """Commit an empty table (a stage that produced no rows still leaves its mark)."""
        with commit_lock(self.fs, f"{self.dir}/.lock"):
            m = self.manifest()
            if not self.exists():
                self._commit(m)
            return m

    def write(self, rows: pa.Table) -> mf.Shard | None:
        """Commit `rows` as one shard; rows whose key is already committed are dropped.

        Returns the committed shard, or None when every key was already there.
        """
        rows = self._check_rows(rows)
        if rows.num_rows == 0:
            self.create()
            return None
        m = self.manifest()
        codecs = m.codecs or choose_codecs(rows)
        data, sha = encode_shard(rows, codecs)
        file = f"part-{uuid.uuid4().hex}.parquet"
        self.fs.write_atomic(self.shard_path(file), data)   # not yet committed: an orphan until listed
        with commit_lock(self.fs, f"{self.dir}/.lock"):
            m = self.manifest()
            if m.schema is not None:
                self._check_schema(m, rows.schema)
            distinct = pc.unique(rows[self.key])
            seen = pc.is_in(distinct, value_set=self._committed_keys(m))
            if pc.any(seen).as_py():
                self.fs.delete(self.shard_path(file))
                rows = rows.filter(pc.invert(pc.is_in(rows[self.key], value_set=distinct.filter(seen))))
                distinct = distinct.filter(pc.invert(seen))
                if rows.num_rows == 0:
                    return None
                data, sha = encode_shard(rows, m.codecs or codecs)
                file = f"part-{uuid.uuid4().hex}.parquet"
                self.fs.write_atomic(self.shard_path(file), data)
            shard = mf.Shard(file=file, rows=rows.num_rows, bytes=len(data), sha256=sha,
                             created=mf.utcnow())
            new = mf.Manifest(table=self.name, fingerprint=self.fingerprint, key=self.key,
                              generation=m.generation + 1,
                              schema=m.schema or mf.schema_to_text(rows.schema),
                              codecs=m.codecs or codecs, shards=m.shards + (shard,))
            self._commit(new)
            SHARD_KEYS.put(self.shard_path(shard), shard.sha256, rows[self.key].combine_chunks())
            SHARD_DISTINCT_KEYS.put(self.shard_path(shard), shard.sha256, distinct)
            return shard

    def finish_pointer(self) -> None:
        """Point the name at this table if its last commit was cut before its pointer.

        A commit replaces the manifest, then the pointer: a writer killed between the two
        leaves a committed table that its name does not resolve to (no pointer yet, or one
        still naming the fingerprint committed before), and a re-run that finds every key
        committed writes nothing, so nothing else would ever repair it (and gc would remove
        a table that only the pointer references, such as `rejected`). The pointer is
        behind when it is missing, or names another fingerprint and is older than this
        table's manifest: every commit writes its pointer after its manifest.
        """
        if not self._pointer_behind():
            return
        with commit_lock(self.fs, f"{self.dir}/.lock"):
            if self._pointer_behind():
                self._write_pointer()

    def _pointer_behind(self) -> bool:
        pointer = self.fs.path("tables", self.name, "current.json")
        if not self.exists():
            return False
        if not self.fs.exists(pointer):
            return True
        if read_current(self.fs, self.name) == self.fingerprint:
            return False
        return self.fs.mtime(self.manifest_path) > self.fs.mtime(pointer)

    def _write_pointer(self) -> None:
        self.fs.write_atomic(self.fs.path("tables", self.name, "current.json"),
                             mf.dump({**mf.header(CURRENT_FORMAT), "fingerprint": self.fingerprint,
                                      "updated": mf.utcnow()}))

    def _check_rows(self, rows: pa.Table) -> pa.Table:
        if self.key not in rows.column_names:
            raise SchemaMismatch(self.dir, f"rows have no key column {self.key!r} "
                                           f"(columns: {', '.join(rows.column_names)})")
        if rows[self.key].null_count:
            raise SchemaMismatch(self.dir, f"key column {self.key!r} has {rows[self.key].null_count} nulls")
        return rows.replace_schema_metadata(None)

    def _check_schema(self, m: mf.Manifest, schema: pa.Schema) -> None:
        fixed = m.arrow_schema()
        if not fixed.equals(schema):
            raise SchemaMismatch(self.dir, f"rows have schema {schema} but the table was created with {fixed}")

    def _commit(self, m: mf.Manifest) -> None:
        """Write spec (first time), manifest, and the table's current pointer. Lock held."""
        spec_path = f"{self.dir}/spec.json"
        if self.spec is not None and not self.fs.exists(spec_path):
            if fingerprint_of(self.spec) != self.fingerprint:
                raise StoreError(spec_path, "spec does not hash to the table's fingerprint")
            self.fs.write_atomic(spec_path, mf.spec_json(self.name, self.fingerprint, self.key, self.spec,
                                                         self.meta))
        self.fs.write_atomic(self.manifest_path, m.to_json())
        self._write_pointer()

    # -- reading ---------------------------------------------------------
    def read_shard(self, shard: mf.Shard, columns: Sequence[str] | None = None, filters=None) -> pa.Table:
        path = self.shard_path(shard)
        try:
            data = self.fs.read_bytes(path)
        except NotFound as e:
            raise CorruptShard(path, "committed shard is missing: the manifest lists it, the file does not exist") from e
        rows = decode_shard(path, data, shard.bytes, shard.sha256, list(columns) if columns else None, filters)
        VERIFIED.note(self.fs, path, shard.bytes, shard.sha256)   # its bytes matched: the warm path may trust it
        return rows

    def iter_shards(self, columns: Sequence[str] | None = None, filters=None) -> Iterator[pa.Table]:
        """Committed shards one at a time, so memory stays at one shard; `filters` as in decode_shard."""
        for shard in self.manifest().shards:
            yield self.read_shard(shard, columns, filters)

    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        m = self.manifest()
        parts = [self.read_shard(s, columns) for s in m.shards]
        if parts:
            return pa.concat_tables(parts)
        schema = m.arrow_schema()
        if schema is None:
            return pa.table({})
        return schema.empty_table().select(list(columns)) if columns else schema.empty_table()

    def shard_keys(self, shard: mf.Shard) -> pa.Array:
        """The shard's key column, in row order (read once per process, see ShardKeys)."""
        path = self.shard_path(shard)
        keys = SHARD_KEYS.get(path, shard.sha256)
        if keys is None:
            keys = self.read_shard(shard, [self.key])[self.key].combine_chunks()
            SHARD_KEYS.put(path, shard.sha256, keys)
        return keys

    def distinct_shard_keys(self, shard: mf.Shard) -> pa.Array:
        """The shard's keys, each once (cached like shard_keys)."""
        path = self.shard_path(shard)
        keys = SHARD_DISTINCT_KEYS.get(path, shard.sha256)
        if keys is None:       # planning reads the key column only, no vectors (storage/keyset.py)
            cached = SHARD_KEYS.get(path, shard.sha256)
            keys = pc.unique(cached if cached is not None else read_key_column(self.fs, path, self.key, shard.bytes))
            SHARD_DISTINCT_KEYS.put(path, shard.sha256, keys)
        return keys

    def _committed_keys(self, m: mf.Manifest) -> pa.Array:
        """Every committed key, once (a key is committed in one shard only)."""
        arrays = [self.distinct_shard_keys(s) for s in m.shards]
        if not arrays:
            schema = m.arrow_schema()
            return pa.array([], type=schema.field(m.key).type if schema else pa.string())
        return pa.concat_arrays(arrays)

    def keys(self) -> pa.Array:
        """Every committed key (distinct: a key is committed once)."""
        return self._committed_keys(self.manifest())

    def missing(self, keys: Sequence | pa.Array) -> pa.Array:
        """The subset of `keys` with no committed rows, in the given order: the work to do."""
        keys = keys if isinstance(keys, (pa.Array, pa.ChunkedArray)) else pa.array(list(keys))
        have = self._committed_keys(self.manifest())
        if len(have) == 0:
            return keys
        return keys.filter(pc.invert(pc.is_in(keys, value_set=have.cast(keys.type))))

    def lookup(self, keys: Sequence | pa.Array, columns: Sequence[str] | None = None,
               missing: str = "error") -> pa.Table:
        """Rows for `keys`, in that order (one row per key; keys must be unique per row).

        Reads only the shards that hold a requested key. `missing`: "error" raises
        NotFound naming the absent keys, "skip" leaves them out.
        """
        keys = keys if isinstance(keys, (pa.Array, pa.ChunkedArray)) else pa.array(list(keys))
        m = self.manifest()
        cols = None if columns is None else list(dict.fromkeys([m.key, *columns]))
        parts = []
        for s in m.shards:
            shard_keys = self.shard_keys(s)
            hit = pc.is_in(shard_keys, value_set=keys.cast(shard_keys.type))
            if pc.any(hit).as_py():
                parts.append(self.read_shard(s, cols).filter(hit))
        found = pa.concat_tables(parts) if parts else self._empty(m, cols, keys.type)
        pos = pc.index_in(keys, value_set=found[m.key])
        if pos.null_count:
            absent = keys.filter(pc.is_null(pos))
            if missing == "error":
                shown = ", ".join(map(str, absent[:5].to_pylist()))
                raise NotFound(self.dir, f"{len(absent)} key(s) not in {self.name}: {shown}"
                                         f"{' …' if len(absent) > 5 else ''}")
            pos = pos.drop_null()
        out = found.take(pos)
        return out if columns is None else out.select(list(columns))


    @staticmethod
    def _empty(m: mf.Manifest, columns: list[str] | None, key_type: pa.DataType) -> pa.Table:
        schema = m.arrow_schema()
        if schema is None:                       # nothing committed yet: only the key is known
            return pa.table({m.key: pa.array([], key_type)})
        return schema.empty_table().select(columns) if columns else schema.empty_table()


def read_current(fs: StoreFS, name: str) -> str | None:
    path = fs.path("tables", check_name("table", name), "current.json")
    if not fs.exists(path):
        return None
    return mf.load(path, fs.read_bytes(path), CURRENT_FORMAT, "current pointer")["fingerprint"]
