"""`embcache compact [TABLE]`: merge small shards into large ones (storage/compact.py). No Prefect."""

from __future__ import annotations

import typer

from ..storage.compact import CompactConfig
from .app import app, out, store_of
from .options import option


@app.command()
def compact(ctx: typer.Context,
            table: str = typer.Argument(None, help="Table name (default: every table, every fingerprint)."),
            fingerprint: str = typer.Option(None, help="Only this fingerprint of TABLE (8+ hex digits; "
                                                       "default: every one)."),
            target_bytes: int = option(CompactConfig, "target_bytes",
                                       help="Merged shards stop growing past this many bytes."),
            max_rows: int = option(CompactConfig, "max_rows", help="... or this many rows.")):
    """Merge runs of small shards into large ones, atomically; the old files stay until `gc`.

    Keys and values are unchanged, rows keep their order, and a reader sees the old or
    the new shard set, never both. `embcache run` also compacts a corpus's tables when
    small shards pile up.

    Example: `embcache compact bert_features`  ·  `embcache compact` (every table)
    """
    from ..storage.compact import compact as run_compact
    store = store_of(ctx)
    config = CompactConfig(target_bytes=target_bytes, max_rows=max_rows)
    if fingerprint and not table:
        raise typer.BadParameter("--fingerprint needs a TABLE")
    names = [table] if table else store.table_names()
    total = 0
    for name in names:
        fps = [store.resolve(name, fingerprint)] if fingerprint else store.fingerprints(name)
        if table and not fps:
            store.open(name)                   # NotFound: one line, exit 4
        for fp in fps:
            t = store.open(name, fp)
            r = run_compact(t, config)
            total += r.merged
            if r.merged:
                out.print(f"{name}@{fp[:12]}: {r.before:,} shards -> {r.after:,} "
                          f"({r.merged:,} merged into {r.bytes:,} bytes)", highlight=False)
    out.print(f"compacted {total:,} shards" if total else "nothing to compact: no runs of small shards")
