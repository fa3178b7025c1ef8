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

import uuid
from collections.abc import Iterator, Sequence

import numpy as np

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import manifest as mf
from .errors import CorruptShard, NotFound, SchemaMismatch, StoreError
from .fingerprint import fingerprint_of
from .fs import StoreFS, check_fingerprint, check_name
from .lock import commit_lock
from .shards import choose_codecs, decode_shard, encode_shard
from .keyindex import KeyIndex, KeyIndexes, has_nul, key_array
from .keyset import read_distinct_keys, read_key_column
from .verified import VERIFIED

CURRENT_FORMAT = mf.Format("embcache.current", 1)   # tables/<name>/current.json


KEY_INDEXES = KeyIndexes()   # per process: each table's sorted keys and where they live (storage/keyindex.py)


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
            index = self.key_index(m)                          # O(k log N): no scan of committed keys
            distinct = pc.unique(rows[self.key])
            seen = pa.array(index.contains(key_array(distinct)))
            if pc.any(seen).as_py():
                self.fs.delete(self.shard_path(file))
                rows = rows.filter(pc.invert(pc.is_in(rows[self.key], value_set=distinct.filter(seen))))
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
            KEY_INDEXES.put(self._cache_key, index.with_shard(file, sha, key_array(rows[self.key])))
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
        if has_nul(rows[self.key]):
            raise SchemaMismatch(self.dir, f"key column {self.key!r} has a key with a NUL character")
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
        """The shard's key column, in row order (the key column alone: storage/keyset.py)."""
        return read_key_column(self.fs, self.shard_path(shard), self.key, shard.bytes)

    @property
    def _cache_key(self) -> str:
        return self.fs.url + self.dir[len(self.fs.root):]

    def key_index(self, m: mf.Manifest | None = None) -> KeyIndex:
        """Where each committed key lives: built once per process from the shards' key columns,
        then extended by the shards each commit adds (storage/keyindex.py)."""
        m = m or self.manifest()
        def read_keys(i: int) -> tuple[np.ndarray, np.ndarray]:
            keys, rows = read_distinct_keys(self.fs, self.shard_path(m.shards[i]), self.key, m.shards[i].bytes)
            return key_array(keys), rows

        return KEY_INDEXES.for_shards(self._cache_key, tuple((s.file, s.sha256) for s in m.shards), read_keys)

    def keys(self) -> pa.Array:
        """Every committed key, once, sorted."""
        m = self.manifest()
        found = self.key_index(m).keys()
        schema = m.arrow_schema()
        key_type = schema.field(m.key).type if schema else pa.string()
        if found.dtype.kind == "i":
            return pa.array(found, key_type)
        return pa.array([k.decode() for k in found.tolist()], key_type)

    def missing(self, keys: Sequence | pa.Array) -> pa.Array:
        """The subset of `keys` with no committed rows, in the given order: the work to do.

        O(k log N) for k keys against N committed ones, once the process knows the table."""
        keys = keys if isinstance(keys, (pa.Array, pa.ChunkedArray)) else pa.array(list(keys))
        index = self.key_index()
        if len(index) == 0 or len(keys) == 0:
            return keys
        return keys.filter(pa.array(~index.contains(key_array(keys))))

    def locate(self, keys: Sequence | pa.Array, m: mf.Manifest | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(shard position in the manifest, row) of each key; (-1, 0) where it is not committed."""
        keys = keys if isinstance(keys, (pa.Array, pa.ChunkedArray)) else pa.array(list(keys))
        return self.key_index(m).find(key_array(keys))

    def read_rows(self, shard: mf.Shard, rows: np.ndarray, columns: Sequence[str] | None = None) -> pa.Table:
        """Rows `rows` (positions, in that order) of a committed shard, reading only their row groups.

        A local shard is hashed once per process (storage/verified.py: then trusted while its
        stat is unchanged); then only the Parquet row groups that hold `rows` are decoded.
        Elsewhere the shard is read whole, checked, and the rows taken.
        """
        path = self.shard_path(shard)
        cols = list(columns) if columns else None
        if not self.fs.local:
            return self.read_shard(shard, cols).take(pa.array(rows))
        VERIFIED.check(self.fs, path, shard.bytes, shard.sha256)
        try:
            parquet = pq.ParquetFile(path)
            sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
            starts = np.concatenate([[0], np.cumsum(sizes)])                     # (G+1,)
            group = np.searchsorted(starts, rows, side="right") - 1              # (n,) row group of each row
            wanted = np.unique(group)
            table = parquet.read_row_groups(wanted.tolist(), columns=cols, use_threads=False)
        except (pa.ArrowException, OSError) as e:
            raise CorruptShard(path, f"not a readable Parquet file: {e}") from e
        base = np.concatenate([[0], np.cumsum(np.asarray(sizes)[wanted])])[np.searchsorted(wanted, group)]
        return table.take(pa.array(rows - starts[group] + base))

    def lookup(self, keys: Sequence | pa.Array, columns: Sequence[str] | None = None,
               missing: str = "error") -> pa.Table:
        """Rows for `keys`, in that order (one row per key; keys must be unique per row).

        Reads only the shards, and within them the row groups, that hold a requested key
        (Table.read_rows). `missing`: "error" raises NotFound naming the absent keys, "skip"
        leaves them out.
        """
        keys = keys if isinstance(keys, (pa.Array, pa.ChunkedArray)) else pa.array(list(keys))
        m = self.manifest()
        cols = None if columns is None else list(dict.fromkeys([m.key, *columns]))
        shard, row = self.locate(keys, m)
        absent = np.flatnonzero(shard < 0)
        if len(absent):
            if missing == "error":
                self._check_key_sources(m)   # "absent" must not come from a damaged shard's key column
                names = keys.take(pa.array(absent[:5])).to_pylist()
                raise NotFound(self.dir, f"{len(absent)} key(s) not in {self.name}: {', '.join(map(str, names))}"
                                         f"{' …' if len(absent) > 5 else ''}")
        present = np.flatnonzero(shard >= 0)
        order = present[np.argsort(shard[present], kind="stable")]          # grouped by shard, keys' order within
        parts, starts = [], np.flatnonzero(np.r_[True, np.diff(shard[order]) != 0]) if len(order) else []
        for a, b in zip(starts, list(starts[1:]) + [len(order)]):
            picked = order[a:b]
            parts.append(self.read_rows(m.shards[shard[picked[0]]], row[picked], cols))
        found = pa.concat_tables(parts) if parts else self._empty(m, cols, keys.type)
        out = found.take(pa.array(np.argsort(order, kind="stable")))       # back to the keys' order
        return out if columns is None else out.select(list(columns))

    def _check_key_sources(self, m: mf.Manifest) -> None:
        """Every shard's bytes against the manifest (once per process each: storage/verified.py),
        so that a key reported absent was not lost to damage; CorruptShard names the shard."""
        for shard in m.shards:
            if self.fs.local:
                VERIFIED.check(self.fs, self.shard_path(shard), shard.bytes, shard.sha256)
            else:
                self.read_shard(shard, [m.key])

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
