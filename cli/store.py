"""Store commands: status, verify, gc. They never import Prefect."""

from __future__ import annotations

import json

import typer
from rich.table import Table as RichTable

from .app import EXIT_VERIFY_FAILED, app, err, out, store_of


@app.command()
def status(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Tables (every fingerprint) and corpora in the store.

    Example: `embcache status --json | jq '.tables[] | select(.current)'`
    """
    s = store_of(ctx).status()
    if as_json:
        print(json.dumps(s, indent=1))
        return
    out.print(f"store [bold]{s['store']}[/bold]")
    t = RichTable("table", "fingerprint", "current", "stage", "rows", "shards", "bytes")
    for r in s["tables"]:
        t.add_row(r["name"], r["fingerprint"][:12], "*" if r["current"] else "", r["stage"] or "",
                  f"{r['rows']:,}", str(r["shards"]), f"{r['bytes']:,}")
    out.print(t)
    c = RichTable("corpus", "snapshot", "documents", "created", "tables")
    for r in s["corpora"]:
        c.add_row(r["name"], str(r["current_snapshot"]), f"{r['documents']:,}", r["created"] or "",
                  ", ".join(sorted(r["tables"])))
    out.print(c)


@app.command()
def verify(ctx: typer.Context):
    """Recompute every shard's checksum and row count; name every bad file (exit 1 if any).

    Example: `embcache verify --store ./embcache-store`
    """
    from ..storage.maintenance import verify as run_verify
    report = run_verify(store_of(ctx))
    for path, reason in report.bad:
        err.print(f"[red]BAD[/red] {path}: {reason}", highlight=False, soft_wrap=True)
    out.print(f"checked {report.checked} files: {len(report.bad)} bad")
    if report.bad:
        raise typer.Exit(EXIT_VERIFY_FAILED)


@app.command()
def gc(ctx: typer.Context,
       grace: float = typer.Option(3600.0, help="Leave files younger than this many seconds "
                                                "(a commit may be in flight)."),
       dry_run: bool = typer.Option(False, "--dry-run", help="List what would go; remove nothing."),
       keep_unreferenced: bool = typer.Option(False, "--keep-unreferenced",
                                              help="Remove only orphan files, keep every table.")):
    """Remove orphan temp files and shards, and tables nothing references.

    A table is referenced when it is its name's current fingerprint, linked from a
    corpus, or an input of a referenced table.

    Example: `embcache gc --grace 0 --dry-run`
    """
    from ..storage.maintenance import gc as run_gc
    report = run_gc(store_of(ctx), grace_seconds=grace, dry_run=dry_run, unreferenced_tables=not keep_unreferenced)
    verb = "would remove" if dry_run else "removed"
    for p in report.removed:
        out.print(f"{verb} {p}", highlight=False)
    out.print(f"{verb} {len(report.removed)} paths, {report.freed_bytes:,} bytes"
              + (f"; kept {report.kept_young} younger than {grace:g} s" if report.kept_young else ""))
