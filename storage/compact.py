"""Shard compaction: many small shards of a table merged into few large ones, atomically.

Incremental runs add a shard per task, so a table fed daily ends up with thousands of
small shards: a manifest that grows by one entry per shard, and reads that open every
file. Compaction merges runs of consecutive small shards (in manifest order, so rows keep
their order) into shards of up to `CompactConfig.target_bytes` / `max_rows`:

- rows are read verified and written again with the table's codecs: keys and values
  bit-identical, each key still in one shard;
- the new files are written first, then the manifest that lists them instead of the old
  ones replaces the old manifest under the table's lock (`os.replace`): a reader sees the
  old shard set or the new one, never both or neither; a commit that landed meanwhile is
  kept (only shards still listed are swapped);
- the old files stay on disk until `gc` (after its grace period), so a reader that loaded
  the old manifest can still read them.

    >>> compact(store.open("bert_features"))                        # doctest: +SKIP
    Compaction(table='bert_features', before=2000, after=20, merged=2000, bytes=...)
"""

from __future__ import annotations

from dataclasses import dataclass

import uuid

from . import manifest as mf
from .lock import commit_lock
from .shards import ShardWriter
from .table import Table


@dataclass(frozen=True)
class CompactConfig:
    """When a shard counts as small, and how large merged shards get."""
    target_bytes: int = 64 * 2**20   # a merged shard stops growing past this many bytes of Parquet
    max_rows: int = 1_000_000        # ... or this many rows
    small_fraction: float = 0.25     # a shard under small_fraction * target_bytes (and max_rows) is small
    min_small: int = 16              # automatic compaction (`maybe_compact`) waits for this many small shards

    def __post_init__(self):
        if self.target_bytes < 1 or self.max_rows < 1 or not 0 < self.small_fraction <= 1 or self.min_small < 2:
            raise ValueError(f"bad CompactConfig {self}: sizes must be positive, small_fraction in (0, 1], "
                             "min_small at least 2")

    def is_small(self, shard: mf.Shard) -> bool:
        return (shard.bytes < self.small_fraction * self.target_bytes
                and shard.rows < self.small_fraction * self.max_rows)


@dataclass(frozen=True)
class Compaction:
    table: str
    fingerprint: str
    before: int          # shards listed before
    after: int           # shards listed after
    merged: int          # small shards replaced
    bytes: int           # Parquet bytes of the shards written


def plan_groups(shards: tuple[mf.Shard, ...], config: CompactConfig) -> list[list[int]]:
    """Runs of consecutive small shards to merge (indices into `shards`), each within the targets;
    a run of one shard is left alone.

    >>> s = lambda rows: mf.Shard("f", rows, rows * 10, "", "")
    >>> plan_groups((s(5), s(5), s(500), s(5), s(5), s(5)), CompactConfig(target_bytes=200, max_rows=10**6))
    [[0, 1], [3, 4, 5]]
    """
    groups, run, rows, size = [], [], 0, 0
    for i, shard in enumerate(shards):
        fits = rows + shard.rows <= config.max_rows and size + shard.bytes <= config.target_bytes
        if not config.is_small(shard) or not fits:
            if len(run) > 1:
                groups.append(run)
            run, rows, size = [], 0, 0
            if not config.is_small(shard):
                continue
        run.append(i)
        rows, size = rows + shard.rows, size + shard.bytes
    if len(run) > 1:
        groups.append(run)
    return groups


@dataclass(frozen=True)
class Prepared:
    """Merged shards written (not yet listed) and the listed shards they replace."""
    before: int                    # shards listed when prepared
    merged: dict                   # first replaced file -> the mf.Shard replacing its group
    replaced: frozenset            # every replaced file


def prepare(table: Table, config: CompactConfig = CompactConfig()) -> Prepared:
    """Write the merged shards of the table's runs of small shards; lists nothing yet."""
    m = table.manifest()
    merged: dict[str, mf.Shard] = {}
    replaced: set[str] = set()
    for group in plan_groups(m.shards, config):
        old = [m.shards[i] for i in group]
        file = f"part-{uuid.uuid4().hex}.parquet"
        with table.fs.atomic_writer(table.shard_path(file)) as sink:   # an orphan until the manifest lists it
            writer = ShardWriter(m.arrow_schema(), m.codecs, sink)     # a shard decoded at a time: bounded memory
            for shard in old:
                writer.write(table.read_shard(shard))
            size, sha = writer.finish()
        merged[old[0].file] = mf.Shard(file=file, rows=writer.rows, bytes=size, sha256=sha,
                                       created=mf.utcnow())
        replaced.update(s.file for s in old)
    return Prepared(len(m.shards), merged, frozenset(replaced))


def swap(table: Table, prepared: Prepared) -> Compaction:
    """List the merged shards instead of the ones they replace, in one manifest replace under
    the table's lock; shards committed since `prepare` stay listed."""
    if not prepared.merged:
        return Compaction(table.name, table.fingerprint, prepared.before, prepared.before, 0, 0)
    with commit_lock(table.fs, f"{table.dir}/.lock"):
        now = table.manifest()
        if not prepared.replaced <= {s.file for s in now.shards}:   # another compaction got there first
            for shard in prepared.merged.values():
                table.fs.delete(table.shard_path(shard))
            return Compaction(table.name, table.fingerprint, len(now.shards), len(now.shards), 0, 0)
        shards = tuple(prepared.merged.get(s.file, s) for s in now.shards
                       if s.file not in prepared.replaced or s.file in prepared.merged)
        new = mf.Manifest(table=now.table, fingerprint=now.fingerprint, key=now.key,
                          generation=now.generation + 1, schema=now.schema, codecs=now.codecs, shards=shards)
        table.fs.write_atomic(table.manifest_path, new.to_json())    # the swap: old set or new set
    return Compaction(table.name, table.fingerprint, len(now.shards), len(shards), len(prepared.replaced),
                      sum(s.bytes for s in prepared.merged.values()))


def compact(table: Table, config: CompactConfig = CompactConfig()) -> Compaction:
    """Merge the table's runs of small shards (see the module docstring); returns what changed."""
    return swap(table, prepare(table, config))


def maybe_compact(table: Table, config: CompactConfig = CompactConfig()) -> Compaction | None:
    """compact() when at least `config.min_small` small shards piled up; else None (reads the manifest only)."""
    if not table.exists():
        return None
    if sum(config.is_small(s) for s in table.manifest().shards) < config.min_small:
        return None
    return compact(table, config)
